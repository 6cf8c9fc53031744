"""Atomic writes: a reader (or a resumed run) sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from semshare.errors import OutputExistsError



def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    tmp = _temporary_sibling(path)
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, payload: object) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


@contextmanager
def atomic_directory(final_dir: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final_dir`; rename it into place only if the block succeeds.

    A crash or an exception leaves no half-written `final_dir` behind (the temporary folder is removed).
    """
    final_dir = Path(final_dir)
    if final_dir.exists() and not overwrite:
        raise OutputExistsError(f"{final_dir} already exists; pass --overwrite to replace it")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_dir.with_name(f".{final_dir.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final_dir.exists():
        shutil.rmtree(final_dir)
    os.replace(tmp, final_dir)
