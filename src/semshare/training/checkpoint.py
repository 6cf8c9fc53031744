"""Checkpoints: weights and optimizer tensors in safetensors, everything else in JSON; written atomically.

A checkpoint is a folder: model.safetensors, optimizer.safetensors (tensors) + optimizer.json (structure),
state.json (step, epoch, best metric, RNG, format version). Nothing is ever unpickled.
Replacement is two renames: the new folder is complete before the old one is moved aside, so a crash
at any moment leaves a loadable `last` (or its `.old` copy, which `load` falls back to).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from semshare.errors import SemshareError
from semshare.fileio import read_json_object, safetensors_bytes, verify_files_manifest, write_files_manifest

CHECKPOINT_FORMAT_VERSION = 1


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
    """Write a checkpoint folder atomically (complete new folder, then swap). `metadata` (JSON-able: the
    resolved config and model spec) goes into the weights file's own header, so the weights explain
    themselves even apart from their run folder."""
    folder = Path(folder)
    partial = folder.with_name(f".{folder.name}.partial")
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {key: json.dumps(value) for key, value in (metadata or {}).items()}
    (partial / "model.safetensors").write_bytes(safetensors_bytes(weights, header or None))
    if optimizer is not None:
        tensors, structure = _optimizer_to_flat(optimizer)
        (partial / "optimizer.safetensors").write_bytes(safetensors_bytes(tensors))
        (partial / "optimizer.json").write_text(json.dumps(structure))
    full_state = dict(state, format_version=CHECKPOINT_FORMAT_VERSION)
    full_state["torch_rng_state"] = torch.get_rng_state().tolist()
    (partial / "state.json").write_text(json.dumps(full_state))
    write_files_manifest(partial)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(partial, folder)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_exists(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "state.json").exists() or (folder.with_name(f".{folder.name}.old") / "state.json").exists()


def load_checkpoint(folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng: bool = False) -> dict:
    """Load weights (and optimizer) in place; returns the saved state dict."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        fallback = folder.with_name(f".{folder.name}.old")
        if (fallback / "state.json").exists():
            folder = fallback  # a crash between the two renames of save_checkpoint
        else:
            raise SemshareError(f"{folder}: no checkpoint here (state.json missing)")
    verify_files_manifest(folder, "checkpoint")
    state = read_json_object(folder / "state.json", "the checkpoint state (step, epoch, RNG)")
    if state.get("format_version", 0) > CHECKPOINT_FORMAT_VERSION:
        raise SemshareError(f"{folder}: checkpoint format {state['format_version']} is newer than this semshare")
    weights = _read_tensors(folder / "model.safetensors", "the model weights")
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
            saved = _optimizer_from_flat(_read_tensors(folder / "optimizer.safetensors", "the optimizer state"), structure)
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


def _read_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError

    if not path.is_file():
        raise SemshareError(f"{path}: file: expected {what} (safetensors), found no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SemshareError(f"{path}: safetensors: expected {what}, found an unreadable file "
                            f"({str(exc).splitlines()[0][:120]}: truncated or not a safetensors file?)") from None
