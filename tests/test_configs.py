"""Every YAML in configs/ composes with every method and builds."""

from pathlib import Path

import pytest

from semshare.training.experiment import METHOD_PRESETS, resolve_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize("method", sorted(METHOD_PRESETS))
def test_config_composes(path, method):
    cfg = resolve_config(method, "small", config_file=path)
    assert cfg.method == method


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_presets_build_a_model(preset, tiny_data_dir, tmp_path):
    from semshare.training.experiment import prepare_run

    run = prepare_run(tiny_data_dir, resolve_config("ours", preset, overrides={"text.word2vec_epochs": 1}), tmp_path)
    assert sum(p.numel() for p in run.model.parameters()) > 0
