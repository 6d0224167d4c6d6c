"""Where records are kept: the SQLite file (the default, ``sqlite``) or a PostgreSQL database
(``postgres``), chosen by ``backends``; ``migrations`` versions the schema both share."""
