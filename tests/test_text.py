"""Tokenizer, vocabulary (JSON round trip), word vectors (trained and loaded)."""

import json

import numpy as np
import pytest

from semshare.data.text import SPECIAL_TOKENS, Vocabulary, encode_texts, tokenize
from semshare.data.word_vectors import Word2VecConfig, load_word2vec_file, load_word_vectors, save_word_vectors, train_word2vec
from semshare.errors import DataFormatError


def test_tokenize_sentences_and_tags():
    assert tokenize("Two dogs, playing in the SNOW!") == ["two", "dogs", ",", "playing", "in", "the", "snow", "!"]
    assert tokenize("A man's hat -- well-known.") == ["a", "man's", "hat", "-", "-", "well-known", "."]
    assert tokenize(["Sky", " New York ", ""]) == ["sky", "new york"]


def test_vocabulary_build_min_count_and_specials(tmp_path):
    vocab = Vocabulary.build(["a dog", "a cat", "a dog runs"], min_count=2)
    assert vocab.tokens[:4] == list(SPECIAL_TOKENS)
    assert vocab.tokens[4:] == ["a", "dog"]  # by frequency; 'cat', 'runs' below min count
    assert vocab.encode("A dog flies") == [4, 5, vocab.unk_id]
    assert vocab.unknown_tokens("a flying dog") == ["flying"]
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["format"] == "semshare-vocabulary"
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded.tokens == vocab.tokens and loaded.mask_id == 2


def test_vocabulary_rejects_bad_file(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps({"format": "semshare-vocabulary", "tokens": ["x"]}))
    with pytest.raises(DataFormatError, match="tokens"):
        Vocabulary.load(tmp_path / "v.json")


def test_encode_texts_ragged():
    vocab = Vocabulary.build(["a b c"])
    flat, offsets = encode_texts(vocab, ["a b", "c", "a b c"], max_length=2)
    assert list(offsets) == [0, 2, 3, 5]
    assert vocab.decode(flat[3:5]) == ["a", "b"]


def test_word2vec_is_deterministic_and_aligned(tiny_data_dir):
    from semshare.data.dataset import open_dataset

    ds = open_dataset(tiny_data_dir)
    texts = ds.text_items(ds.split("train")).texts
    vocab = Vocabulary.build(texts)
    cfg = Word2VecConfig(dim=16, epochs=3)
    first = train_word2vec(texts, vocab, cfg, seed=1)
    second = train_word2vec(texts, vocab, cfg, seed=1)
    assert first.shape == (len(vocab), 16)
    np.testing.assert_array_equal(first, second)
    assert np.all(first[0] == 0)  # PAD
    assert np.isfinite(first).all() and np.abs(first[4:]).sum(1).min() > 0


def test_load_word2vec_text_file_and_safetensors_round_trip(tmp_path):
    vocab = Vocabulary.build(["red car", "blue car"])
    (tmp_path / "w.txt").write_text("2 3\ncar 1 2 3\nred 0.5 0.5 0.5\n")
    matrix, coverage = load_word2vec_file(tmp_path / "w.txt", vocab)
    assert coverage == pytest.approx(2 / 3)
    np.testing.assert_allclose(matrix[vocab.encode("car")[0]], [1, 2, 3])
    save_word_vectors(tmp_path / "wv.safetensors", matrix)
    np.testing.assert_array_equal(load_word_vectors(tmp_path / "wv.safetensors", len(vocab)), matrix)
    with pytest.raises(DataFormatError, match="rows"):
        load_word_vectors(tmp_path / "wv.safetensors", len(vocab) + 1)
