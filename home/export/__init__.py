"""The records as Hive-partitioned Parquet, exactly once and incrementally (``edgepack export``):
``runs`` drives a run, ``claims`` keeps its bookkeeping in the database, ``parquet`` writes
the files."""
