"""Two code versions measured in one run: the `src/` tree of an earlier commit beside this checkout's.

Used by metrics_speed.py, train_speed.py and extract_speed.py to time "before" against "now" on the same
machine state (absolute speed drifts between sessions; ratios within a run do not).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def source_at(revision: str, folder: Path) -> Path:
    """`git archive` of `revision`'s src/ unpacked under `folder`; returns `folder` (its src/ goes on PYTHONPATH)."""
    folder.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def code_env(code_root: Path, *extra: Path) -> dict:
    """The environment of a subprocess that imports semshare from `code_root`/src (and these benchmarks from
    this checkout; `extra` folders after them): PYTHONPATH puts the tree being measured first, nothing edits
    sys.path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(code_root / "src"), str(ROOT), *map(str, extra)])}


def run_json(code_root: Path, script: str, *args: str, extra_path: tuple[Path, ...] = ()) -> dict:
    """Run `python -m benchmarks.SCRIPT args` on `code_root`'s code; its last stdout line is the JSON result."""
    module = f"benchmarks.{Path(script).stem}"
    output = subprocess.run([sys.executable, "-m", module, *args], check=True, env=code_env(code_root, *extra_path),
                            capture_output=True, text=True, cwd=ROOT)
    return json.loads(output.stdout.splitlines()[-1])
