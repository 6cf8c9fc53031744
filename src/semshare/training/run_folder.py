"""The run folder's description: what a run is (config, sizes, rows, data) and the checks that keep it so.

  config.yaml            the resolved ExperimentConfig (also inside every checkpoint)
  model_spec.json        the sizes read from the data, to rebuild the model for its weights
  splits.json            the dataset folder and the train / val rows the run used
  data_fingerprint.json  the data's sizes and the hashes of its labels, splits and files (checked on resume)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from semshare.config import from_dict, load_yaml, save_yaml, to_dict
from semshare.data.dataset import Dataset
from semshare.errors import ConfigError, OutputExistsError, SemshareError
from semshare.fileio import FOLDER_KINDS, atomic_write_json, read_json_object
from semshare.methods.base import ModelSpec
from semshare.training.recipes import ExperimentConfig, experiment_config_from_dict
from semshare.names import BEST, LAST

FINGERPRINT_FILE = "data_fingerprint.json"
SPLITS_FILE = "splits.json"

# settings that change how fast a run goes or what it prints, never what it learns: a finished or resumed run
# is the same run whatever they are (and a run saved before one of them existed still matches)
RESULT_NEUTRAL_KEYS = ("train.progress", "train.log_every", "train.tensorboard", "train.prefetch_batches")


# the dataset's own files (docs/DATA.md), hashed whole: any edit to what a run reads is a difference; meta.json
# and image_files.txt hold paths, which a moved folder changes without changing the data
DATA_FILE_SUFFIXES = (".npy", ".jsonl", ".json", ".txt")
PATH_FILES = ("meta.json", "image_files.txt")


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def data_fingerprint(dataset: Dataset) -> dict:
    """What a run was trained on: the folder, its sizes, hashes of its labels and splits, and of every data
    file in the folder."""
    labels = hashlib.sha256()
    for start in range(0, dataset.num_items, 65536):
        labels.update(np.ascontiguousarray(dataset.labels[start : start + 65536]).tobytes())
    splits = hashlib.sha256(json.dumps({k: np.asarray(v).tolist() for k, v in sorted(dataset.splits.items())}).encode())
    return {"path": str(Path(dataset.root).resolve()), "num_items": dataset.num_items,
            "num_labels": dataset.num_labels, "labels_sha256": labels.hexdigest(), "splits_sha256": splits.hexdigest(),
            "files": {p.name: _file_sha256(p) for p in sorted(Path(dataset.root).iterdir())
                      if p.is_file() and p.suffix in DATA_FILE_SUFFIXES and p.name not in PATH_FILES}}


def data_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, saved, current) where the data differs from what the run recorded, its folder's path aside. Only
    what the run recorded is compared: an older fingerprint without file hashes, or a file added to the
    folder since, is no difference."""
    found = []
    for key, old in saved.items():
        if key == "path":
            continue
        if key == "files" and isinstance(old, dict):
            now = current.get("files") or {}
            found += [(f"files.{name}", digest, now.get(name, "no such file")) for name, digest in old.items()
                      if now.get(name) != digest]
        elif current.get(key) != old:
            found.append((key, old, current.get(key)))
    return found


IDENTITY_FILE = "identity.json"


def run_identity(run_dir: Path, create: bool = False) -> str | None:
    """The run's id: random, written once when the folder is first made a run, carried by its checkpoints,
    instance head and every index made from it (None for a folder written before identities)."""
    import uuid

    path = Path(run_dir) / IDENTITY_FILE
    if path.is_file():
        record = read_json_object(path, "the run's identity")
        run_id = record.get("run_id")
        if not (isinstance(run_id, str) and len(run_id) == 32 and all(c in "0123456789abcdef" for c in run_id)):
            raise SemshareError(f"{path}: run_id: expected 32 hex digits, found {str(run_id)[:40]!r}")
        return run_id
    if not create:
        return None
    run_id = uuid.uuid4().hex
    atomic_write_json(path, {"run_id": run_id})
    return run_id


def checkpoint_digest(folder: Path) -> str:
    """The sha256 of a checkpoint's weights (its files.json entry, else the file itself): what an index or an
    instance head records of the checkpoint it was made with."""
    from semshare.fileio import file_sha256

    listed = Path(folder) / "files.json"
    if listed.is_file():
        entry = read_json_object(listed, "the checkpoint's file list").get("files", {}).get("model.safetensors")
        if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    return file_sha256(Path(folder) / "model.safetensors")


