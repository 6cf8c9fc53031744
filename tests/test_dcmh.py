"""DCMH (issue 35): the objective's terms, gradients, learning on tiny data, and its codes through fit-hash."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semshare.cli.main import main
from semshare.methods.dcmh import dcmh_loss


def test_the_objective_terms_match_their_definitions_and_give_gradients():
    torch.manual_seed(0)
    f, g = torch.randn(6, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [0, 1]], dtype=torch.float32)
    terms = dcmh_loss(f, g, labels, gamma=0.5, eta=2.0)
    similar = (labels @ labels.T > 0).float()
    theta = 0.5 * f @ g.T
    naive = sum(float(np.log1p(np.exp(theta[i, j].item())) - similar[i, j] * theta[i, j].item())
                for i in range(6) for j in range(6)) / 36
    assert terms["likelihood"].item() == pytest.approx(naive, rel=1e-5)
    codes = torch.sign(f + g).detach()
    assert terms["quantisation"].item() == pytest.approx((((codes - f) ** 2).mean() + ((codes - g) ** 2).mean()).item())
    assert terms["loss"].item() == pytest.approx(terms["likelihood"].item() + 0.5 * terms["quantisation"].item()
                                                + 2.0 * terms["balance"].item(), rel=1e-6)
    terms["loss"].backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and g.grad.abs().sum() > 0


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
