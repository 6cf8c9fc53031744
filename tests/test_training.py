"""The one loop: it learns, resumes exactly, and gives the same weights on 2 processes as on 1."""

import json
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from semshare.data.dataset import open_dataset
from semshare.training.experiment import train_experiment
from semshare.training.recipes import resolve_config

from test_model import TINY_MODEL

FAST = {**TINY_MODEL, "train.progress": False, "train.lr": 3e-3, "model.loss.mask_prob": 0.3}


def weights(path):
    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def learnable_data_dir(tmp_path_factory):
    from semshare.data.synthetic import make_synthetic, preset

    cfg = preset("tiny", num_items=400, val_items=80, test_items=20, image_strength=0.9)
    return make_synthetic(tmp_path_factory.mktemp("learnable") / "d", cfg, progress=False)


def test_loss_falls_and_validation_beats_random(learnable_data_dir, tmp_path):
    cfg = resolve_config("ours", "small", overrides={**FAST, "train.epochs": 8, "train.patience": 0,
                                                     "train.batch_size": 16, "train.log_every": 1})
    state = train_experiment(open_dataset(learnable_data_dir), cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    best = next(r for r in records if r.get("epoch") == state.best_epoch and "val/ave/mAP@all" in r)
    # a random ranking on the same split, scored by the same code
    from semshare.evaluation.protocols import EmbeddingTable, evaluate_rows

    ds = open_dataset(learnable_data_dir)
    val = ds.split("val")
    items = ds.text_items(val)
    rng = np.random.default_rng(0)
    random_map = [evaluate_rows(ds, EmbeddingTable(val, rng.standard_normal((len(val), 8))),
                                EmbeddingTable(items.item_ids, rng.standard_normal((len(items.rows), 8))),
                                val)["ave/mAP@all"] for _ in range(5)]
    assert best["val/ave/mAP@all"] > max(random_map) + 0.1
    assert (tmp_path / "run" / "best" / "model.safetensors").exists()


def test_two_steps_plus_resume_two_equals_four_steps(tiny_data_dir, tmp_path):
    base = {**FAST, "model.dropout": 0.1, "train.epochs": 5}  # dropout on: the RNG state must resume too
    straight = resolve_config("ours", "small", overrides={**base, "train.max_steps": 4})
    train_experiment(open_dataset(tiny_data_dir), straight, tmp_path / "straight")
    first = resolve_config("ours", "small", overrides={**base, "train.max_steps": 2})
    train_experiment(open_dataset(tiny_data_dir), first, tmp_path / "resumed")
    state = train_experiment(open_dataset(tiny_data_dir), straight, tmp_path / "resumed", resume=True,
                             allow_change=("train.max_steps",))
    assert state.step == 4
    a, b = weights(tmp_path / "straight" / "last"), weights(tmp_path / "resumed" / "last")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_resume_across_an_epoch_boundary(tiny_data_dir, tmp_path):
    # 80 train items / batch 8 = 10 steps per epoch: stop at 12, resume to 14 vs straight to 14
    base = {**FAST, "train.epochs": 5}
    straight = resolve_config("ours", "small", overrides={**base, "train.max_steps": 14})
    train_experiment(open_dataset(tiny_data_dir), straight, tmp_path / "straight")
    train_experiment(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides={**base, "train.max_steps": 12}),
                     tmp_path / "resumed")
    train_experiment(open_dataset(tiny_data_dir), straight, tmp_path / "resumed", resume=True, allow_change=("train.max_steps",))
    a, b = weights(tmp_path / "straight" / "last"), weights(tmp_path / "resumed" / "last")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world_size, port, data_dir, run_dir, overrides):
    import torch.distributed as dist

    from semshare.training.loop import DistributedContext

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        cfg = resolve_config("ours", "small", overrides=overrides)
        train_experiment(open_dataset(data_dir), cfg, run_dir, context=DistributedContext(rank, world_size, rank))
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_one_process(tiny_data_dir, tmp_path):
    # SGD: Adam divides by sqrt(v), which turns rounding noise in analytically-zero gradients (the attention
    # key bias) into full-size steps; SGD keeps float differences at float size
    overrides = {**FAST, "train.epochs": 1, "train.max_steps": 3, "train.batch_size": 16, "train.optimizer": "sgd",
                 "train.lr": 0.05}
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tiny_data_dir), str(tmp_path / "ddp"), overrides),
                                nprocs=2, join=True)
    train_experiment(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides=overrides), tmp_path / "single")
    a, b = weights(tmp_path / "single" / "last"), weights(tmp_path / "ddp" / "last")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_loop_reads_losses_on_the_host_only_at_log_steps_and_epoch_ends(tiny_data_dir, tmp_path, monkeypatch):
    import semshare.training.loop as loop

    reads = []
    real = loop.read_losses
    monkeypatch.setattr(loop, "read_losses", lambda losses, norm, step: reads.append(step) or real(losses, norm, step))
    cfg = resolve_config("ours", "small", overrides={**FAST, "train.epochs": 2, "train.log_every": 3})
    state = train_experiment(open_dataset(tiny_data_dir), cfg, tmp_path / "run")
    per_epoch = state.step // 2
    log_steps = {1} | set(range(3, state.step + 1, 3))
    assert sorted(set(reads)) == sorted(log_steps | {per_epoch, 2 * per_epoch})
    assert len(reads) == len(log_steps) + 2  # one read per log step, one per epoch end


