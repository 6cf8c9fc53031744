"""Checkpoints: weights and optimizer tensors in safetensors, everything else in JSON; written atomically.

A checkpoint is a folder: model.safetensors, optimizer.safetensors (tensors) + optimizer.json (structure),
state.json (step, epoch, best metric, RNG, format version). Nothing is ever unpickled.
Replacement is two renames: the new folder is complete before the old one is moved aside, so a crash
at any moment leaves a loadable `last` (or its `.old` copy, which `load` falls back to).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from semshare.errors import SemshareError
from semshare.names import BEST, LAST
from semshare.fileio import (atomic_directory, published_folder, read_json_object, read_tensors, safetensors_bytes,
                             verify_files_manifest, write_files_manifest)

CHECKPOINT_FORMAT_VERSION = 1
STATE_FILE = "state.json"


@dataclass
class TrainState:
    """Where a run's training is: saved in every checkpoint (state.json) and returned by `fit`."""

    step: int = 0
    epoch: int = 0  # epochs finished
    step_in_epoch: int = 0
    best_metric: float | None = -math.inf  # the best validation score so far (None: a closed-form fit)
    best_epoch: int = -1  # the epoch of `best` (0: a closed-form fit; -1: no validation yet)
    validations_without_improvement: int = 0
    stopped_early: bool = False

    @classmethod
    def from_record(cls, record: dict) -> "TrainState":
        """The state a checkpoint's state.json (or a closed-form fit's) holds; other keys (RNG) are left out."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})

    def as_record(self) -> dict:
        return asdict(self)


class Checkpointer:
    """Owns the checkpoint policy of a run folder: `last` (with the optimizer: a resume continues exactly)
    after every epoch and when training stops, `best` when validation improves, and `best` = the last
    weights when training stopped before any validation. Only the main process writes."""

    def __init__(self, run_dir: Path, model: torch.nn.Module, optimizer, metadata: dict | None, writes: bool = True):
        self.run_dir, self.model, self.optimizer, self.metadata, self.writes = Path(run_dir), model, optimizer, metadata, writes

    def save_last(self, state: TrainState) -> None:
        if self.writes:
            save_checkpoint(self.run_dir / LAST, self.model, self.optimizer, state.as_record(), self.metadata)

    def save_best(self, state: TrainState) -> None:
        if self.writes:
            save_checkpoint(self.run_dir / BEST, self.model, None, state.as_record(), self.metadata)

    def finish(self, state: TrainState) -> None:
        if self.writes and not checkpoint_exists(self.run_dir / BEST):
            # stopped before any validation (max_steps inside the first epoch): the last weights stand in
            self.save_best(state)


def _optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    structure: dict = {"param_groups": state_dict["param_groups"], "state": {}}
    for param_id, param_state in state_dict["state"].items():
        entry = {}
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                key = f"{param_id}.{name}"
                tensors[key] = value.detach().cpu().contiguous()
                entry[name] = {"tensor": key}
            else:
                entry[name] = {"value": value}
        structure["state"][str(param_id)] = entry
    return tensors, structure


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], structure: dict) -> dict:
    state = {}
    for param_id, entry in structure["state"].items():
        state[int(param_id)] = {name: tensors[spec["tensor"]] if "tensor" in spec else spec["value"]
                                for name, spec in entry.items()}
    return {"state": state, "param_groups": structure["param_groups"]}


def save_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    state: dict, metadata: dict | None = None) -> None:
    """Write a checkpoint folder atomically (fileio.atomic_directory: a complete new folder, then swapped in).
    `metadata` (JSON-able: the resolved config and model spec) goes into the weights file's own header, so
    the weights explain themselves even apart from their run folder."""
    with atomic_directory(folder, overwrite=True) as partial:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        header = {key: json.dumps(value) for key, value in (metadata or {}).items()}
        (partial / "model.safetensors").write_bytes(safetensors_bytes(weights, header or None))
        if optimizer is not None:
            tensors, structure = _optimizer_to_flat(optimizer)
            (partial / "optimizer.safetensors").write_bytes(safetensors_bytes(tensors))
            (partial / "optimizer.json").write_text(json.dumps(structure))
        full_state = dict(state, format_version=CHECKPOINT_FORMAT_VERSION)
        full_state["torch_rng_state"] = torch.get_rng_state().tolist()
        (partial / STATE_FILE).write_text(json.dumps(full_state))
        write_files_manifest(partial)


def checkpoint_exists(folder: str | Path) -> bool:
    return published_folder(folder, STATE_FILE) is not None


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = False) -> dict:
    """Load weights (and optimizer) in place; returns the saved state dict."""
    found = published_folder(folder, STATE_FILE)  # or its old version: a crash between atomic_directory's renames
    if found is None:
        raise SemshareError(f"{folder}: no checkpoint here (state.json missing)")
    folder = found
    verify_files_manifest(folder, "checkpoint")
    state = read_json_object(folder / "state.json", "the checkpoint state (step, epoch, RNG)")
    if state.get("format_version", 0) > CHECKPOINT_FORMAT_VERSION:
        raise SemshareError(f"{folder}: checkpoint format {state['format_version']} is newer than this semshare")
    weights = read_tensors(folder / "model.safetensors", "the model weights")
    for name, tensor in weights.items():  # a NaN weight would surface as "scores contain NaN" much later
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SemshareError(f"{folder / 'model.safetensors'}: {name}: expected finite weights, found NaN or inf "
                                "(a diverged run: train it again, e.g. with a lower train.lr)")
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: the config or model spec is not the weights'
        first = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise SemshareError(f"{folder / 'model.safetensors'}: shapes: expected weights of the model that "
                            f"config.yaml and model_spec.json describe, found {first.strip()}") from None
    if missing or unexpected:
        raise SemshareError(f"{folder / 'model.safetensors'}: tensors: expected the model's {len(missing)} missing "
                            f"{missing[:3]} / found {len(unexpected)} unexpected {unexpected[:3]}")
    if optimizer is not None:
        structure = read_json_object(folder / "optimizer.json", "the optimizer structure")
        try:
            saved = _optimizer_from_flat(read_tensors(folder / "optimizer.safetensors", "the optimizer state"), structure)
            for saved_group, group in zip(saved["param_groups"], optimizer.param_groups):
                for flag in ("fused", "foreach"):  # how this torch runs a step, not state to restore
                    if flag in group:
                        saved_group[flag] = group[flag]
            optimizer.load_state_dict(saved)
        except (KeyError, ValueError, TypeError) as exc:
            raise SemshareError(f"{folder / 'optimizer.json'}: state: expected the optimizer of this model, "
                                f"found one that does not fit ({type(exc).__name__}: {exc})") from None
    if restore_rng:
        torch.set_rng_state(torch.tensor(state["torch_rng_state"], dtype=torch.uint8))
    return state


def read_checkpoint_metadata(folder: str | Path) -> dict:
    """The JSON metadata stored in a checkpoint's weights header ({} when it has none)."""
    from safetensors import safe_open

    with safe_open(str(Path(folder) / "model.safetensors"), framework="pt") as handle:
        header = handle.metadata() or {}
    return {key: json.loads(value) for key, value in header.items()}


