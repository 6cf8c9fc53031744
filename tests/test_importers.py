"""Importers: small files of each real format written here, imported, and compared value by value."""

import base64
import json

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.data.dataset import open_dataset


def write_coco(tmp_path, image_ids, categories=((1, "person"), (3, "car"), (2, "bicycle")), unannotated=()):
    """Captions + instances JSON in COCO's structure; image i gets categories by a fixed rule."""
    rng = np.random.default_rng(0)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480} for i in image_ids]
    captions = {"images": images, "annotations": [
        {"id": 10 * i + k, "image_id": i, "caption": f"image {i} caption {k} "} for i in image_ids for k in range(5)]}
    annotations, expected = [], {}
    cat_ids = sorted(c for c, _ in categories)
    for i in image_ids:
        if i in unannotated:
            continue
        chosen = [cat_ids[j] for j in range(len(cat_ids)) if (i >> j) & 1] or [cat_ids[0]]
        expected[i] = chosen
        for c in chosen:
            annotations.append({"id": len(annotations), "image_id": i, "category_id": c,
                                "bbox": [float(rng.integers(0, 300)), 10.0, 50.0, 60.0]})
    instances = {"images": images, "annotations": annotations,
                 "categories": [{"id": c, "name": n} for c, n in categories]}
    (tmp_path / "captions.json").write_text(json.dumps(captions))
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    return tmp_path / "captions.json", tmp_path / "instances.json", expected


def test_coco_import_maps_sorted_category_ids_and_drops_unannotated(tmp_path):
    caps, inst, expected = write_coco(tmp_path, [5, 3, 9, 12, 7, 4], unannotated=(9,))
    split_file = tmp_path / "dataset_coco.json"
    split_file.write_text(json.dumps({"images": [{"cocoid": i, "split": s} for i, s in
                                                 [(3, "train"), (4, "restval"), (5, "val"), (7, "test"), (12, "train"), (9, "test")]]}))
    assert main(["import", "coco", "--captions", str(caps), "--instances", str(inst), "--split-file", str(split_file),
                 "--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out")]) == 0
    dataset = open_dataset(tmp_path / "out")
    assert dataset.meta["coco_image_ids"] == [3, 4, 5, 7, 12] and dataset.meta["dropped_without_annotations"] == 1
    assert dataset.label_names == ["person", "bicycle", "car"]  # category ids 1, 2, 3 in sorted order
    for row, image_id in enumerate(dataset.meta["coco_image_ids"]):
        assert sorted(np.flatnonzero(dataset.labels[row]) + 1) == sorted(expected[image_id])
        assert dataset.captions[row] == [f"image {image_id} caption {k}" for k in range(5)]
        assert dataset.image_files[row].endswith(f"imgs/{image_id:012d}.jpg")
    assert dataset.split("train").tolist() == [0, 1, 4] and dataset.split("val").tolist() == [2]
    assert dataset.split("test").tolist() == [3]


def test_precomp_import_round_trips_regions_captions_and_labels(tmp_path):
    src = tmp_path / "precomp"
    src.mkdir()
    rng = np.random.default_rng(1)
    ims = {s: rng.standard_normal((n, 36, 16)).astype(np.float32) for s, n in (("train", 4), ("dev", 2), ("test", 3))}
    for split, array in ims.items():
        np.save(src / f"{split}_ims.npy", array)
        (src / f"{split}_caps.txt").write_text("".join(f"{split} {i} cap {k}\n" for i in range(len(array)) for k in range(5)))
    labels = (rng.random((9, 4)) < 0.5).astype(np.uint8)
    np.save(tmp_path / "labels.npy", labels)
    assert main(["import", "precomp", str(src), "--labels", str(tmp_path / "labels.npy"), "--out", str(tmp_path / "out")]) == 0
    dataset = open_dataset(tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(dataset.regions), np.concatenate(list(ims.values())).astype(np.float16))
    np.testing.assert_array_equal(np.asarray(dataset.labels), labels)
    assert dataset.captions[4] == [f"dev 0 cap {k}" for k in range(5)]
    assert dataset.split("val").tolist() == [4, 5] and dataset.split("test").tolist() == [6, 7, 8]
    assert np.asarray(dataset.region_mask).all()


