"""The run folder's description: what a run is (config, sizes, rows, data) and the checks that keep it so.

  config.yaml            the resolved ExperimentConfig (also inside every checkpoint)
  model_spec.json        the sizes read from the data, to rebuild the model for its weights
  splits.json            the dataset folder and the train / val rows the run used
  data_fingerprint.json  the data's sizes and the hashes of its labels and splits (checked on resume)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from semshare.config import from_dict, load_yaml, save_yaml, to_dict
from semshare.data.dataset import Dataset
from semshare.errors import ConfigError, OutputExistsError, SemshareError
from semshare.fileio import atomic_write_json
from semshare.methods.base import ModelSpec
from semshare.training.checkpoint import _read_json
from semshare.training.recipes import ExperimentConfig, experiment_config_from_dict

FINGERPRINT_FILE = "data_fingerprint.json"
SPLITS_FILE = "splits.json"

# settings that change how fast a run goes or what it prints, never what it learns: a finished or resumed run
# is the same run whatever they are (and a run saved before one of them existed still matches)
RESULT_NEUTRAL_KEYS = ("train.progress", "train.log_every", "train.tensorboard", "train.prefetch_batches")


def data_fingerprint(dataset: Dataset) -> dict:
    """What a run was trained on: the folder, its sizes, and hashes of its labels and splits."""
    labels = hashlib.sha256()
    for start in range(0, dataset.num_items, 65536):
        labels.update(np.ascontiguousarray(dataset.labels[start : start + 65536]).tobytes())
    splits = hashlib.sha256(json.dumps({k: np.asarray(v).tolist() for k, v in sorted(dataset.splits.items())}).encode())
    return {"path": str(Path(dataset.root).resolve()), "num_items": dataset.num_items,
            "num_labels": dataset.num_labels, "labels_sha256": labels.hexdigest(), "splits_sha256": splits.hexdigest()}


def save_run_description(run_dir: Path, cfg: ExperimentConfig, spec: ModelSpec, dataset: Dataset,
                         train_rows: np.ndarray, val_rows: np.ndarray) -> None:
    save_yaml(run_dir / "config.yaml", cfg)
    atomic_write_json(run_dir / "model_spec.json", to_dict(spec))
    atomic_write_json(run_dir / SPLITS_FILE, {"data_dir": str(Path(dataset.root).resolve()),
                                              "train": train_rows.tolist(), "val": val_rows.tolist()})
    atomic_write_json(run_dir / FINGERPRINT_FILE, data_fingerprint(dataset))


def config_differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf where two config dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def result_differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """config_differences without the result-neutral settings."""
    return [d for d in config_differences(old, new) if d[0] not in RESULT_NEUTRAL_KEYS]


def saved_config(path: Path) -> dict:
    """A saved config.yaml as today's full dict: a field added since the run was written reads as its default
    (the value the run had, as the field did not exist), so it is no difference."""
    return to_dict(experiment_config_from_dict(load_yaml(path), str(path)))


def check_resume(run_dir: Path, cfg: ExperimentConfig, dataset: Dataset, allow_change: tuple[str, ...] = ()) -> None:
    """A resumed run must be the run it continues: same resolved config (but for `allow_change` fields)
    and same data. Checked before anything is written; the error names the field and both values."""
    saved = saved_config(run_dir / "config.yaml")
    for key, old, new in result_differences(saved, to_dict(cfg)):
        if not any(key == field or key.startswith(field + ".") for field in allow_change):
            raise ConfigError(f"{run_dir / 'config.yaml'}: {key}: the run has {old!r}, this command gives {new!r}; "
                              f"--resume continues the run as it was (use another --out, or --allow-change {key})")
    fingerprint_path = run_dir / FINGERPRINT_FILE
    if fingerprint_path.exists():
        saved_data = json.loads(fingerprint_path.read_text())
        for key, old, new in config_differences(saved_data, data_fingerprint(dataset)):
            raise SemshareError(f"{fingerprint_path}: {key}: the run was trained on {old!r}, --data gives {new!r}; "
                                "resume with the run's own data")


def check_existing_run(run_dir: Path, cfg: ExperimentConfig, dataset: Dataset, resume: bool,
                       allow_change: tuple[str, ...] = ()) -> bool:
    """Whether RUN already holds this run (every run kind goes through here before anything is written).

    A folder with a config.yaml is a run: without `resume` it is refused (never overwritten); with it, its
    config (but for `allow_change` fields) and data must be this command's. Checkpoints without a
    config.yaml cannot be proven to be this run either way: refused. Anything else (no folder, an empty
    one, a failed benchmark run's error.json) is a new run."""
    if (run_dir / "config.yaml").exists():
        if not resume:
            raise OutputExistsError(f"{run_dir} already holds a run (config.yaml); pass --resume to continue it "
                                    "or choose another --out")
        check_resume(run_dir, cfg, dataset, allow_change)
        return True
    for name in ("last", "best"):
        if (run_dir / name).exists():
            raise SemshareError(f"{run_dir / 'config.yaml'}: file: expected the config of the run whose checkpoint "
                                f"is in {name}/, found none; it cannot be resumed or replaced: choose another --out")
    return False


def check_same_spec(run_dir: Path, spec: ModelSpec) -> None:
    """The sizes the data gives now equal the run's saved ones (a resume rebuilds the same model)."""
    saved_spec = json.loads((run_dir / "model_spec.json").read_text())
    for key, old, new in config_differences(saved_spec, to_dict(spec)):
        raise SemshareError(f"{run_dir / 'model_spec.json'}: {key}: the run has {old!r}, the data now gives {new!r}")


def read_run_config(run_dir: Path) -> tuple[ExperimentConfig, ModelSpec]:
    if not (run_dir / "config.yaml").exists():
        raise SemshareError(f"{run_dir}: not a run folder (config.yaml missing)")
    cfg = experiment_config_from_dict(load_yaml(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    try:
        spec = from_dict(ModelSpec, _read_json(run_dir / "model_spec.json", "the model's sizes (ModelSpec)"))
    except ConfigError as exc:
        raise ConfigError(f"{run_dir / 'model_spec.json'}: {exc}") from None
    return cfg, spec


def read_split_rows(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) the run used."""
    splits = json.loads((run_dir / SPLITS_FILE).read_text())
    return np.array(splits["train"], dtype=np.int64), np.array(splits["val"], dtype=np.int64)


def recorded_data_dir(run_dir: str | Path) -> str:
    """The dataset folder a run was trained on (splits.json)."""
    path = Path(run_dir) / SPLITS_FILE
    if not path.exists():
        raise SemshareError(f"{run_dir}: not a run folder (splits.json missing)")
    return json.loads(path.read_text())["data_dir"]
