"""The train / load dispatch: the one place that knows a run may be fitted in closed form.

An experiment = a resolved config (training/recipes.py) + inputs prepared from the training split
(training/inputs.py) + a run folder (training/run_folder.py). `train_experiment` prepares a run and fits
it (the one loop, or one closed-form fit); `load_run` (the one loader) rebuilds a finished run from its folder. Both
take the opened Dataset; both build the method the same way, from its config, sizes and fitted inputs.
"""

from __future__ import annotations

import json
import logging
import shutil
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed

from semshare.config import to_dict
from semshare.data.batches import TrainingBatches
from semshare.data.dataset import Dataset, open_dataset
from semshare.data.text import Vocabulary
from semshare.errors import ConfigError, SemshareError
from semshare.fileio import folder_lock, remove_stale_temporaries
from semshare.training.checkpoint import checkpoint_exists, load_checkpoint, read_checkpoint_metadata
from semshare.training.closed_form import (closed_form_fit_complete, fit_closed_form_run,
                                          load_closed_form_run, read_fit_state)
from semshare.training.inputs import (VOCAB_FILE, build_method, load_fitted_inputs, load_segment_targets,
                                      load_vocabulary, open_segments, prepare_trained_inputs, save_fitted_inputs,
                                      save_text_inputs, training_rows)
from semshare.names import BEST, CHECKPOINTS, LAST, RANKINGS
from semshare.training.finished_run import Run
from semshare.training.instance_head import instance_ranking
from semshare.training.package import check_package, is_package, open_package, packaged_segments
from semshare.training.loop import DistributedContext, fit
from semshare.training.recipes import ExperimentConfig, unsupported_inputs
from semshare.training.run_folder import (check_checkpoint_of_run, check_existing_run, check_same_spec, read_run_config,
                                          read_split_rows, recorded_data_dir, run_identity, save_run_description,
                                          update_run_description)
from semshare.training.trained_run import TrainedRun, validation_function

logger = logging.getLogger(__name__)
SMALL_VALIDATION = 50  # fewer validation items than this: model selection is said to rest on little


def fitted_batch_size(batch_size: int, train_items: int, world_size: int = 1) -> int:
    """The batch a step takes: the configured size, or all training items when there are fewer (rounded down
    to a multiple of the processes, each taking an equal shard)."""
    if batch_size <= train_items:
        return batch_size
    return max(world_size, train_items - train_items % world_size)


def prepare_run(dataset: Dataset, cfg: ExperimentConfig, run_dir: str | Path, write: bool = True) -> TrainedRun:
    """Build vocabulary, word vectors, region targets, fitted inputs and the model from the training split;
    save them (`write=False`, for a resume: check they equal the run's saved ones instead)."""
    run_dir = Path(run_dir)
    if cfg.method_class.closed_form:
        raise SemshareError(f"{cfg.name} is fitted in closed form; it has no model to prepare for the loop")
    problem = unsupported_inputs(cfg)
    if problem:
        raise ConfigError(f"{cfg.name} {problem} (inputs.image / inputs.text)")
    train_rows, val_rows = training_rows(dataset, cfg.train)
    if len(val_rows) < SMALL_VALIDATION:  # selection (best epoch, retrieval space) rests on these few items
        logger.warning("%s: the validation split has %d items: the checkpoint is selected on their Ave NDCG@500, "
                       "a number that rests on %d images and their captions (under %d, the pick is close to chance)",
                       dataset.name, len(val_rows), len(val_rows), SMALL_VALIDATION)
    if cfg.train.batch_size > len(train_rows):  # a small dataset of one's own: one batch of all of it
        logger.warning("%s: train.batch_size %d is more than its %d training items: each step takes all %d "
                       "(config.yaml keeps %d)", dataset.name, cfg.train.batch_size, len(train_rows),
                       len(train_rows), cfg.train.batch_size)
    inputs = prepare_trained_inputs(dataset, cfg, train_rows)
    torch.manual_seed(cfg.train.seed)
    model = build_method(cfg, inputs.spec, inputs.fitted)
    prepared = TrainedRun(cfg, dataset, model, inputs.vocab, train_rows, val_rows, inputs.region_targets,
                           inputs.text_segments, inputs.segment_targets)
    if not write:
        check_same_spec(run_dir, inputs.spec)
        _check_same_vocabulary(run_dir, inputs.vocab)
        return prepared
    run_dir.mkdir(parents=True, exist_ok=True)
    save_text_inputs(run_dir, inputs.vocab, inputs.text_segments, inputs.word_pieces)
    if inputs.fitted:
        save_fitted_inputs(run_dir, inputs.fitted)
    save_run_description(run_dir, cfg, inputs.spec, dataset, train_rows, val_rows)
    return prepared


