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


@pytest.mark.parametrize("kind", ["faiss-binary-flat", "faiss-binary-hnsw", "faiss-binary-ivf"])
def test_binary_indexes_rank_by_hamming_distance_and_round_trip(tmp_path, kind):
    from semshare.evaluation.hamming import hamming_distances
    from semshare.index.base import build_backend, load_backend

    rng = np.random.default_rng(5)
    gallery, queries = rng.standard_normal((300, 64)).astype(np.float32), rng.standard_normal((20, 64)).astype(np.float32)
    params = {"faiss-binary-hnsw": {"m": 16}, "faiss-binary-ivf": {"nlist": 8, "nprobe": 8}}.get(kind, {})
    backend = build_backend(kind, gallery, params)
    assert backend.bytes_per_item == 8 and backend.dim == 64 and backend.size == 300
    scores, positions = backend.search(queries, 10)
    exact = hamming_distances(binary_codes(queries), binary_codes(gallery))
    expected_scores = 1 - 2 * np.sort(exact, axis=1)[:, :10] / 64
    if kind == "faiss-binary-flat":  # exact: the same distances (equal ones in FAISS's order)
        np.testing.assert_allclose(scores, expected_scores, atol=1e-6)
        np.testing.assert_allclose(scores, 1 - 2 * np.take_along_axis(exact, positions, axis=1) / 64, atol=1e-6)
    else:  # recall@10 against exact Hamming, an item at the 10th distance counts as found
        tenth = np.sort(exact, axis=1)[:, 9:10]
        found = (np.take_along_axis(exact, positions, axis=1) <= tenth).mean()
        assert found >= 0.95
    backend.save(tmp_path)
    again = load_backend(kind, tmp_path, {"nprobe": 8} if kind == "faiss-binary-ivf" else {})
    np.testing.assert_array_equal(again.search(queries, 10)[1], positions)
    np.testing.assert_array_equal(np.sign(again.vectors()), np.where(gallery > 0, 1.0, -1.0))
    with pytest.raises(Exception, match="multiple of 8 bits"):
        build_backend(kind, gallery[:, :12], params)


def test_an_index_of_codes_is_built_searched_and_served(ridge_run, tiny_data_dir, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from semshare.search.gallery import load_index
    from semshare.search.service import create_app

    if not (ridge_run / "hash").exists():
        assert main(["fit-hash", str(ridge_run), "--set", "bits=[8,16]", "--threads", "1"]) == 0
    out = tmp_path / "codes"
    assert main(["index", "build", str(ridge_run), "--side", "image", "--ranking", "hash:16", "--kind",
                 "faiss-binary-flat", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["ranking"] == "hash:16" and manifest["bytes_per_item"] == 2
    index = load_index(out)
    caption = index.run.dataset.captions[4][0]
    hits = index.search_text(caption, k=5)
    query_code = binary_codes(index.encode_text(caption)[0][None])  # the query path's projection, its signs
    gallery_codes = binary_codes(index.backend.vectors())
    distances = (gallery_codes != query_code).sum(1)
    assert [round(h.score, 6) for h in hits] == [round(1 - 2 * d / 16, 6) for d in np.sort(distances)[:5]]
    capsys.readouterr()
    assert main(["search", str(out), "--text", caption, "-k", "3"]) == 0
    assert "ranking: hash:16 (16-bit codes of the label space)" in capsys.readouterr().out
    client = TestClient(create_app(index))
    assert client.post("/search", json={"text": caption, "k": 5}).json()["results"][0]["id"] == hits[0].id
    assert main(["index", "build", str(ridge_run), "--side", "image", "--ranking", "hash:24", "--kind",
                 "faiss-binary-flat", "--out", str(tmp_path / "none")]) == 2
    assert "no 24-bit codes" in capsys.readouterr().err


def test_evaluate_scores_a_runs_codes_as_fit_hash_reported(ridge_run, capsys):
    if not (ridge_run / "hash").exists():
        assert main(["fit-hash", str(ridge_run), "--set", "bits=[8,16]", "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(ridge_run), "--ranking", "hash:16"]) == 0
    printed = capsys.readouterr().out
    assert "hash:16: Hamming ranking on the test split" in printed
    table = json.loads((ridge_run / "eval_test_hash16.json").read_text())
    record = json.loads((ridge_run / "hash" / "hash.json").read_text())
    assert table["ave/mAP@all"] == pytest.approx(record["test"]["16"]["ave/mAP@all"], abs=1e-12)
    assert 0 <= table["ave/P@r2"] <= 1