def test_precomp_bad_caption_count_is_a_clear_error_and_leaves_nothing(tmp_path, capsys):
    src = tmp_path / "precomp"
    src.mkdir()
    np.save(src / "train_ims.npy", np.zeros((3, 36, 8), dtype=np.float32))
    (src / "train_caps.txt").write_text("a\nb\nc\nd\n")
    np.save(tmp_path / "labels.npy", np.zeros((3, 2), dtype=np.uint8))
    assert main(["import", "precomp", str(src), "--splits", "train", "--labels", str(tmp_path / "labels.npy"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "train_caps.txt: lines: expected a multiple of the 3 images" in err and "found 4 captions" in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def tsv_line(image_id, w, h, boxes, features):
    encode = lambda a: base64.b64encode(np.ascontiguousarray(a, dtype=np.float32).tobytes()).decode()  # noqa: E731
    return "\t".join([str(image_id), str(w), str(h), str(len(boxes)), encode(boxes), encode(features)]) + "\n"


def test_bottomup_tsv_round_trips_boxes_and_features(tmp_path):
    caps, inst, expected = write_coco(tmp_path, [1, 2, 3, 4])
    rng = np.random.default_rng(2)
    rows = []
    for image_id, count in ((1, 3), (2, 5), (3, 2), (4, 4)):
        boxes = np.sort(rng.uniform(0, 400, (count, 4)).reshape(count, 2, 2), axis=1).transpose(0, 2, 1).reshape(count, 4)
        boxes = boxes[:, [0, 2, 1, 3]]  # x0 y0 x1 y1 with x0 <= x1, y0 <= y1
        rows.append((image_id, boxes, rng.standard_normal((count, 8)).astype(np.float32)))
    (tmp_path / "a.tsv").write_text("".join(tsv_line(i, 640, 480, b, f) for i, b, f in rows[:2]))
    (tmp_path / "b.tsv").write_text("".join(tsv_line(i, 640, 480, b, f) for i, b, f in rows[2:]))
    assert main(["import", "bottomup-tsv", str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv"), "--captions", str(caps),
                 "--instances", str(inst), "--out", str(tmp_path / "out")]) == 0
    dataset = open_dataset(tmp_path / "out")
    assert dataset.regions.shape == (4, 5, 8)
    for row, (image_id, boxes, features) in enumerate(rows):
        count = len(boxes)
        np.testing.assert_array_equal(dataset.regions[row, :count], features.astype(np.float16))
        np.testing.assert_allclose(dataset.region_boxes[row, :count], boxes / [640, 480, 640, 480], rtol=1e-6)
        assert dataset.region_mask[row].sum() == count
        assert sorted(np.flatnonzero(dataset.labels[row]) + 1) == sorted(expected[image_id])


def test_bottomup_tsv_bad_base64_names_line_and_field(tmp_path, capsys):
    caps, inst, _ = write_coco(tmp_path, [1])
    good = tsv_line(1, 10, 10, np.zeros((1, 4)), np.zeros((1, 8)))
    fields = good.rstrip("\n").split("\t")
    fields[5] = "not*base64!"
    (tmp_path / "bad.tsv").write_text("\t".join(fields) + "\n")
    assert main(["import", "bottomup-tsv", str(tmp_path / "bad.tsv"), "--captions", str(caps), "--instances",
                 str(inst), "--out", str(tmp_path / "out")]) == 2
    assert "bad.tsv: line 1 'features': expected base64-encoded float32, found invalid base64" in capsys.readouterr().err


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_dcmh_mat_import_both_matlab_versions(tmp_path, version):
    rng = np.random.default_rng(3)
    n, c, v = 40, 5, 12
    labels = (rng.random((n, c)) < 0.4).astype(np.float64)
    tags = (rng.random((n, v)) < 0.3).astype(np.float64)
    image = rng.standard_normal((n, 6))
    files = {"lall.mat": ("LAll", labels), "yall.mat": ("YAll", tags), "xall.mat": ("XAll", image)}
    for file_name, (key, array) in files.items():
        if version == "v5":
            from scipy.io import savemat

            savemat(tmp_path / file_name, {key: array})
        else:  # MATLAB v7.3: HDF5 with a 512-byte header, arrays stored with axes reversed
            import h5py

            with h5py.File(tmp_path / file_name, "w", userblock_size=512) as handle:
                handle.create_dataset(key, data=array.T)
            with open(tmp_path / file_name, "r+b") as handle:
                handle.write(b"MATLAB 7.3 MAT-file".ljust(128, b" "))
    (tmp_path / "tags.txt").write_text("".join(f"tag{j}\n" for j in range(v)))
    assert main(["import", "dcmh-mat", "--labels", str(tmp_path / "lall.mat"), "--tags", str(tmp_path / "yall.mat"),
                 "--tag-list", str(tmp_path / "tags.txt"), "--image-features", str(tmp_path / "xall.mat"),
                 "--query", "10", "--train", "20", "--out", str(tmp_path / "out")]) == 0
    dataset = open_dataset(tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(dataset.labels), labels.astype(np.uint8))
    np.testing.assert_allclose(np.asarray(dataset.image), image, rtol=1e-6)
    for row in (0, 17, 39):
        assert dataset.captions[row] == [[f"tag{j}" for j in np.flatnonzero(tags[row])]]
    test, database, train = (set(dataset.split(s).tolist()) for s in ("test", "database", "train"))
    assert len(test) == 10 and test.isdisjoint(database) and train <= database and len(train) == 20


def test_dcmh_mat_missing_variable_is_named(tmp_path, capsys):
    from scipy.io import savemat

    savemat(tmp_path / "lall.mat", {"L": np.zeros((3, 2))})
    savemat(tmp_path / "yall.mat", {"YAll": np.zeros((3, 2))})
    (tmp_path / "tags.txt").write_text("a\nb\n")
    assert main(["import", "dcmh-mat", "--labels", str(tmp_path / "lall.mat"), "--tags", str(tmp_path / "yall.mat"),
                 "--tag-list", str(tmp_path / "tags.txt"), "--out", str(tmp_path / "out")]) == 2
    assert "lall.mat: variable 'LAll': expected a variable named LAll, found variables ['L']" in capsys.readouterr().err


def test_split_mat_import_with_class_indices(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(4)
    data = {}
    for split, n in (("train", 12), ("test", 5)):
        data[split] = (rng.standard_normal((n, 7)), rng.standard_normal((n, 3)), rng.integers(1, 5, (n, 1)))
        for kind, array in zip(("img", "txt", "lab"), data[split]):
            savemat(tmp_path / f"{split}_{kind}.mat", {f"{split}_{kind}": array})
    data["test"][2][0] = 4  # class 4 is present, classes start at 1
    savemat(tmp_path / "test_lab.mat", {"test_lab": data["test"][2]})
    assert main(["import", "split-mat", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    dataset = open_dataset(tmp_path / "out")
    np.testing.assert_allclose(np.asarray(dataset.image)[12:], data["test"][0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(dataset.text_vectors)[:12], data["train"][1], rtol=1e-6)
    expected = np.eye(4, dtype=np.uint8)[np.concatenate([data["train"][2], data["test"][2]]).ravel() - 1]
    np.testing.assert_array_equal(np.asarray(dataset.labels), expected)
    assert dataset.split("test").tolist() == list(range(12, 17))


def test_split_mat_row_mismatch_is_named(tmp_path, capsys):
    from scipy.io import savemat

    for split in ("train", "test"):
        savemat(tmp_path / f"{split}_img.mat", {"x": np.zeros((4, 3))})
        savemat(tmp_path / f"{split}_txt.mat", {"x": np.zeros((4 if split == "test" else 3, 2))})
        savemat(tmp_path / f"{split}_lab.mat", {"x": np.ones((4, 1))})
    assert main(["import", "split-mat", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "train_lab.mat: rows: expected 4 (as train_img.mat) in img, txt, lab, found 4, 3, 4" in capsys.readouterr().err


def test_bottomup_tsv_inverted_box_names_the_tsv_line(tmp_path, capsys):
    caps, inst, _ = write_coco(tmp_path, [1, 2])
    good = tsv_line(1, 100, 100, np.array([[1, 2, 30, 40]]), np.zeros((1, 8)))
    bad = tsv_line(2, 100, 100, np.array([[5, 5, 9, 9], [50, 10, 20, 30]]), np.zeros((2, 8)))
    (tmp_path / "boxes.tsv").write_text(good + bad)
    assert main(["import", "bottomup-tsv", str(tmp_path / "boxes.tsv"), "--captions", str(caps), "--instances",
                 str(inst), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'boxes.tsv'}: line 2 'boxes' box 1: expected x0 <= x1 and y0 <= y1 (pixels), found 50 10 20 30" in err
    assert not (tmp_path / "out").exists()
