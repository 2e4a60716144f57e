"""Results and reporting: per-sample files -> ``results.csv`` (:mod:`benchmark.report.results`, bootstrap
intervals and ranks in :mod:`benchmark.report.stats`) -> ``leaderboard.md`` and figures
(:mod:`benchmark.report.leaderboard`, :mod:`benchmark.report.figures`).

Reads only what a run wrote (``run.json``, the per-sample Parquet files), so a re-render reproduces a
leaderboard byte for byte. May import :mod:`benchmark.metrics` (the reductions) and the run folder's
inventory (:mod:`benchmark.runner.folder`); never the runtime.
"""
