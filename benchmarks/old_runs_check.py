"""Old run folders (written by the code before a change) load, evaluate to their saved result.json digits
and resume.  python benchmarks/old_runs_check.py OLD_QUICK_BENCHMARK_DIR [RESUME_COPY_DIR]"""
import json
import shutil
import sys
from pathlib import Path
from semshare.data.dataset import open_dataset
from semshare.evaluation.evaluate import evaluate_run
from semshare.evaluation.protocols import ProtocolConfig
from semshare.evaluation.retrieval import MetricSpec
from semshare.experiments.benchmark import METRIC_SPEC
from semshare.training.experiment import load_run, train_experiment
from semshare.training.recipes import experiment_config_from_dict
from semshare.config import load_yaml
from dataclasses import replace

root = Path(sys.argv[1])
dataset = open_dataset(root / "data-tiny")
worst, count = 0.0, 0
for run_dir in sorted((root / "synthetic-tiny").iterdir()):
    saved = json.loads((run_dir / "result.json").read_text())["test"]
    run = load_run(run_dir, dataset)
    table, _ = evaluate_run(run, ProtocolConfig(), MetricSpec(**METRIC_SPEC))
    diff = max(abs(table[k] - saved[k]) for k in saved)
    worst = max(worst, diff); count += 1
    print(f"{run_dir.name:<20} {type(run).__name__:<14} max |new - saved| = {diff!r}")
print(f"{count} old runs, largest difference {worst!r}")
if not (root / "synthetic-tiny" / "ours-seed0").exists(): sys.exit(0)
# resume an old trained run for one more epoch (copy), config change allowed: train.epochs
src = root / "synthetic-tiny" / "ours-seed0"
copy = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/resume-old-ours"); shutil.rmtree(copy, ignore_errors=True); shutil.copytree(src, copy)
cfg = experiment_config_from_dict(load_yaml(copy / "config.yaml"))
cfg = replace(cfg, train=replace(cfg.train, epochs=2))
state = train_experiment(dataset, cfg, copy, resume=True, allow_change=("train.epochs",))
print("resumed old ours run:", {k: state[k] for k in ("step", "epoch", "best_epoch")})
