"""Every YAML in configs/ composes with every method and builds."""

from pathlib import Path

import pytest

from semshare.training.recipes import config_dir, known_methods, recipe_names, resolve_config

REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(config_dir("experiment").glob("*.yaml"))


def test_the_repository_configs_are_the_shipped_ones():
    assert sorted(p.name for p in (REPO_CONFIGS / "method").glob("*.yaml")) == [f"{n}.yaml" for n in recipe_names()]
    assert EXPERIMENTS and (REPO_CONFIGS / "preset" / "small.yaml").exists()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
@pytest.mark.parametrize("method", known_methods())
def test_experiment_configs_compose_with_every_method(path, method):
    cfg = resolve_config(method, "small", config_file=path)
    assert cfg.name == method and isinstance(cfg.model, cfg.method_class.config_class)


@pytest.mark.parametrize("preset", ["small", "paper"])
@pytest.mark.parametrize("method", recipe_names())
def test_every_recipe_composes_with_every_preset(method, preset):
    cfg = resolve_config(method, preset)
    assert cfg.row_name and cfg.preset == preset


def test_a_preset_sizes_only_its_own_method():
    assert resolve_config("ours", "small").model.dim == 128
    assert resolve_config("dscmr", "small").model.hidden_dim == 256
    assert resolve_config("dscmr", "paper").model.hidden_dim == 1024


def test_unknown_names_list_the_known_ones():
    from semshare.errors import ConfigError

    with pytest.raises(ConfigError, match="known: .*dscmr"):
        resolve_config("dscrm")
    with pytest.raises(ConfigError, match="unknown config key model.hidden_dim"):
        resolve_config("ours", overrides={"model.hidden_dim": 3})
    with pytest.raises(ConfigError, match="may not change it"):
        resolve_config("ours", overrides={"method": "dscmr"})


def test_per_method_overrides_apply_to_their_method_only():
    overrides = {"models.semantic_sharing.dim": 48, "models.dscmr.common_dim": 12}
    assert resolve_config("st", overrides=overrides).model.dim == 48
    assert resolve_config("dscmr", overrides=overrides).model.common_dim == 12


@pytest.mark.parametrize("preset", ["small", "paper"])
def test_presets_build_a_model(preset, tiny_data_dir, tmp_path):
    from semshare.data.dataset import open_dataset
    from semshare.training.experiment import prepare_run

    run = prepare_run(open_dataset(tiny_data_dir), resolve_config("ours", preset, overrides={"text.word2vec_epochs": 1}), tmp_path)
    assert sum(p.numel() for p in run.model.parameters()) > 0
