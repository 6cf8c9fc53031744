"""The hashing stage (issue 35): ITQ and the supervised hash layer on a run's frozen embeddings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.evaluation.hamming import binary_codes
from semshare.training.hash_stage import HashConfig, fit_itq, fit_supervised, load_hash_projection


@pytest.fixture(scope="module")
def ridge_run(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("hash") / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "ridge", "--out", str(run), "--threads", "1"]) == 0
    return run


def test_itq_rotation_lowers_the_quantisation_error_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 12)) @ rng.standard_normal((12, 12))
    weight, bias = fit_itq(x, 8, iterations=50, seed=3)
    projected = x @ weight + bias
    error = ((np.sign(projected) - projected) ** 2).mean()
    first_weight, first_bias = fit_itq(x, 8, iterations=0, seed=3)
    start = x @ first_weight + first_bias
    assert error < ((np.sign(start) - start) ** 2).mean()  # the rotation did its job
    np.testing.assert_array_equal(weight, fit_itq(x, 8, iterations=50, seed=3)[0])
    assert abs(binary_codes(projected).mean() - 0.5) < 0.1  # centred: about half the bits on
    wide, _ = fit_itq(x, 32, iterations=5, seed=1)  # more bits than dimensions: a lift, then the rotation
    assert wide.shape == (12, 32)


def test_the_supervised_hash_layer_learns_label_sharing_codes():
    rng = np.random.default_rng(1)
    labels = np.eye(4)[rng.integers(0, 4, 300)]
    centres = rng.standard_normal((4, 10))
    img = labels @ centres + 0.3 * rng.standard_normal((300, 10))
    txt = labels @ centres + 0.3 * rng.standard_normal((300, 10))
    (wi, ci), (wt, ct) = fit_supervised(img, txt, labels, labels, 16, HashConfig(epochs=30, batch_size=64))
    codes_i, codes_t = binary_codes(img @ wi + ci), binary_codes(txt @ wt + ct)
    distance = (codes_i[:, None, :] != codes_t[None, :, :]).sum(-1)
    same = labels @ labels.T > 0
    assert distance[same].mean() + 4 < distance[~same].mean()  # shared labels: far closer codes
    again = fit_supervised(img, txt, labels, labels, 16, HashConfig(epochs=30, batch_size=64))
    np.testing.assert_array_equal(again[0][0], wi)  # seeded


def test_fit_hash_writes_codes_that_beat_chance_and_load_back(ridge_run, tiny_data_dir, capsys):
    assert main(["fit-hash", str(ridge_run), "--set", "bits=[8,16]", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| 8 |" in printed and "| 16 |" in printed
    record = json.loads((ridge_run / "hash" / "hash.json").read_text())
    assert set(record["chosen"]) == {"8", "16"}
    assert record["made_by"]["run_id"] == json.loads((ridge_run / "identity.json").read_text())["run_id"]
    # chance: the share of relevant pairs (what a random ranking's AP approaches)
    from semshare.data.dataset import open_dataset

    dataset = open_dataset(tiny_data_dir)
    labels = np.asarray(dataset.labels, dtype=float)[dataset.split("test")]
    chance = float((labels @ labels.T > 0).mean())
    assert record["test"]["16"]["ave/mAP@all"] > chance + 0.1
    projection = load_hash_projection(ridge_run, 16)
    assert projection.image[0].shape[1] == 16
    assert main(["fit-hash", str(ridge_run), "--set", "bits=[8]"]) == 2  # never replaced without --overwrite
    assert main(["fit-hash", str(ridge_run), "--set", "bits=[0]"]) == 2
    assert "--bits: expected code lengths in 1..1024" in capsys.readouterr().err
