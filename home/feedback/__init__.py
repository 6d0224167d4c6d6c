"""Ground truth at home: labels for records (``routes``: ``POST /v1/feedback``; ``csv_import``),
the rules for them (``labels``), stored once per (device, record id) on either store
(``storage``, ``sqlite``, ``postgres``), and joined with records (``joined``) into labeled
data (``labeled``) and live scores (``scores``)."""
