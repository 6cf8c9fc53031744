"""The command line end to end on tiny data."""

import json

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.data.dataset import open_dataset


def test_help_on_every_subcommand(capsys):
    for command in ("make-synthetic", "inspect", "prepare-text", "evaluate-embeddings", "train", "evaluate", "embed",
                    "benchmark", "sweep", "demo"):
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        assert "usage: semshare " + command in capsys.readouterr().out


def test_make_synthetic_with_override(tmp_path):
    assert main(["make-synthetic", str(tmp_path / "d"), "--preset", "tiny", "--set", "num_items=60",
                 "--set", "val_items=10", "--set", "test_items=10"]) == 0
    assert open_dataset(tmp_path / "d").num_items == 60
    assert main(["make-synthetic", str(tmp_path / "d"), "--preset", "tiny"]) == 2  # exists
    assert main(["make-synthetic", str(tmp_path / "e"), "--preset", "tiny", "--set", "nope=1"]) == 2


def test_evaluate_embeddings_label_embeddings_score_high(tiny_data_dir, tmp_path, capsys):
    ds = open_dataset(tiny_data_dir)
    labels = np.asarray(ds.labels, dtype=np.float32)
    rng = np.random.default_rng(0)
    img = labels + 0.05 * rng.standard_normal(labels.shape)
    txt_rows = ds.text_items(np.arange(ds.num_items)).rows
    np.save(tmp_path / "img.npy", img)
    np.savez(tmp_path / "txt.npz", emb=labels[txt_rows], ids=np.arange(len(txt_rows)))
    out = tmp_path / "m.json"
    assert main(["evaluate-embeddings", "--data", str(tiny_data_dir), "--img-emb", str(tmp_path / "img.npy"),
                 "--txt-emb", str(tmp_path / "txt.npz"), "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    assert table["ave/mAP@all"] > 0.85
    # random embeddings score far lower
    np.save(tmp_path / "rand.npy", rng.standard_normal(labels.shape))
    assert main(["evaluate-embeddings", "--data", str(tiny_data_dir), "--img-emb", str(tmp_path / "rand.npy"),
                 "--txt-emb", str(tmp_path / "txt.npz"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ave/mAP@all"] < table["ave/mAP@all"] - 0.2


def test_evaluate_embeddings_wrong_row_count_is_a_clear_error(tiny_data_dir, tmp_path, capsys):
    np.save(tmp_path / "img.npy", np.zeros((7, 3)))
    np.save(tmp_path / "txt.npy", np.zeros((7, 3)))
    assert main(["evaluate-embeddings", "--data", str(tiny_data_dir), "--img-emb", str(tmp_path / "img.npy"),
                 "--txt-emb", str(tmp_path / "txt.npy")]) == 2
    assert "120 rows" in capsys.readouterr().err


def test_prepare_text(tiny_data_dir, tmp_path):
    from semshare.data.text import Vocabulary
    from semshare.data.word_vectors import load_word_vectors

    assert main(["prepare-text", str(tiny_data_dir), "--out", str(tmp_path / "t"), "--dim", "8", "--epochs", "1"]) == 0
    vocab = Vocabulary.load(tmp_path / "t" / "vocab.json")
    assert load_word_vectors(tmp_path / "t" / "word_vectors.safetensors", len(vocab)).shape == (len(vocab), 8)
    # the run's own recipe: --min-count prunes as text.min_count does in training
    assert main(["prepare-text", str(tiny_data_dir), "--out", str(tmp_path / "p"), "--dim", "8", "--epochs", "1",
                 "--min-count", "1000"]) == 0
    assert len(Vocabulary.load(tmp_path / "p" / "vocab.json")) == 4


def test_train_evaluate_embed_end_to_end(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--set", "train.epochs=1",
                 "--set", "train.batch_size=16", "--set", "model.dim=16", "--set", "model.heads=2",
                 "--set", "model.ffn_dim=32", "--set", "text.word_dim=8", "--set", "train.progress=false"]) == 0
    assert "best val NDCG@500" in capsys.readouterr().out
    assert (run / "best" / "model.safetensors").exists() and (run / "config.yaml").exists()
    # refusing to overwrite a run without --resume
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run)]) == 2
    assert main(["evaluate", str(run), "--data", str(tiny_data_dir), "--split", "test"]) == 0
    table = json.loads((run / "eval_test.json").read_text())
    assert 0 <= table["ave/NDCG@500"] <= 1 and "i2t/mAP@all" in table
    # without --data: the dataset the run recorded (splits.json), the same digits
    assert main(["evaluate", str(run), "--split", "test", "--json", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == table
    assert main(["embed", str(run), "--split", "test"]) == 0
    emb = np.load(run / "embeddings" / "test" / "txt_emb.npz")
    # the default retrieval embedding is the label space: one score per label (the tiny data has 8)
    assert emb["emb"].shape == (40, 8) and list(emb["ids"][:2]) == sorted(emb["ids"][:2])
    # the embeddings score the same through evaluate-embeddings
    out = tmp_path / "m.json"
    assert main(["evaluate-embeddings", "--data", str(tiny_data_dir), "--img-emb",
                 str(run / "embeddings" / "test" / "img_emb.npz"), "--txt-emb",
                 str(run / "embeddings" / "test" / "txt_emb.npz"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["ave/NDCG@500"] == pytest.approx(table["ave/NDCG@500"], abs=1e-6)


def test_unknown_config_key_is_a_clear_error(tiny_data_dir, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "r"), "--set", "train.lrr=1"]) == 2
    assert "unknown config key train.lrr" in capsys.readouterr().err


def test_demo_on_tiny(tmp_path, capsys):
    assert main(["demo", "--preset", "tiny", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for row in ("Ours", "w/o T", "w/o C", "Ridge"):
        assert f"| {row} |" in out