def made_by(run_dir: Path, checkpoint: str) -> dict:
    """What a stage fitted beside a run (instance head, codes) records of it: its id and checkpoint weights."""
    return {"run_id": run_identity(Path(run_dir)) or "", "checkpoint": checkpoint,
            "checkpoint_sha256": checkpoint_digest(Path(run_dir) / checkpoint)}


def check_made_by(run_dir: Path, record_path: Path, recorded, refit: str) -> None:
    """A stage's `made_by` names this run (one written before identities, None or without an id: taken as
    this run's); else one line naming both and the command that fits it again (`refit`)."""
    if recorded is None:
        return
    own = run_identity(Path(run_dir))
    if not isinstance(recorded, dict) or (own and recorded.get("run_id") and recorded["run_id"] != own):
        found = recorded.get("run_id") if isinstance(recorded, dict) else repr(recorded)[:60]
        raise SemshareError(f"{record_path}: made_by: fitted on run {found}, but {run_dir} is run {own}; fit it "
                            f"again ({refit})")


# the sections of a checkpoint's embedded config that decide what its weights are (an allowed change of
# train.* on resume leaves the best checkpoint's own config behind, and that is no difference)
ARCHITECTURE_SECTIONS = ("method", "model", "inputs")


def check_checkpoint_of_run(run_dir: Path, folder: Path, cfg: ExperimentConfig, metadata: dict) -> None:
    """A checkpoint belongs to its run folder: its embedded run id (when both have one) is the folder's, and
    its embedded config says the model config.yaml says; else one line naming both."""
    own = run_identity(run_dir)
    embedded = metadata.get("run_id")
    if own is not None and embedded is not None and embedded != own:
        raise SemshareError(f"{folder}: this checkpoint was written by run {embedded}, but {run_dir} is run {own} "
                            "(copied or linked from another run?); use that run's folder, or retrain")
    if "config" not in metadata:
        return
    saved, mine = metadata["config"], to_dict(cfg)
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), type(mine[k])) for k in ARCHITECTURE_SECTIONS):
        raise SemshareError(f"{folder}: config (in the weights header): expected the run's resolved config, found "
                            f"{json.dumps(saved)[:80]}")
    for key, old, new in config_differences({k: saved[k] for k in ARCHITECTURE_SECTIONS},
                                            {k: mine[k] for k in ARCHITECTURE_SECTIONS}):
        if old is None:  # a field added since the checkpoint was written: it had the field's default
            continue
        raise SemshareError(f"{folder}: {key}: the checkpoint was trained with {old!r}, {run_dir / 'config.yaml'} "
                            f"says {new!r}; the checkpoint is not this run's (copied from another?)")


def save_run_description(run_dir: Path, cfg: ExperimentConfig, spec: ModelSpec, dataset: Dataset,
                         train_rows: np.ndarray, val_rows: np.ndarray) -> None:
    run_identity(run_dir, create=True)
    save_yaml(run_dir / "config.yaml", cfg)
    atomic_write_json(run_dir / "model_spec.json", to_dict(spec))
    atomic_write_json(run_dir / SPLITS_FILE, {**recorded_paths(run_dir, "data_dir", dataset.root),
                                              "train": train_rows.tolist(), "val": val_rows.tolist()})
    atomic_write_json(run_dir / FINGERPRINT_FILE, data_fingerprint(dataset))


def config_differences(old, new, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, old value, new value) for every leaf where two config dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def result_differences(old: dict, new: dict, dataset: Dataset | None = None) -> list[tuple[str, object, object]]:
    """config_differences without the result-neutral settings (on `dataset`: those that change nothing there)."""
    neutral = RESULT_NEUTRAL_KEYS + (neutral_on(dataset) if dataset is not None else ())
    return [d for d in config_differences(old, new) if d[0] not in neutral]


def neutral_on(dataset: Dataset) -> tuple[str, ...]:
    """Settings that change nothing on this data: the file-layout share where a file's layout is a row's
    (regions not from annotated boxes, or no global feature to show)."""
    boxed = dataset.meta.get("regions_from") == "boxes" and dataset.image is not None
    return () if boxed else ("inputs.file_layout_prob",)


def saved_config(path: Path) -> dict:
    """A saved config.yaml as today's full dict: a field added since the run was written reads as its default
    (the value the run had, as the field did not exist), so it is no difference."""
    return to_dict(experiment_config_from_dict(_run_config_values(path), str(path)))


