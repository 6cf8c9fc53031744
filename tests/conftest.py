"""Tiny seeded fixtures shared by the tests: a synthetic dataset written once per session."""

from pathlib import Path

import pytest
from hypothesis import settings

from semshare.data.synthetic import make_synthetic, preset

# property tests draw the same examples on every run: a suite that passed does not fail later on a new draw
settings.register_profile("seeded", derandomize=True)
settings.load_profile("seeded")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("data") / "tiny", preset("tiny", seed=0), name="tiny", progress=False)


def shared_dataset(name: str) -> Path:
    """A folder of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {name!r} not found at {path} (the shared data folder sits beside the checkout)")
    return path
