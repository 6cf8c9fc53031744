"""Options a registered entry declares (an import format's inputs, an annotation format's files): a dataclass
whose fields are `option(...)`s is at once the typed inputs of a library call and the flags of its command.

    @dataclass(kw_only=True)
    class MyInputs:
        src: Path = option(help="the folder to convert", type=Path)           # a positional argument
        seed: int = option("--seed", default=0, type=int)

Nothing here imports NumPy, so the command line reads the declarations as it builds a subcommand.
"""

from __future__ import annotations

import dataclasses
from dataclasses import field
from pathlib import Path
from typing import Callable


def option(flag: str | None = None, *, default=None, type: Callable = str, help: str = "", metavar: str | None = None,
           required: bool = False, repeat: bool = False):
    """A dataclass field that is also a command-line flag of its import format (`flag`; None: a positional
    argument); `repeat`: the flag may be given again, or the positional argument holds one or more (a list)."""
    positional = flag is None
    metadata = {"flag": flag, "type": type, "help": help, "metavar": metavar, "required": required,
                "repeat": repeat, "positional": positional, "nargs": "+" if positional and repeat else None}
    if repeat:
        return field(default_factory=list, metadata=metadata)
    if required or positional:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)



def add_option_arguments(parser, inputs: type, required: bool = True) -> None:
    """The flags of an inputs dataclass on an argparse (sub)command (`required` False: none is required, for
    options of which one group is chosen, e.g. the annotation formats of `extract`)."""
    for spec in dataclasses.fields(inputs):
        meta = spec.metadata
        help_text = meta["help"] + (f" (default {spec.default})" if spec.default not in (None, dataclasses.MISSING)
                                    and not meta["positional"] else "")
        if meta["positional"] or meta["nargs"]:
            parser.add_argument(spec.name, type=meta["type"], nargs=meta["nargs"], metavar=meta["metavar"],
                                help=meta["help"])
        elif meta["repeat"]:
            parser.add_argument(meta["flag"], dest=spec.name, type=meta["type"], action="append",
                                required=meta["required"] and required, metavar=meta["metavar"], help=help_text)
        else:
            parser.add_argument(meta["flag"], dest=spec.name, type=meta["type"], default=spec.default,
                                required=meta["required"] and required, metavar=meta["metavar"], help=help_text)


def inputs_from_arguments(inputs: type, args) -> object:
    """The inputs dataclass filled from parsed arguments (a repeatable flag never given is an empty list)."""
    values = {spec.name: getattr(args, spec.name) for spec in dataclasses.fields(inputs)}
    for spec in dataclasses.fields(inputs):
        if spec.metadata["repeat"] and values[spec.name] is None:
            values[spec.name] = []
    return inputs(**values)


def given_options(inputs: type, args) -> list[str]:
    """The flags of `inputs` that were given a value (a repeatable one: at least once)."""
    return [spec.metadata["flag"] for spec in dataclasses.fields(inputs)
            if spec.metadata["flag"] and getattr(args, spec.name, None) not in (None, [], spec.default)]


def paths_of(inputs: object) -> list[Path]:
    """Every path an inputs dataclass holds (fields of type Path, or lists of them), in field order."""
    found = []
    for spec in dataclasses.fields(inputs):
        value = getattr(inputs, spec.name)
        found += [Path(v) for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, (str, Path))]
    return found