def test_a_non_finite_loss_stops_the_run_before_it_is_saved(tiny_data_dir, tmp_path, monkeypatch):
    import semshare.training.loop as loop

    real = loop.train_step

    def poisoned(model, setup, batch, cfg, lr):
        losses, norm = real(model, setup, batch, cfg, lr)
        return {**losses, "loss": torch.tensor(float("nan"))}, norm

    monkeypatch.setattr(loop, "train_step", poisoned)
    cfg = resolve_config("ours", "small", overrides={**FAST, "train.epochs": 1, "train.log_every": 1000})
    with pytest.raises(FloatingPointError, match="try a lower train.lr"):
        train_experiment(open_dataset(tiny_data_dir), cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "last").exists() and not (tmp_path / "run" / "best").exists()


def test_metrics_csv_tensorboard_and_the_plot_command(tiny_data_dir, tmp_path, capsys):
    import csv

    from semshare.cli.main import main

    runs = []
    for seed in (0, 1):
        run = tmp_path / f"run{seed}"
        overrides = ["--set", f"train.seed={seed}", "--set", "train.epochs=2", "--set", "train.log_every=2",
                     "--set", "train.tensorboard=true", "--set", "train.progress=false",
                     "--set", "models.semantic_sharing.dim=16", "--set", "models.semantic_sharing.heads=2",
                     "--set", "text.word2vec_epochs=1", "--set", "text.word_dim=8"]
        assert main(["train", "--data", str(tiny_data_dir), "--method", "ours", "--out", str(run), *overrides]) == 0
        runs.append(run)
    records = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    with open(runs[0] / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(records)
    for record, row in zip(records, rows):
        for key, value in record.items():
            assert float(row[key]) == pytest.approx(float(value))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs[0] / "tensorboard"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    expected = [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    np.testing.assert_allclose([v for _, v in logged], [v for _, v in expected], rtol=1e-6)
    assert "val/ave/NDCG@500" in events.Tags()["scalars"]
    png = tmp_path / "curves.png"
    assert main(["plot", str(runs[0]), str(runs[1]), "--out", str(png), "--metric", "ave/mAP@all"]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and "2 runs" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "nowhere"), "--out", str(png)]) == 2


def test_prefetching_batches_changes_nothing_the_run_learns(tiny_data_dir, tmp_path):
    """A prefetch thread builds the same batches in the same order: weights equal to building them in the
    step, and a run saved with another prefetch depth resumes (the setting is result-neutral)."""
    base = {**FAST, "model.dropout": 0.1, "train.epochs": 2, "train.max_steps": 12}
    for depth in (0, 3):
        cfg = resolve_config("ours", "small", overrides={**base, "train.prefetch_batches": depth})
        train_experiment(open_dataset(tiny_data_dir), cfg, tmp_path / f"depth{depth}")
    a, b = weights(tmp_path / "depth0" / "last"), weights(tmp_path / "depth3" / "last")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    longer = resolve_config("ours", "small", overrides={**base, "train.max_steps": 14, "train.prefetch_batches": 1})
    state = train_experiment(open_dataset(tiny_data_dir), longer, tmp_path / "depth0", resume=True, allow_change=("train.max_steps",))
    assert state.step == 14


