"""Region layouts of new image files (issue 32): the layouts a file can take, the training augmentation
that shows a run on annotated boxes the layout a file gets, and the one-line notice when a run never saw it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.data.batches import BatchBuilder, BatchOptions, draw_file_layouts, item_key
from semshare.data.dataset import open_dataset
from semshare.errors import SemshareError
from semshare.features.extract import features_of_image_file
from semshare.training.experiment import load_run

from test_extract import make_images


@pytest.fixture(scope="module")
def boxed(tmp_path_factory):
    """A dataset extracted with VOC boxes (tiny-random backbone) and its images."""
    folder = tmp_path_factory.mktemp("boxed")
    images = make_images(folder / "imgs", count=24, seed=3)
    assert main(["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"), "--voc-annotations",
                 str(images / "xml"), "--backbone", "tiny-random", "--out", str(folder / "ds")]) == 0
    return images, folder / "ds"


def test_a_file_takes_each_layout_from_the_same_feature_map(boxed):
    images, data = boxed
    meta = json.loads((data / "meta.json").read_text())
    whole, regions, boxes, mask = features_of_image_file(images / "img2.png", meta, "global")
    assert regions.shape == (1, whole.shape[0]) and np.array_equal(regions[0], whole) and boxes.tolist() == [[0, 0, 1, 1]]
    _, cells, cell_boxes, cell_mask = features_of_image_file(images / "img2.png", meta, "grid")
    grid = meta["extract"]["grid"]
    assert cells.shape == (grid * grid, whole.shape[0]) and cell_mask.all()
    _, both, both_boxes, _ = features_of_image_file(images / "img2.png", meta, "grid+global")
    assert np.array_equal(both[0], whole) and np.array_equal(both[1:], cells) and both_boxes[0].tolist() == [0, 0, 1, 1]
    auto = features_of_image_file(images / "img2.png", meta)  # a boxed dataset's file: its global feature
    assert np.array_equal(auto[1], regions)
    with pytest.raises(SemshareError, match="layout: expected one of"):
        features_of_image_file(images / "img2.png", meta, "boxes")


def test_the_file_layout_draw_is_per_item_and_seeded():
    keys = [item_key(0, 1, row) for row in range(400)]
    drawn = draw_file_layouts(keys, 0.3)
    assert np.array_equal(drawn, draw_file_layouts(keys, 0.3))
    assert np.array_equal(drawn[10:20], draw_file_layouts(keys[10:20], 0.3))  # an item's draw ignores its batch
    assert 0.22 < drawn.mean() < 0.38
    assert not draw_file_layouts(keys, 0.0).any() and draw_file_layouts(keys, 1.0).all()
    assert len(draw_file_layouts(None, 0.5)) == 0


def test_a_training_batch_shows_the_drawn_images_as_a_file_and_the_rest_unchanged(boxed):
    _, data = boxed
    dataset = open_dataset(data)
    rows = np.arange(12)
    keys = [item_key(0, 0, int(r)) for r in rows]
    dataset.text_vectors = np.zeros((dataset.num_items, 4), np.float32)  # the image side is what is tested
    plain = BatchBuilder(dataset, None, BatchOptions(text_input="vector", mask_prob=0.2))
    before = plain.build(rows, rows, keys)
    mixed = BatchBuilder(dataset, None, BatchOptions(text_input="vector", mask_prob=0.2, file_layout_prob=0.5))
    after = mixed.build(rows, rows, keys)
    as_file = draw_file_layouts(keys, 0.5)
    assert 0 < as_file.sum() < len(rows)
    keep = ~as_file
    for name in ("img_regions", "img_boxes", "img_mask", "img_masked"):
        assert np.array_equal(getattr(after, name).numpy()[keep], getattr(before, name).numpy()[keep]), name
    assert after.img_mask[as_file].sum(1).tolist() == [1] * int(as_file.sum())
    np.testing.assert_array_equal(after.img_regions[as_file, 0].numpy(), np.asarray(dataset.image)[rows[as_file]].astype(np.float32))
    assert after.img_boxes[as_file, 0].tolist() == [[0, 0, 1, 1, 1]] * int(as_file.sum())
    assert not after.img_masked[as_file].any()  # the global feature has no region class to predict
    # evaluation batches never change
    assert np.array_equal(mixed.build_images(rows).img_regions.numpy(), plain.build_images(rows).img_regions.numpy())


def test_a_boxed_run_without_the_augmentation_says_so_for_file_queries_and_one_with_it_does_not(boxed, tmp_path, capsys):
    images, data = boxed
    common = ["--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "models.semantic_sharing.dim=16",
              "--set", "models.semantic_sharing.heads=2", "--set", "text.word_dim=8", "--set", "train.progress=false"]
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "plain"), *common,
                 "--set", "inputs.file_layout_prob=0"]) == 0
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "aug"), *common,
                 "--set", "inputs.file_layout_prob=0.5"]) == 0
    plain, aug = load_run(tmp_path / "plain"), load_run(tmp_path / "aug")
    assert "never trained on" in plain.file_layout_note() and aug.file_layout_note() == ""
    assert aug.file_layout_prob == 0.5 and plain.file_layout_prob == 0.0
    for name, run in (("plain", plain), ("aug", aug)):
        assert main(["index", "build", str(tmp_path / name), "--out", str(tmp_path / f"{name}-idx"), "--split", "all", "--side", "image"]) == 0
        capsys.readouterr()
        assert main(["search", str(tmp_path / f"{name}-idx"), "--image-file", str(images / "img1.png"), "-k", "3"]) == 0
        printed = capsys.readouterr().out
        assert ("never trained on" in printed) == (name == "plain")
        assert main(["search", str(tmp_path / f"{name}-idx"), "--image-file", str(images / "img1.png"), "-k", "3",
                     "--json"]) == 0
        notes = json.loads(capsys.readouterr().out)["notes"]
        assert (len(notes) == 1) == (name == "plain")
    # different training data: the two runs' weights differ (the augmentation took effect)
    import torch

    assert not all(torch.equal(a, b) for a, b in zip(plain.model.state_dict().values(), aug.model.state_dict().values()))


def test_file_layout_prob_out_of_range_is_one_line(boxed, tmp_path, capsys):
    _, data = boxed
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "r"), "--set", "inputs.file_layout_prob=1.5"]) == 2
    assert "inputs.file_layout_prob: expected a fraction in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
