"""Atomic writes: a reader (or a resumed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from semshare.errors import OutputExistsError, SemshareError

FILES_MANIFEST = "files.json"


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing ("w": UTF-8 text, "wb": bytes); it replaces `path` in one
    rename when the block succeeds and is removed when it fails. The one way semshare writes a file."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with open(tmp, mode, **text) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    _remove_stale(path.parent.glob(f".{path.name}.tmp-*"))  # a killed writer's temporary file of this path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to `path` through a temporary file and an atomic rename."""
    with atomic_file(path) as handle:
        handle.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path, "wb") as handle:
        handle.write(data)


def json_line(path: str | Path, number: int, line: str, expected: str = "a JSON object") -> object:
    """One line of a JSON-lines file, parsed; not JSON: one error naming the file and the line."""
    from semshare.errors import DataFormatError

    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"line {number}", expected, f"invalid JSON ({exc.msg})") from None


def read_tensors(path: Path, what: str) -> dict:
    """The tensors of a safetensors file (name -> torch.Tensor; nothing is unpickled), or one error that names
    the file and `what` it should hold."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SemshareError(f"{path}: file: expected {what} (safetensors), found no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SemshareError(f"{path}: safetensors: expected {what}, found an unreadable file "
                            f"({str(exc).splitlines()[0][:120]}: truncated or not a safetensors file?)") from None


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file whose header is in a fixed order (metadata keys sorted, then tensors by name), so
    equal tensors and metadata give equal bytes: the library writes its metadata map in an order that varies
    from call to call, and a file hash (files.json) should not."""
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    ordered = {"__metadata__": dict(sorted(header.pop("__metadata__").items()))} if "__metadata__" in header else {}
    ordered.update((name, header[name]) for name in sorted(header))
    text = json.dumps(ordered, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads its header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + raw[8 + size :]


def atomic_write_json(path: str | Path, payload: object) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def _process_gone(pid: str) -> bool:
    """Whether no process has this id any more (not ours, not another user's)."""
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _remove_stale(paths) -> None:
    """Temporary files or folders (`...-PID`) whose writing process no longer runs: left by a killed command."""
    for path in paths:
        if _process_gone(path.name.rsplit("-", 1)[-1]):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | Path) -> None:
    """Every temporary file or folder a killed writer left anywhere in `folder` (a run being resumed)."""
    folder = Path(folder)
    _remove_stale([*folder.rglob(".*.tmp-*"), *folder.rglob(".*.partial-*")])


def _remove_stale_partials(final_dir: Path) -> None:
    """Temporary folders of this output left by a killed process (its PID no longer runs) are removed."""
    _remove_stale(final_dir.parent.glob(f".{final_dir.name}.partial-*"))


@contextmanager
def atomic_directory(final_dir: str | Path, overwrite: bool = False, replaces: str | None = None) -> Iterator[Path]:
    """The one atomic folder writer: yield a temporary folder beside `final_dir`; rename it into place only
    if the block succeeds.

    A crash or an exception leaves no half-written `final_dir` behind (the temporary folder is removed). A
    folder being replaced is first renamed to `.NAME.old`, then the new one into place, then the old one
    removed: a crash between the two renames leaves the old version, which `published_folder` finds.
    """
    final_dir = Path(final_dir)
    if final_dir.exists() and not overwrite:
        raise OutputExistsError(f"{final_dir} already exists; pass --overwrite to replace it")
    check_replaceable(final_dir, replaces)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(final_dir)
    seen = _identity_of(final_dir)  # what stood at OUT when this write began (None: nothing)
    tmp = final_dir.with_name(f".{final_dir.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if _identity_of(final_dir) != seen:  # another writer put or replaced OUT meanwhile: it is theirs
            raise OutputExistsError(f"{final_dir}: {'appeared' if seen is None else 'changed'} while this command was "
                                    "writing it (another command writing the same folder?); nothing was replaced")
        if seen is None:  # a rename onto a folder that appears now fails instead of replacing it
            try:
                os.rename(tmp, final_dir)
            except OSError:
                raise OutputExistsError(f"{final_dir}: appeared while this command was writing it (another command "
                                        "writing the same folder?); nothing was replaced") from None
            shutil.rmtree(_old_version(final_dir), ignore_errors=True)  # a crash's leftover, now superseded
            return
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_directory(tmp, final_dir)


FOLDER_KINDS = {"config.yaml": "a run", "meta.json": "a dataset", "manifest.json": "an index",
                "package.json": "an exported package", "results.json": "a benchmark"}


def check_replaceable(final_dir: Path, replaces: str | None) -> None:
    """`--overwrite` replaces only a folder the same kind of command wrote (its marker file `replaces`, e.g. a
    dataset's meta.json): never a run, another kind's folder or a folder of one's own files."""
    if replaces is None or not final_dir.exists() or (final_dir / replaces).is_file():
        return
    if final_dir.is_dir() and not any(final_dir.iterdir()):
        return  # an empty folder
    kind = next((what for marker, what in FOLDER_KINDS.items() if (final_dir / marker).exists()), "other files")
    raise OutputExistsError(f"{final_dir} holds {kind}, not what this command writes ({replaces}): --overwrite "
                            "replaces only a folder of its own kind; choose another output folder")


def _identity_of(path: Path) -> tuple | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return (info.st_ino, info.st_dev)


def publish_directory(finished: Path, final_dir: Path) -> None:
    """Put a completely written folder in place of `final_dir` by renames (the end of every atomic folder
    write, and of a resumable one such as `extract`'s): the old version, if any, becomes `.NAME.old` until
    the new one is in place."""
    finished, final_dir = Path(finished), Path(final_dir)
    old = _old_version(final_dir)
    shutil.rmtree(old, ignore_errors=True)
    if final_dir.exists():
        os.replace(final_dir, old)
    os.replace(finished, final_dir)
    shutil.rmtree(old, ignore_errors=True)


def _old_version(final_dir: Path) -> Path:
    return final_dir.with_name(f".{final_dir.name}.old")


def published_folder(final_dir: str | Path, marker: str) -> Path | None:
    """`final_dir` if it holds `marker` (a file written into every version), else the old version a crash
    between atomic_directory's two renames left (None: neither)."""
    final_dir = Path(final_dir)
    for folder in (final_dir, _old_version(final_dir)):
        if (folder / marker).exists():
            return folder
    return None


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_files_manifest(folder: str | Path) -> None:
    """files.json: the size and sha256 of every file in `folder` (written last, so it vouches for the rest)."""
    folder = Path(folder)
    entries = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
               for p in sorted(folder.iterdir()) if p.is_file() and p.name != FILES_MANIFEST}
    atomic_write_json(folder / FILES_MANIFEST, {"files": entries})