def test_auto_prefetch_builds_ahead_on_cuda_or_with_a_spare_core(monkeypatch):
    from semshare.training import loop

    monkeypatch.setattr(loop.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for threads, device, depth in ((2, "cpu", 0), (1, "cpu", 2), (2, "cuda", 2)):
        monkeypatch.setattr(loop.torch, "get_num_threads", lambda threads=threads: threads)
        assert loop.auto_prefetch_depth(torch.device(device)) == depth, (threads, device)


def test_the_prefetch_thread_keeps_order_raises_errors_and_stops_when_left():
    import threading

    from semshare.training.loop import prefetched

    assert list(prefetched(iter(range(50)), 2)) == list(range(50))
    assert list(prefetched(iter(range(5)), 0)) == list(range(5))

    def failing():
        yield 1
        raise ValueError("bad row 7")

    with pytest.raises(ValueError, match="bad row 7"):
        list(prefetched(failing(), 2))
    items = prefetched(iter(range(10**6)), 2)
    assert next(items) == 0
    items.close()  # what a loop that breaks early does
    assert not any(t.name == "semshare-prefetch" for t in threading.enumerate())


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizers_are_fused_and_step_like_the_per_parameter_loop(name):
    """build_optimizer asks for torch's fused kernel (one call over every parameter); its updates equal the
    per-parameter loop's to float rounding over a few steps."""
    from semshare.training.loop import TrainConfig, build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    reference = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    reference.load_state_dict(model.state_dict())
    initial = model[0].weight.detach().clone()
    cfg = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.01)
    fused = build_optimizer(model, cfg)
    assert fused.defaults.get("fused") is True
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    extra = {"momentum": 0.9} if name == "sgd" else {}
    loop = classes[name](reference.parameters(), lr=0.01, weight_decay=0.01, foreach=False, **extra)
    inputs = torch.randn(16, 7)
    for _ in range(5):
        for net, optimizer in ((model, fused), (reference, loop)):
            optimizer.zero_grad()
            net(inputs).pow(2).mean().backward()
            optimizer.step()
    for got, expected in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (model[0].weight - initial).abs().max() > 1e-3  # the steps did move the weights


@pytest.mark.parametrize("saved_fused", [False, True])
def test_a_checkpoint_resumes_into_the_optimizer_kernel_this_torch_uses(tmp_path, saved_fused):
    """Whether the saved run's optimizer was fused is not state: the resumed optimizer keeps its own kernel
    flag, and its first step continues the saved moments exactly as the saving optimizer would have."""
    from semshare.training.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    inputs = torch.randn(8, 4)

    def step(optimizer):
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()
        optimizer.step()

    saving = torch.optim.Adam(model.parameters(), lr=0.01, fused=saved_fused)
    step(saving)
    save_checkpoint(tmp_path / "ckpt", model, saving, {"step": 1})
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    step(saving)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(weights)
    resumed = torch.optim.Adam(model.parameters(), lr=0.01, fused=not saved_fused)
    load_checkpoint(tmp_path / "ckpt", model, resumed)
    assert resumed.param_groups[0]["fused"] is (not saved_fused)
    step(resumed)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)


def test_a_validation_split_too_small_to_select_on_is_said(tmp_path, caplog):
    """issue 32: selecting a checkpoint on a handful of validation items is warned about, with the count."""
    import logging

    from semshare.data.dataset import open_dataset
    from semshare.data.synthetic import make_synthetic, preset
    from semshare.training.experiment import train_experiment
    from semshare.training.recipes import resolve_config

    make_synthetic(tmp_path / "data", preset("tiny", val_items=4))
    overrides = {"train.epochs": 1, "train.batch_size": 16, "models.semantic_sharing.dim": 16,
                 "models.semantic_sharing.heads": 2, "text.word2vec_epochs": 1, "train.progress": False}
    with caplog.at_level(logging.WARNING, logger="semshare.training.experiment"):
        train_experiment(open_dataset(tmp_path / "data"), resolve_config("ours", "small", overrides=overrides),
                         tmp_path / "run")
    assert any("the validation split has 4 items" in r.getMessage() for r in caplog.records)


def test_a_batch_larger_than_the_training_set_takes_all_of_it_with_a_note(tiny_data_dir, tmp_path, caplog):
    import json as _json

    from semshare.cli.main import main as cli_main
    from semshare.training.experiment import fitted_batch_size

    assert fitted_batch_size(32, 20) == 20 and fitted_batch_size(32, 40) == 32 and fitted_batch_size(64, 21, 2) == 20
    run = tmp_path / "run"
    with caplog.at_level("WARNING"):
        assert cli_main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--set", "train.batch_size=100000",
                         "--set", "train.epochs=2", "--set", "train.progress=false", "--set", "models.semantic_sharing.dim=16",
                         "--set", "models.semantic_sharing.heads=2", "--set", "text.word_dim=8"]) == 0
    assert "train.batch_size 100000 is more than its" in caplog.text
    state = _json.loads((run / "last" / "state.json").read_text())
    assert state["step"] == 2  # one step an epoch: all training items in each
