"""Typed dataclass configs: build from dicts/YAML, apply dotted `--set key=value` overrides, save resolved.

An override may only name a field that exists, and its value must fit the field's type: a typo is an
error that lists the valid keys, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from semshare.errors import ConfigError

T = TypeVar("T")


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} fits none of {annotation}")
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {annotation.__name__}, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], values: dict, prefix: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping for {cls.__name__}, got {values!r}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]}; valid keys: {', '.join(prefix + n for n in sorted(names))}")
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and f.name not in values]
    if required:
        raise ConfigError(f"missing config key {prefix}{required[0]} ({cls.__name__} needs it)")
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def to_dict(config: Any) -> dict:
    """Plain nested dict (tuples as lists) for JSON/YAML."""
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value
    return convert(config)


def nest_dotted(overrides: dict) -> dict:
    """{'train.lr': 1e-3, 'model': {'dim': 8}} -> {'train': {'lr': 1e-3}, 'model': {'dim': 8}}."""
    nested: dict = {}
    for key, value in overrides.items():
        cursor = nested
        parts = key.split(".")
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        if isinstance(value, dict) and isinstance(cursor.get(parts[-1]), dict):
            cursor[parts[-1]].update(value)
        else:
            cursor[parts[-1]] = value
    return nested


def apply_overrides(target: dict, overrides: dict, prefix: str = "") -> None:
    """Apply (dotted or nested) overrides to a plain config dict in place; unknown keys are errors."""
    for key, value in nest_dotted(overrides).items():
        if key not in target:
            raise ConfigError(f"unknown config key {prefix}{key}; valid keys: {', '.join(prefix + k for k in sorted(target))}")
        if isinstance(value, dict) and isinstance(target[key], dict):
            apply_overrides(target[key], value, f"{prefix}{key}.")
        else:
            target[key] = value


def merge(config: T, overrides: dict) -> T:
    """A copy of `config` with nested overrides applied ({'train': {'lr': 1e-3}} or {'train.lr': 1e-3})."""
    base = to_dict(config)
    apply_overrides(base, overrides)
    return from_dict(type(config), base)


MAX_CONFIG_BYTES = 16 << 20  # a config file or --set value larger than this is not a config
MAX_NESTING = 64  # deeper mappings or lists than any config has are refused (not a RecursionError)


class _PlainLoader(yaml.SafeLoader):
    """safe_load without aliases (`*a` expanding `&a` again and again: a few lines can grow to gigabytes)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"an alias (*{event.anchor}) at line {event.start_mark.line + 1}: configs are "
                                 "plain YAML, without anchors and aliases")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str):
                if key in seen:  # YAML lets the last one win silently
                    raise yaml.YAMLError(f"the key {key!r} twice at line {key_node.start_mark.line + 1}: each key once")
                seen.add(key)
        return super().construct_mapping(node, deep)


def plain_yaml(text: str, source: str):
    """YAML text -> Python values, without aliases and at most MAX_NESTING deep; ConfigError naming `source`."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: size: expected at most {MAX_CONFIG_BYTES >> 20} MB of YAML, found {len(text) >> 20} MB")
    try:
        loaded = yaml.load(text, Loader=_PlainLoader)
    except RecursionError:
        raise ConfigError(f"{source}: nesting: expected at most {MAX_NESTING} levels, found far more") from None
    check_nesting(loaded, source)
    return loaded


def check_nesting(value, source: str, depth: int = 0) -> None:
    if depth > MAX_NESTING:
        raise ConfigError(f"{source}: nesting: expected at most {MAX_NESTING} levels of mappings and lists, found more")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{source}: key {str(key)[:40]!r}: expected text keys, found {type(key).__name__}")
            check_nesting(item, source, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_nesting(item, source, depth + 1)


def parse_assignments(assignments: list[str]) -> dict:
    """['train.lr=3e-4', 'model.layers=2'] -> {'train.lr': 0.0003, 'model.layers': 2} (values parsed as YAML)."""
    parsed = {}
    for assignment in assignments:
        if "=" not in assignment:
            raise ConfigError(f"--set expects key=value, got {assignment!r}")
        key, raw = assignment.split("=", 1)
        try:
            value = plain_yaml(raw, f"--set {key.strip()[:60]}") if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        # YAML reads 3e-4 as a string (no dot); a number is what anyone writing it means
        if isinstance(value, str):
            try:
                value = float(value) if any(c in value for c in "eE.") else value
            except ValueError:
                pass
        parsed[key.strip()] = value
    return parsed


def config_dir(kind: str) -> Path:
    """The shipped YAML folder of one kind (configs/method, configs/preset, configs/experiment)."""
    from importlib import resources

    return Path(str(resources.files("semshare") / "configs" / kind))


def recipe_names() -> list[str]:
    """The shipped recipes (configs/method/NAME.yaml), read from the files: no method is imported."""
    return sorted(p.stem for p in config_dir("method").glob("*.yaml"))


def load_yaml(path: str | Path) -> dict:
    from semshare.fileio import read_bounded

    path = Path(path)
    try:
        loaded = plain_yaml(read_bounded(path, "a YAML config", MAX_CONFIG_BYTES).decode("utf-8"), str(path))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML config ({str(exc)[:300]})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: YAML: expected UTF-8 text, found other bytes (at byte {exc.start})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file holds a mapping of keys, found {type(loaded).__name__}")
    return loaded


def save_yaml(path: str | Path, config: Any) -> None:
    from semshare.fileio import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))
