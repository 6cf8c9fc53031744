"""Where a result came from: the code that made it (`code_version`), recorded in every benchmark result, so a
comparison of two result folders can say what differs between them."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from semshare import __version__


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """semshare's version, with the git commit of its source tree when it runs from a checkout ("0.1.0+g1a2b3c4",
    "+dirty" when the tree's source differs from that commit); the version alone elsewhere."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode != 0:
            return __version__
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return __version__
    return f"{__version__}+g{commit.stdout.strip()}" + ("+dirty" if dirty else "")