def _check_same_vocabulary(run_dir: Path, vocab: Vocabulary | None) -> None:
    if vocab is not None:
        if not (run_dir / VOCAB_FILE).exists():
            raise SemshareError(f"{run_dir / VOCAB_FILE}: file: expected the vocabulary the run was trained with, "
                                "found no such file; the run cannot be resumed")
        if Vocabulary.load(run_dir / VOCAB_FILE).tokens != vocab.tokens:
            raise SemshareError(f"{run_dir / VOCAB_FILE}: tokens: the training captions now give another vocabulary")


def _deep_features_run(cfg: ExperimentConfig, dataset: Dataset) -> TrainedRun | None:
    """The trained run whose pooled features a closed-form method is fitted on (`text.deep_features_run`)."""
    if not cfg.text.deep_features_run:
        return None
    return load_run(cfg.text.deep_features_run, dataset, ranking="label")


@contextmanager
def _removed_on_error(run_dir: Path, made_here: bool):
    try:
        yield
    except SemshareError:
        if made_here:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def load_run(run_dir: str | Path, data: Dataset | str | Path | None = None, checkpoint: str = BEST,
             ranking: str = "combined") -> Run:
    """The one loader of a finished run folder (config.yaml, model_spec.json, safetensors weights: nothing is
    unpickled): a Run (training/finished_run.py), trained or fitted in closed form.

    `data`: the dataset, opened or as a folder; default the folder the run recorded (splits.json). When that
    folder is gone, the run loads on its own: its folder is enough to encode free text (config, vocabulary,
    word vectors, weights); what reads the data (its rows, a run on MiniLM token states, a deep-features run)
    says it needs the dataset. `ranking`: "combined" (default) holds the run's instance head as its ranking
    stage when it has one (`semshare fit-instance`), "label" ranks by the label space alone."""
    from semshare.training.hash_stage import HashRanking, hash_bits_of, load_hash_projection

    bits = hash_bits_of(ranking) if isinstance(ranking, str) else None
    if ranking not in RANKINGS and bits is None:
        raise SemshareError(f"ranking: expected one of {', '.join(RANKINGS)} or hash:BITS, found {ranking!r}")
    if checkpoint not in CHECKPOINTS:
        raise SemshareError(f"checkpoint: expected one of {', '.join(CHECKPOINTS)}, found {checkpoint!r}")
    run_dir = open_package(Path(run_dir)) if str(run_dir).endswith(".tar.gz") else Path(run_dir)
    packaged = is_package(run_dir)
    if packaged:
        check_package(run_dir)
    if data is None and packaged:  # a package travels without its dataset: it never reaches for the recorded one
        logger.info("%s: a package; loading it on its own (give data= for its dataset's rows)", run_dir)
    elif data is None:
        data = recorded_data_dir(run_dir)
        if not Path(data).is_dir():
            logger.info("%s: its dataset %s is not there; loading the run on its own", run_dir, data)
            data = None
    dataset = data if data is None or isinstance(data, Dataset) else open_dataset(data, check_values=False)
    run = _load_base_run(run_dir, dataset, checkpoint)
    if bits is not None:  # binary codes of the label space (semshare fit-hash)
        return run.ranked_by(HashRanking(load_hash_projection(run_dir, bits), bits))
    return run.ranked_by(instance_ranking(run_dir)) if ranking == "combined" else run