def _run_config_values(path: Path) -> dict:
    """A run's config.yaml as a dict; an empty one (truncated) is an error, not the defaults."""
    values = load_yaml(path)
    if not values:
        raise ConfigError(f"{path}: config: expected the resolved config of the run, found an empty file")
    return values


def check_resume(run_dir: Path, cfg: ExperimentConfig, dataset: Dataset, allow_change: tuple[str, ...] = ()) -> None:
    """A resumed run must be the run it continues: same resolved config (but for `allow_change` fields)
    and same data. Checked before anything is written; the error names the field and both values."""
    saved = saved_config(run_dir / "config.yaml")
    for key, old, new in result_differences(saved, to_dict(cfg), dataset):
        if not any(key == field or key.startswith(field + ".") for field in allow_change):
            raise ConfigError(f"{run_dir / 'config.yaml'}: {key}: the run has {old!r}, this command gives {new!r}; "
                              f"--resume continues the run as it was (use another --out, or --allow-change {key})")
    fingerprint_path = run_dir / FINGERPRINT_FILE
    if not fingerprint_path.exists():
        return
    saved_data = read_json_object(fingerprint_path, "the fingerprint of the run's data")
    current = data_fingerprint(dataset)
    for key, old, new in data_differences(saved_data, current):
        raise SemshareError(f"{fingerprint_path}: {key}: the run was trained on {saved_data.get('path')} ({old!r}), "
                            f"--data {dataset.root} gives {new!r}; resume with the run's own data")
    # the same content in another folder is the same data when the run recorded its files' hashes; an older
    # fingerprint (no file hashes) can only vouch for its own folder, unless the user says it moved
    moved = saved_data.get("path") != current["path"]
    if moved and "files" not in saved_data and "path" not in allow_change:
        raise SemshareError(f"{fingerprint_path}: path: the run was trained on {saved_data.get('path')!r}, --data gives "
                            f"{current['path']!r}; resume with the run's own data (or --allow-change path if the "
                            "folder was moved)")


def update_run_description(run_dir: Path, cfg: ExperimentConfig, dataset: Dataset,
                           allow_change: tuple[str, ...]) -> None:
    """After a resume was allowed: config.yaml holds the values the run continues with, and splits.json /
    data_fingerprint.json the folder its data is now in."""
    if allow_change:
        save_yaml(run_dir / "config.yaml", cfg)
    fingerprint_path, splits_path = run_dir / FINGERPRINT_FILE, run_dir / SPLITS_FILE
    here = str(Path(dataset.root).resolve())
    if fingerprint_path.exists():
        saved = read_json_object(fingerprint_path, "the fingerprint of the run's data")
        if saved.get("path") != here:
            atomic_write_json(fingerprint_path, {**saved, "path": here})
    if splits_path.exists():
        splits = read_json_object(splits_path, "the dataset folder and rows of the run")
        if recorded_path(run_dir, splits, "data_dir") != here:
            atomic_write_json(splits_path, {**splits, **recorded_paths(run_dir, "data_dir", here)})


