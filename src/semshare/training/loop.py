"""The one training loop of the methods. It owns devices, AMP, clipping, LR schedule, validation, early
stopping, checkpoints (through training/checkpoint.py's Checkpointer) and logs, and knows nothing about any
method: a method is an nn.Module whose `forward(batch)` returns `training_step(batch)`, a dict of named
losses with the total under "loss". What is fitted after a run on its fixed features (the closed-form
methods, the instance head's two linear maps) is not a method's training and does not go through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from semshare.fileio import atomic_file, atomic_write_text
from semshare.progress import logs_through, progress_bar
from semshare.names import LAST
from semshare.training.checkpoint import (Checkpointer, TrainState, checkpoint_exists, load_checkpoint,
                                         read_checkpoint_metadata)
from semshare.names import SELECTION_METRIC

logger = logging.getLogger(__name__)


# the values of TrainConfig's choice fields, checked once where a config is parsed (training.recipes.check_values)
OPTIMIZERS = ("adam", "adamw", "sgd")
DECAYS = ("none", "linear", "cosine")
PRECISIONS = ("auto", "fp32", "bf16")

@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 45
    max_steps: int = 0  # > 0 stops after this many optimizer steps (a later --resume may raise it)
    batch_size: int = 64  # global: split evenly over processes
    lr: float = 1e-4
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9)
    weight_decay: float = 0.0
    grad_clip: float = 2.0  # max gradient norm; 0 = off
    warmup_steps: int = 0
    decay: str = "none"  # none | linear | cosine (to 0 at the last step)
    patience: int = 5  # stop after this many validations without improvement; 0 = never
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16 (CPUs with bf16 matrix units too)
    seed: int = 0
    val_fraction: float = 0.1  # carved from train (seeded) when the data has no val split
    log_every: int = 10
    # batches built ahead of the step by a background thread (0: built in the step); -1 = auto: 2 on CUDA
    # (the host idles while the GPU steps) and on a CPU with a core beyond torch's threads; 0 where torch's
    # threads fill every core (2 cores: the thread competes with them, 4 wins in 13 paired runs once batches
    # got cheaper; docs/PERFORMANCE.md)
    prefetch_batches: int = -1
    progress: bool = True
    tensorboard: bool = False  # also write TensorBoard event files to RUN/tensorboard (the tensorboard extra)


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, context: DistributedContext = DistributedContext()) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{context.local_rank}" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer `cfg.optimizer` names (one of OPTIMIZERS: checked once, where the config is parsed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    options = {"adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {}), "sgd": (torch.optim.SGD, {"momentum": 0.9})}
    optimizer_class, extra = options[cfg.optimizer]
    try:  # one fused kernel over every parameter, not a Python loop over them: 0.7 vs 4.1 ms a small-model step
        return optimizer_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True, **extra)
    except (RuntimeError, TypeError):  # a device, dtype or torch version without a fused kernel
        return optimizer_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **extra)


def learning_rate(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """LR for the optimizer step about to be taken (a pure function of the step: nothing to checkpoint)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.decay == "none" or total_steps <= cfg.warmup_steps:
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    if cfg.decay == "linear":
        return cfg.lr * max(0.0, 1.0 - progress)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))  # cosine: DECAYS are checked on parse


class MetricsLog:
    """metrics.jsonl (one JSON object per line, appended), metrics.csv (the same records as a table,
    rewritten at each epoch end) and, with `tensorboard`, TensorBoard event files in RUN/tensorboard.
    Main process only (path None elsewhere)."""

    def __init__(self, path: Path | None, tensorboard: bool = False):
        self.path = path
        self.records: list[dict] = []
        if path is not None and path.exists():  # a resumed run: the table keeps the earlier records
            self.records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        self.writer = None
        if path is not None and tensorboard:
            self.writer = _tensorboard_writer(path.parent / "tensorboard")

    def write(self, record: dict) -> None:
        if self.path is None:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.records.append(record)
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, global_step=record["step"])

    def flush(self) -> None:
        """Rewrite metrics.csv from every record (columns: union of keys, in first-seen order)."""
        if self.path is None:
            return
        write_metrics_csv(self.path.with_suffix(".csv"), self.records)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


def truncate_metrics(path: Path, step: int | None) -> None:
    """Keep the records up to `step` (a resume), or none (a fresh start), so the log has one history."""
    if not path.exists():
        return
    kept = []
    if step is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and _record_step(line) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _record_step(line: str) -> float:
    try:
        return float(json.loads(line).get("step", math.inf))
    except (json.JSONDecodeError, AttributeError):
        return math.inf  # a half-written last line of a killed run