def verify_files_manifest(folder: str | Path, what: str) -> None:
    """Check every file listed in files.json is there with its size and hash (folders without one pass:
    written before manifests existed). One SemshareError names the first file that differs."""
    folder = Path(folder)
    path = folder / FILES_MANIFEST
    if not path.exists():
        return
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SemshareError(f"{path}: files: expected the JSON manifest of this {what}, found an unreadable file "
                            f"({type(exc).__name__})") from None
    if not isinstance(entries, dict):
        raise SemshareError(f"{path}: files: expected a mapping of file name -> size and sha256, found "
                            f"{type(entries).__name__}")
    for name, entry in entries.items():
        # names of this folder's own files only: a manifest can never make us read (or describe) another file
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise SemshareError(f"{path}: files: expected names of files in this folder, found {name!r}")
        if not (isinstance(entry, dict) and type(entry.get("bytes")) is int and isinstance(entry.get("sha256"), str)):
            raise SemshareError(f"{path}: files.{name}: expected {{\"bytes\": int, \"sha256\": str}}, found {entry!r}"[:300])
    unlisted = sorted(p.name for p in folder.iterdir() if p.name != FILES_MANIFEST and p.name not in entries)
    if unlisted:  # an emptied or edited manifest cannot turn the check off
        raise SemshareError(f"{folder / unlisted[0]}: file: expected only the files listed in {FILES_MANIFEST}, found "
                            f"one it does not list (this {what} was changed after it was written)")
    for name, entry in entries.items():
        file = folder / name
        if file.is_symlink() or not file.is_file():
            raise SemshareError(f"{file}: file: expected a file of this {what} ({entry['bytes']} bytes), found "
                                f"{'a link' if file.is_symlink() else 'none'}")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise SemshareError(f"{file}: size: expected {entry['bytes']} bytes, found {size} (truncated or replaced; "
                                f"this {what} cannot be trusted)")
        if file_sha256(file) != entry["sha256"]:
            raise SemshareError(f"{file}: sha256: expected {entry['sha256'][:12]}..., found other bytes (this {what} "
                                "was changed after it was written)")


MAX_JSON_BYTES = 512 << 20  # a run or index JSON file (split rows of millions of items fit easily)


def read_bounded(path: str | Path, what: str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (a device, FIFO or socket named by a user path is
    refused before it is opened: /dev/zero would grow without end, a FIFO block forever)."""
    import stat

    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SemshareError(f"{path}: file: expected {what}, found no such file") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "a device")
        raise SemshareError(f"{path}: file: expected {what} as a regular file, found {kind}")
    if info.st_size > max_bytes:
        raise SemshareError(f"{path}: size: expected {what} of at most {max_bytes >> 20} MB, found "
                            f"{info.st_size >> 20} MB")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise SemshareError(f"{path}: size: expected {what} of at most {max_bytes >> 20} MB, found more")
    return data


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON object file, or one SemshareError naming the file, what it should hold and what it holds."""
    path = Path(path)
    try:
        loaded = json.loads(read_bounded(path, what, MAX_JSON_BYTES).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SemshareError(f"{path}: JSON: expected {what}, found an unreadable file ({type(exc).__name__} at "
                            f"{getattr(exc, 'pos', '?')}: truncated?)") from None
    except RecursionError:
        raise SemshareError(f"{path}: JSON: expected {what}, found values nested thousands deep") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise SemshareError(f"{path}: JSON: expected {what}, found {str(exc)[:120]}") from None
    if not isinstance(loaded, dict):
        raise SemshareError(f"{path}: JSON: expected {what} as an object, found {type(loaded).__name__}")
    return loaded


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on the directory itself: no lock file is written) while the
    block runs; a second process that asks for it meanwhile gets one SemshareError at once. Released when
    the process ends, however it ends."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock, as before
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SemshareError(f"{folder}: another semshare process is writing this {what} now; wait for it to "
                                "finish, or choose another --out") from None
        yield
    finally:
        os.close(handle)


def run_folder_holding(path: str | Path) -> Path | None:
    """The run folder `path` is or lies inside (a folder with a run's config.yaml or checkpoints), else None:
    only the commands that make or continue a run may write there."""
    path = Path(path).resolve()
    for folder in (path, *path.parents):
        markers = [(folder / name).exists() for name in ("model_spec.json", "best", "splits.json", "data_fingerprint.json")]
        if any(markers) and ((folder / "config.yaml").is_file() or sum(markers) >= 2):
            return folder
    return None
