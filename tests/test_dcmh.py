"""DCMH (issue 35): the objective's terms, gradients, learning on tiny data, and its codes through fit-hash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semshare.cli.main import main
from semshare.methods.dcmh import dcmh_side_loss


def test_the_objective_terms_match_their_definitions_and_give_gradients():
    torch.manual_seed(0)
    f = torch.randn(4, 8, requires_grad=True)
    g_all, f_rest = torch.randn(10, 8), torch.randn(8)
    codes = torch.sign(torch.randn(4, 8))
    similar = (torch.rand(4, 10) < 0.4).float()
    terms = dcmh_side_loss(f, g_all, codes, similar, f_rest, gamma=0.5, eta=2.0, total_items=10)
    theta = 0.5 * f.detach() @ g_all.T
    naive = sum(float(np.log1p(np.exp(theta[i, j].item())) - similar[i, j] * theta[i, j].item())
                for i in range(4) for j in range(10)) / 40
    assert terms["likelihood"].item() == pytest.approx(naive, rel=1e-5)
    assert terms["quantisation"].item() == pytest.approx(((codes - f.detach()) ** 2).sum().item() / 40, rel=1e-6)
    assert terms["balance"].item() == pytest.approx((f.detach().sum(0) ** 2).sum().item() / 4 / 40, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(terms["likelihood"].item() + 0.5 * terms["quantisation"].item()
                                                + 2.0 * terms["balance"].item(), rel=1e-6)
    terms["loss"].backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_dcmh_learns_and_its_signs_are_its_codes(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "dcmh", "--out", str(run), "--threads", "1",
                 "--set", "models.dcmh.bits=16", "--set", "models.dcmh.hidden_dim=64", "--set", "train.epochs=8",
                 "--set", "train.progress=false", "--set", "text.word_dim=8"]) == 0
    losses = [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in json.loads(line)]
    assert losses[-1] < losses[0]
    result = json.loads((run / "best" / "state.json").read_text())
    assert result["best_metric"] > 0
    capsys.readouterr()
    assert main(["fit-hash", str(run), "--set", "bits=[16]", "--set", "kinds=[sign,itq]", "--threads", "1"]) == 0
    record = json.loads((run / "hash" / "hash.json").read_text())
    assert set(record["validation"]["16"]) == {"sign", "itq"}
    assert main(["fit-hash", str(run), "--set", "bits=[8]", "--set", "kinds=[sign]", "--overwrite"]) == 2
    assert "the codes are the embedding's 16 signs" in capsys.readouterr().err


def test_semantic_sharing_hashing_trains_codes_through_the_shared_classifier(tiny_data_dir, tmp_path, capsys):
    from semshare.training.experiment import load_run

    run = tmp_path / "ss-hash"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "ours_hash", "--out", str(run), "--threads", "1",
                 "--set", "models.semantic_sharing.hash_bits=16", "--set", "models.semantic_sharing.dim=16",
                 "--set", "models.semantic_sharing.heads=2", "--set", "models.semantic_sharing.layers=1",
                 "--set", "train.epochs=6", "--set", "train.progress=false", "--set", "text.word_dim=8"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "train/quantisation_image" in r]
    assert steps and all(np.isfinite(r["train/loss"]) for r in steps)
    assert steps[-1]["train/label_image"] < steps[0]["train/label_image"]  # the classifier learns from the codes
    loaded = load_run(run, ranking="label")
    emb = loaded.encode_images(rows=[0, 1, 2])
    assert emb.shape == (3, 16)
    raw = loaded.embed(np.arange(5), sides=("image",))[0].emb
    assert np.abs(raw).max() <= 1.0  # tanh: the codes' relaxation
    probabilities = loaded.predict_labels(images=[0, 1])  # the shared classifier reads the codes' relaxation
    assert probabilities.shape == (2, loaded.dataset.num_labels) and ((0 <= probabilities) & (probabilities <= 1)).all()
    capsys.readouterr()
    assert main(["fit-hash", str(run), "--set", "bits=[16]", "--set", "kinds=[sign,itq]", "--threads", "1"]) == 0
    assert "| 16 |" in capsys.readouterr().out
    assert main(["train", "--data", str(tiny_data_dir), "--method", "ours_hash", "--out", str(tmp_path / "bad"),
                 "--set", "models.semantic_sharing.classifier=label-graph"]) == 2