def write_metrics_csv(path: Path, records: list[dict]) -> None:
    import csv

    columns = list(dict.fromkeys(key for record in records for key in record))
    with atomic_file(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(records)


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from semshare.errors import ConfigError

        raise ConfigError("train.tensorboard=true needs the tensorboard package: pip install 'semshare[tensorboard]'") from None
    return SummaryWriter(log_dir=str(folder))


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def prefetched(items: Iterator, depth: int) -> Iterator:
    """The items of `items`, each built up to `depth` ahead by a background thread (0: built on demand).

    Batch building is NumPy work on memory maps that mostly runs outside the GIL, so it overlaps the
    model's step; order and content are those of `items` (every random draw is seeded per item).
    An error in the thread is raised here; leaving early stops the thread."""
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as error:  # handed to the consumer, which raises it
            put(_Failed(error))

    worker = threading.Thread(target=work, name="semshare-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is end:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()


@dataclass
class LoopSetup:
    """What the loop builds once per run."""

    device: torch.device
    train_model: nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    autocast: contextlib.AbstractContextManager
    total_steps: int
    steps_per_epoch: int
    prefetch_batches: int = 0


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_prefetch_depth(device: torch.device) -> int:
    """2 batches ahead where the thread has something to overlap without contention, else 0."""
    spare_core = usable_cores() > torch.get_num_threads()
    return 2 if device.type == "cuda" or spare_core else 0


def setup_loop(model: nn.Module, batches, cfg: TrainConfig, context: DistributedContext) -> LoopSetup:
    device = resolve_device(cfg.device, context)
    model.to(device)
    if context.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model: nn.Module = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    else:
        train_model = model
    steps_per_epoch = batches.steps_per_epoch()
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total_steps = min(total_steps, cfg.max_steps)
    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    autocast = (torch.autocast(device_type=device.type, dtype=torch.bfloat16) if use_bf16
                else contextlib.nullcontext())
    prefetch = cfg.prefetch_batches if cfg.prefetch_batches >= 0 else auto_prefetch_depth(device)
    return LoopSetup(device, train_model, build_optimizer(model, cfg), autocast, total_steps, steps_per_epoch, prefetch)


def train_step(model: nn.Module, loop: LoopSetup, batch, cfg: TrainConfig, lr: float) -> tuple[dict, torch.Tensor]:
    """One optimizer step; returns the losses and the gradient norm as device tensors (no host sync)."""
    model.train()
    for group in loop.optimizer.param_groups:
        group["lr"] = lr
    with loop.autocast:
        losses = loop.train_model(batch)
    loop.optimizer.zero_grad(set_to_none=True)
    losses["loss"].backward()
    grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0
                 else torch.zeros((), device=loop.device))
    loop.optimizer.step()
    return {k: v.detach() for k, v in losses.items()}, grad_norm.detach()


def read_losses(losses: dict, grad_norm: torch.Tensor, step: int) -> tuple[dict[str, float], float]:
    """The host read of one step's values (a device sync: only at log steps and epoch ends)."""
    values = {k: float(v) for k, v in losses.items()}
    norm = float(grad_norm)
    if not (math.isfinite(values["loss"]) and math.isfinite(norm)):
        raise FloatingPointError(f"loss {values['loss']:.4g}, gradient norm {norm:.4g} at step {step}; "
                                 "try a lower train.lr")
    return values, norm


def log_step(log: MetricsLog, progress, losses: dict, grad_norm: torch.Tensor, state: TrainState, epoch: int,
             lr: float, items_per_s: float) -> None:
    """Write one metrics record (and the bar's postfix)."""
    values, norm = read_losses(losses, grad_norm, state.step)
    progress.set_postfix(loss=f"{values['loss']:.4f}", items_s=f"{items_per_s:.0f}", epoch=epoch + 1)  # as the log
    log.write({"step": state.step, "epoch": epoch, "lr": lr, "grad_norm": norm, "items_per_s": items_per_s,
               **{f"train/{k}": v for k, v in values.items()}})


@dataclass
class EpochRunner:
    """What the epochs of one `fit` share: the model and its batches, validation and its metric, the loop's
    optimizer and schedule, the log, the bar and the checkpointer."""

    model: nn.Module
    batches: object
    validate: Callable[[nn.Module], dict[str, float]]
    cfg: TrainConfig
    loop: LoopSetup
    log: MetricsLog
    progress: object
    checkpoints: Checkpointer
    context: DistributedContext
    selection_metric: str = SELECTION_METRIC


def end_epoch(runner: EpochRunner, state: TrainState, summary: str = ":") -> None:
    """Validate, select `best` on the validation split, count towards early stopping; one log line says how
    the epoch went (`summary`: its training loss and speed), the line a log file gets instead of a bar."""
    state.epoch += 1
    state.step_in_epoch = 0
    runner.model.eval()
    metrics = runner.validate(runner.model)
    score = metrics[runner.selection_metric]
    if score > state.best_metric:
        state.best_metric, state.best_epoch, state.validations_without_improvement = score, state.epoch, 0
        runner.checkpoints.save_best(state)
    else:
        state.validations_without_improvement += 1
    if runner.cfg.patience and state.validations_without_improvement >= runner.cfg.patience:
        state.stopped_early = True
    runner.log.write({"step": state.step, "epoch": state.epoch, **{f"val/{k}": v for k, v in metrics.items()},
                      "best_epoch": state.best_epoch})
    runner.log.flush()
    logger.info("epoch %d%s val %s %.4f (best %.4f at epoch %d)", state.epoch, summary, runner.selection_metric, score,
                state.best_metric, state.best_epoch)


def resume_state(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> TrainState:
    from safetensors import SafetensorError

    try:
        saved_optimizer = read_checkpoint_metadata(folder).get("config", {}).get("train", {}).get("optimizer", cfg.optimizer)
    except (SafetensorError, OSError, ValueError, AttributeError):  # load_checkpoint below names what is wrong
        saved_optimizer = cfg.optimizer
    if saved_optimizer != cfg.optimizer:  # allowed by --allow-change train.optimizer: another optimizer's moments
        logger.info("the optimizer changed (%s -> %s): it starts with fresh state", saved_optimizer, cfg.optimizer)
        optimizer = None
    state = TrainState.from_record(load_checkpoint(folder, model, optimizer, restore_rng=True))
    logger.info("resumed from %s at step %d (epoch %d)", folder, state.step, state.epoch)
    return state


def _train_epochs(runner: EpochRunner, state: TrainState) -> None:
    """The steps and epoch ends until the run is done; `state` is updated in place."""
    model, cfg, loop, progress = runner.model, runner.cfg, runner.loop, runner.progress
    started, items_seen = time.perf_counter(), 0
    total_epochs = math.ceil(loop.total_steps / max(1, loop.steps_per_epoch))
    while state.step < loop.total_steps and not state.stopped_early:
        epoch = state.epoch
        model.on_epoch_start(epoch)
        losses, grad_norm = None, None
        for batch in prefetched(runner.batches.epoch(epoch, start_step=state.step_in_epoch), loop.prefetch_batches):
            lr = learning_rate(cfg, state.step, loop.total_steps)
            losses, grad_norm = train_step(model, loop, batch.to(loop.device), cfg, lr)
            state.step += 1
            state.step_in_epoch += 1
            items_seen += len(batch) * runner.context.world_size
            progress.update(1)
            if state.step % cfg.log_every == 0 or state.step == 1:
                items_per_s = items_seen / max(1e-9, time.perf_counter() - started)
                log_step(runner.log, progress, losses, grad_norm, state, epoch, lr, items_per_s)
            if state.step >= loop.total_steps:
                break
        summary = f"/{total_epochs}:"
        if losses is not None:  # a non-finite step since the last log is caught before anything is saved
            last_loss = read_losses(losses, grad_norm, state.step)[0]["loss"]
            summary = (f"/{total_epochs}: train loss {last_loss:.4f} (last step), "
                       f"{items_seen / max(1e-9, time.perf_counter() - started):.0f} items/s;")
        if state.step_in_epoch >= loop.steps_per_epoch:  # a whole epoch is done
            end_epoch(runner, state, summary)
        runner.checkpoints.save_last(state)


def fit(
    model: nn.Module,
    batches,  # semshare.data.batches.TrainingBatches (or anything with steps_per_epoch() and epoch(e, start))
    validate: Callable[[nn.Module], dict[str, float]],
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    context: DistributedContext = DistributedContext(),
    metadata: dict | None = None,
) -> TrainState:
    """Train until `cfg.epochs`, `cfg.max_steps` or early stopping; returns the final state.

    Validation after every epoch selects `best` (validation split only); `last` is saved after every epoch
    and when training stops, so `resume=True` continues exactly where it left off. `metadata` (the
    resolved config and model spec) is stored inside every checkpoint."""
    run_dir = Path(run_dir)
    loop = setup_loop(model, batches, cfg, context)
    state = TrainState()
    if resume and checkpoint_exists(run_dir / LAST):
        state = resume_state(run_dir / LAST, model, loop.optimizer, cfg)
    if context.is_main:  # the log continues from the checkpoint: later records of a killed run go
        truncate_metrics(run_dir / "metrics.jsonl", state.step if state.step else None)
    log = MetricsLog(run_dir / "metrics.jsonl" if context.is_main else None, cfg.tensorboard)
    checkpoints = Checkpointer(run_dir, model, loop.optimizer, metadata, writes=context.is_main)
    progress = progress_bar(cfg.progress and context.is_main, total=loop.total_steps, initial=state.step,
                            desc="train", unit="step")
    with progress, logs_through(progress):
        _train_epochs(EpochRunner(model, batches, validate, cfg, loop, log, progress, checkpoints, context), state)
    log.close()
    checkpoints.finish(state)
    return state
