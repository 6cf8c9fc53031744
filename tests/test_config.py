from dataclasses import dataclass, field

import pytest

from semshare.config import from_dict, merge, parse_assignments, to_dict
from semshare.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-4
    layers: int = 2


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    ks: tuple[int, ...] = (1, 5)
    note: str | None = None


def test_overrides_apply_and_types_are_checked():
    cfg = merge(Outer(), parse_assignments(["inner.lr=3e-4", "inner.layers=4", "ks=[10, 20]", "note=hi"]))
    assert cfg.inner.lr == pytest.approx(3e-4) and cfg.inner.layers == 4 and cfg.ks == (10, 20) and cfg.note == "hi"
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="inner.lrr.*inner.layers"):
        merge(Outer(), {"inner.lrr": 1.0})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="integer"):
        merge(Outer(), {"inner.layers": 2.5})
