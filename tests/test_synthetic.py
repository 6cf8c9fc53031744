"""The synthetic generator: deterministic, the real format, and hard in the way it claims."""

import hashlib

import numpy as np
import pytest

from semshare.data.dataset import open_dataset
from semshare.data.synthetic import build_world, make_synthetic, preset


def digest(folder):
    h = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir()):
        h.update((folder / name).read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = make_synthetic(tmp_path / "a", preset("tiny", seed=3), progress=False)
    b = make_synthetic(tmp_path / "b", preset("tiny", seed=3), progress=False)
    c = make_synthetic(tmp_path / "c", preset("tiny", seed=4), progress=False)
    assert digest(a) == digest(b)
    assert not np.array_equal(np.load(a / "labels.npy"), np.load(c / "labels.npy"))


def test_format_and_statistics(tiny_data_dir):
    ds = open_dataset(tiny_data_dir)
    assert ds.name == "tiny" and ds.meta["synthetic"]["num_items"] == 120
    labels = np.asarray(ds.labels)
    counts = labels.sum(0)
    assert counts.max() > 2 * max(1, counts.min())  # skewed frequencies
    assert (labels.sum(1) > 1).mean() > 0.2  # several labels per item
    mask = np.asarray(ds.region_mask).astype(bool)
    assert mask.sum(1).min() >= 1 and mask.sum(1).max() <= ds.regions.shape[1]
    regions = np.asarray(ds.regions)
    assert np.all(regions[~mask] == 0)  # padding is zero
    boxes = np.asarray(ds.region_boxes)[mask]
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    lengths = [len(t.split()) for texts in ds.captions for t in texts]
    assert min(lengths) < max(lengths)  # varying length


def test_relational_labels_are_an_xor_of_part_pairs(tmp_path):
    """Each part of a relational label shows up about as often without the label as with it."""
    cfg = preset("small", num_items=1500, val_items=100, test_items=100, image_strength=1.0)
    ds = open_dataset(make_synthetic(tmp_path / "d", cfg, progress=False))
    world = build_world(cfg)
    relational = ds.meta["relational_labels"]
    assert len(relational) == round(cfg.relational_fraction * cfg.num_labels)
    region_labels = np.asarray(ds.region_labels)
    labels = np.asarray(ds.labels)
    for c in relational:
        part_a = (region_labels == world.part_class(c, 0)).any(1)
        with_label, without = part_a[labels[:, c] == 1].sum(), part_a[labels[:, c] == 0].sum()
        assert without > 0.4 * with_label  # the part alone does not tell the label
        # but the true pair does: A with B only when the label is present
        pair_ab = part_a & (region_labels == world.part_class(c, 1)).any(1)
        assert labels[pair_ab, c].all()


def test_weaker_modality_shows_fewer_labels(tmp_path):
    cfg = preset("tiny", image_strength=0.3, text_strength=1.0, relational_fraction=0.0, num_items=300)
    ds = open_dataset(make_synthetic(tmp_path / "w", cfg, progress=False))
    labels = np.asarray(ds.labels)
    region_labels = np.asarray(ds.region_labels)
    shown = sum(np.isin(np.flatnonzero(labels[i]), region_labels[i]).sum() for i in range(len(labels)))
    assert shown / labels.sum() == pytest.approx(0.3, abs=0.08)


def test_chunked_writing_is_deterministic_across_chunks(tmp_path, monkeypatch):
    import semshare.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "CHUNK_ITEMS", 16)
    cfg = preset("tiny")
    a = make_synthetic(tmp_path / "a", cfg, progress=False)
    b = make_synthetic(tmp_path / "b", cfg, progress=False)
    assert digest(a) == digest(b)
    assert open_dataset(a).num_items == cfg.num_items


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import semshare.data.synthetic as synthetic

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "write_meta", explode)
    with pytest.raises(RuntimeError):
        make_synthetic(tmp_path / "x", preset("tiny"), progress=False)
    assert list(tmp_path.iterdir()) == []
