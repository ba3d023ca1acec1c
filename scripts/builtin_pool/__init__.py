"""The builtin synthetic language pool (servegen_fast/data/builtin.parquet), in three parts:

- data: summary.json, summary statistics of ServeGen's language pools (summary.py reads and writes it);
- derivation: derive.py recomputes those statistics from ServeGen's data (stats.py: shared helpers);
- build: build.py and lengths.py draw the 300-client pool from the statistics with a fixed seed
  (design.py: the design constants; report.py: headline numbers of the result).

scripts/derive_builtin_pool.py is the command line; docs/builtin-pool.md describes the whole.
"""
