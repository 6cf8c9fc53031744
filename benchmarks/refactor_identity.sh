#!/usr/bin/env bash
# A refactor that should change no number proves it: run the same benchmarks with two versions of the code.
#   git worktree add /tmp/before REV
#   bash benchmarks/refactor_identity.sh /tmp/before/src OUT_BEFORE
#   bash benchmarks/refactor_identity.sh "$PWD/src" OUT_AFTER
#   python benchmarks/compare_results.py OUT_BEFORE/quick OUT_AFTER/quick     (and quick_w2v, quick_deep, pascal)
#   python benchmarks/old_runs_check.py OUT_BEFORE/quick                       (old run folders, new code)
# One torch thread per run; DATA defaults to ../shared/data/pascal_sentences_img (skipped when absent).
set -euo pipefail
SRC=$1; OUT=$2; DATA=${DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data/pascal_sentences_img}
mkdir -p "$OUT"
export PYTHONPATH=$SRC
cd "$OUT"
python -m semshare.cli benchmark --quick --threads 1 --out "$OUT/quick" > quick.log 2>&1
python -m semshare.cli benchmark --quick --threads 1 --linear-inputs pooled-word2vec --methods cca,lcfs,jfssl,ridge \
    --out "$OUT/quick_w2v" > quick_w2v.log 2>&1
python -m semshare.cli benchmark --quick --threads 1 --linear-inputs deep --methods cca,ridge --out "$OUT/quick_deep" \
    > quick_deep.log 2>&1
if [ -d "$DATA" ]; then
  python -m semshare.cli benchmark --data "$DATA" --seeds 1 --threads 1 --out "$OUT/pascal" > pascal.log 2>&1
fi
