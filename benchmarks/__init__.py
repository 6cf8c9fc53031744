"""The maintained benchmarks: each regenerates figures in docs/ from the installed library. Run them from the
repository root as `python -m benchmarks.NAME ...` (those that import a sibling, e.g. `benchmarks.revisions`,
need the module form; the others also run as files)."""