def _dotted_keys(values: dict, prefix: str = "") -> list[str]:
    return [k for key, value in values.items()
            for k in (_dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"])]


def check_allowed_changes(cfg: ExperimentConfig, allow_change: tuple[str, ...]) -> None:
    """Every --allow-change FIELD names a config key (or a section of keys), or `path` (the data's folder)."""
    keys = _dotted_keys(to_dict(cfg))
    for field in allow_change:
        if field != "path" and not any(key == field or key.startswith(field + ".") for key in keys):
            raise ConfigError(f"--allow-change {field}: expected a config key such as train.epochs (or path), "
                              f"found no key {field!r}")


def check_existing_run(run_dir: Path, cfg: ExperimentConfig, dataset: Dataset, resume: bool,
                       allow_change: tuple[str, ...] = ()) -> bool:
    """Whether RUN already holds this run (every run kind goes through here before anything is written).

    A folder with a config.yaml is a run: without `resume` it is refused (never overwritten); with it, its
    config (but for `allow_change` fields) and data must be this command's. Checkpoints without a
    config.yaml cannot be proven to be this run either way: refused. Anything else (no folder, an empty
    one, a failed benchmark run's error.json) is a new run."""
    check_allowed_changes(cfg, allow_change)
    if (run_dir / "config.yaml").exists():
        if not resume:
            raise OutputExistsError(f"{run_dir} already holds a run (config.yaml); pass --resume to continue it "
                                    "or choose another --out")
        check_resume(run_dir, cfg, dataset, allow_change)
        return True
    for name in (LAST, BEST):
        if (run_dir / name).exists():
            raise SemshareError(f"{run_dir / 'config.yaml'}: file: expected the config of the run whose checkpoint "
                                f"is in {name}/, found none; it cannot be resumed or replaced: choose another --out")
    for marker, kind in FOLDER_KINDS.items():  # another command's folder: never mixed with a run's files
        if marker != "config.yaml" and (run_dir / marker).exists():
            raise OutputExistsError(f"{run_dir} holds {kind} ({marker}); a run is written into a new or empty "
                                    "folder: choose another --out")
    return False



def check_same_spec(run_dir: Path, spec: ModelSpec) -> None:
    """The sizes the data gives now equal the run's saved ones (a resume rebuilds the same model)."""
    saved_spec = read_json_object(run_dir / "model_spec.json", "the model's sizes (ModelSpec)")
    for key, old, new in config_differences(saved_spec, to_dict(spec)):
        raise SemshareError(f"{run_dir / 'model_spec.json'}: {key}: the run has {old!r}, the data now gives {new!r}")


def read_run_config(run_dir: Path) -> tuple[ExperimentConfig, ModelSpec]:
    if not (run_dir / "config.yaml").exists():
        raise SemshareError(f"{run_dir}: not a run folder (config.yaml missing)")
    cfg = experiment_config_from_dict(_run_config_values(run_dir / "config.yaml"), str(run_dir / "config.yaml"))
    try:
        spec = from_dict(ModelSpec, read_json_object(run_dir / "model_spec.json", "the model's sizes (ModelSpec)"))
    except ConfigError as exc:
        raise ConfigError(f"{run_dir / 'model_spec.json'}: {exc}") from None
    return cfg, spec


def read_split_rows(run_dir: Path, num_items: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, val rows) the run used: lists of row numbers of its dataset (0 .. num_items - 1; any
    non-negative row when the dataset is not at hand)."""
    path = run_dir / SPLITS_FILE
    splits = read_json_object(path, "the dataset folder and the train / val rows of the run")
    rows = []
    for name in ("train", "val"):
        values = splits.get(name)
        limit = num_items if num_items is not None else float("inf")
        if not isinstance(values, list) or not all(type(v) is int and 0 <= v < limit for v in values):
            expected = f"0..{num_items - 1}" if num_items is not None else "0 or more"
            raise SemshareError(f"{path}: {name}: expected a list of row numbers in {expected}, found {_shown(values)}")
        rows.append(np.array(values, dtype=np.int64))
    return rows[0], rows[1]


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def recorded_paths(folder: str | Path, key: str, target: str | Path) -> dict:
    """How a run or index folder records another folder: relative to itself (it still resolves when both move
    together, e.g. a project copied to another machine) and absolute (it still resolves when only the
    recording folder moves)."""
    target = Path(target).resolve()
    return {key: os.path.relpath(target, Path(folder).resolve()), f"{key}_absolute": str(target)}


def recorded_path(folder: str | Path, record: dict, key: str) -> str:
    """The folder `record[key]` names: the relative form if it resolves to a folder, else the absolute one
    (older records hold only an absolute path under `key`)."""
    value, absolute = record.get(key), record.get(f"{key}_absolute")
    if not isinstance(value, str) or not value:
        raise SemshareError(f"{folder}: {key}: expected a folder path, found {_shown(value)}")
    relative = (Path(folder) / value).resolve()
    if relative.is_dir() or not isinstance(absolute, str):
        return str(relative)
    return absolute


def recorded_data_dir(run_dir: str | Path) -> str:
    """The dataset folder a run was trained on (splits.json): where it is now if it moved with the run."""
    path = Path(run_dir) / SPLITS_FILE
    if not path.exists():
        raise SemshareError(f"{run_dir}: not a run folder (splits.json missing)")
    return recorded_path(run_dir, read_json_object(path, "the dataset folder and the train / val rows of the run"),
                         "data_dir")


def require_dataset(run) -> None:
    """Rows of a dataset need the dataset: one clear error for a run loaded without it."""
    if run.dataset is None:
        where = f" ({recorded_data_dir(run.run_dir)} is not there)" if run.run_dir is not None else ""
        raise SemshareError(f"{run.run_dir}: the run was loaded without its dataset{where}, and this needs the "
                            "dataset's rows (images, captions): give the dataset folder (--data / data_dir)")