def _load_base_run(run_dir: Path, dataset: Dataset | None, checkpoint: str) -> Run:
    cfg, spec = read_run_config(run_dir)
    if dataset is None:
        detached_problem = "" if is_package(run_dir) and cfg.inputs.text == "segments" else _needs_its_dataset(cfg)
        if detached_problem:
            raise SemshareError(f"{run_dir}: {detached_problem}, so it needs its dataset ({recorded_data_dir(run_dir)} "
                                "is not there): give the dataset folder (--data / data_dir)")
    elif dataset.num_labels != spec.num_labels:
        raise SemshareError(f"{dataset.root}: {dataset.num_labels} labels, but the run was trained on {spec.num_labels}")
    num_items = dataset.num_items if dataset is not None else None
    if cfg.method_class.closed_form:
        if checkpoint != BEST:
            raise SemshareError(f"{run_dir}: a closed-form run has one fit, in best/; there is no {checkpoint!r} checkpoint")
        return load_closed_form_run(run_dir, cfg, dataset, _deep_features_run(cfg, dataset) if dataset else None)
    text_segments, segment_targets = None, None
    if cfg.inputs.text == "segments":  # a package without its data encodes new texts only
        text_segments = open_segments(dataset, cfg.text) if dataset is not None else packaged_segments(run_dir)
        segment_targets = load_segment_targets(run_dir)
    model = build_method(cfg, spec, load_fitted_inputs(run_dir))
    load_checkpoint(run_dir / checkpoint, model)  # first: a torn or empty file is its own clear error
    check_checkpoint_of_run(run_dir, run_dir / checkpoint, cfg, read_checkpoint_metadata(run_dir / checkpoint))
    model.eval()
    train_rows, val_rows = read_split_rows(run_dir, num_items)
    vocab = load_vocabulary(run_dir, required=cfg.inputs.text == "words")
    return TrainedRun(cfg, dataset, model, vocab, train_rows, val_rows, None, text_segments, segment_targets, run_dir,
                      checkpoint, spec.num_labels)


def _needs_its_dataset(cfg: ExperimentConfig) -> str:
    """Why a run cannot be loaded without its dataset ('' when its folder is enough)."""
    if cfg.inputs.text == "segments":
        return "it reads the MiniLM token states extracted from its dataset (text_segments/)"
    if cfg.text.deep_features_run:
        return "it is fitted on the features of another run of its dataset"
    return ""


def train_experiment(dataset: Dataset, cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False,
                     context: DistributedContext = DistributedContext(), allow_change: tuple[str, ...] = ()) -> dict:
    """Prepare the run, then fit it: the one loop, or one closed-form fit.

    An existing run in RUN is never overwritten: without `resume` it is an error; with it, the config (but
    for `allow_change` fields) and the data must equal the run's, then a trained run continues from RUN/last
    and a finished closed-form fit is returned as it is. Checked before anything is written."""
    run_dir = Path(run_dir)
    made_here = context.is_main and not run_dir.exists()
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    # one writer per run folder: a second train / resume of it while this one runs is refused at once
    with folder_lock(run_dir, "run") if context.is_main else nullcontext():
        if context.is_main:
            remove_stale_temporaries(run_dir)  # what a killed run was writing when it died
        with _removed_on_error(run_dir, made_here):  # a run that cannot even start leaves no folder behind
            existing = check_existing_run(run_dir, cfg, dataset, resume, allow_change)
            if context.world_size > 1:  # every rank has looked at the folder before any rank writes to it
                torch.distributed.barrier()
            if cfg.method_class.closed_form:
                if existing:
                    update_run_description(run_dir, cfg, dataset, allow_change)
                if existing and closed_form_fit_complete(run_dir):
                    return read_fit_state(run_dir)
                return fit_closed_form_run(dataset, cfg, run_dir, _deep_features_run(cfg, dataset))
            resuming = existing and checkpoint_exists(run_dir / LAST)
            run = prepare_run(dataset, cfg, run_dir, write=not resuming)  # checks the batch size first
            if existing:  # the run's description says what it now continues with (checked above)
                update_run_description(run_dir, cfg, dataset, allow_change)
        batches = TrainingBatches(run.builder(training=True), run.train_rows,
                                  fitted_batch_size(cfg.train.batch_size, len(run.train_rows), context.world_size),
                                  cfg.train.seed, context.rank, context.world_size)
        return fit(run.model, batches, validation_function(run), cfg.train, run_dir, resuming, context,
                   metadata={"config": to_dict(cfg), "run_id": run_identity(run_dir),
                             "model_spec": json.loads((run_dir / "model_spec.json").read_text())})
