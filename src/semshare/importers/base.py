"""What an import format declares: its inputs as a dataclass of options (semshare.options), and the function
that converts them.

    @dataclass(kw_only=True)
    class MyInputs:
        src: Path = option(help="the folder to convert", type=Path)
        seed: int = option("--seed", default=0, type=int)

    IMPORTERS.register("my-format")(ImportFormat("one line for `semshare import --help`", MyInputs, import_my_format))

`semshare import my-format` then has these flags (and --out, --name, --overwrite), with no edit to the command
line; `import_my_format(inputs, target)` writes the dataset folder `target` names. Nothing here imports NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class ImportTarget:
    """Where an import writes: the dataset folder, its name in meta.json, whether an existing folder may be
    replaced, and whether a progress bar is drawn (on a terminal)."""

    out_dir: Path
    name: str
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class ImportFormat:
    """A registered import format (semshare.registry.IMPORTERS): `run(inputs, target) -> meta.json`."""

    summary: str
    inputs: type  # a dataclass whose fields are `option(...)`s
    run: Callable
