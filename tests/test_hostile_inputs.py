"""Hostile inputs (issue 26's audit, one case each): every one ends in one line `semshare: error: ...` naming
the file or flag, exit 2, no traceback, and no half-made output. Each case builds its bad input here."""

import base64
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest

from semshare.cli.main import main

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
        "--set", "text.word2vec_epochs=1", "--set", "train.progress=false"]
SMALL = ["--set", "model.dim=16", "--set", "model.heads=2", "--set", "model.ffn_dim=32"]


@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *FAST, *SMALL]) == 0
    return run


class Case:
    """What one hostile case needs: a scratch folder, the tiny dataset and a finished run."""

    def __init__(self, tmp, data, run):
        self.tmp, self.data, self.run = tmp, data, run

    def data_copy(self):
        out = self.tmp / "data"
        shutil.copytree(self.data, out)
        return out

    def run_copy(self):
        out = self.tmp / "runcopy"
        shutil.copytree(self.run, out)
        return out

    def train(self, *sets, extra=()):
        return ["train", "--data", str(self.data), "--out", str(self.tmp / "out"), *FAST,
                *[a for s in sets for a in ("--set", s)], *extra]


def _run_file(name, content, resume=False):
    def build(c):
        run = c.run_copy()
        if content is None:
            (run / name).unlink()
        else:
            (run / name).write_text(content)
        if resume:
            return ["train", "--data", str(c.data), "--out", str(run), "--resume", *FAST, *SMALL]
        return ["evaluate", str(run), "--data", str(c.data)]
    return build


def _data_edit(edit):
    def build(c):
        data = c.data_copy()
        edit(data)
        return ["train", "--data", str(data), "--out", str(c.tmp / "out"), *FAST]
    return build


def _image_without_regions(data):
    for name in ("regions", "region_mask", "region_boxes", "region_labels"):
        (data / f"{name}.npy").unlink(missing_ok=True)
    np.save(data / "image.npy", np.zeros((len(np.load(data / "labels.npy")), 8), np.float32))


def _huge_split_index(data):
    split = json.loads((data / "split.json").read_text())
    split["train"][0] = 2**70
    (data / "split.json").write_text(json.dumps(split))


def _zero(name):
    def edit(data):
        np.save(data / f"{name}.npy", np.zeros_like(np.load(data / f"{name}.npy")))
    return edit


def _precomp(c, captions=b"a b\nc d\ne f\n", ids=None, labels=None):
    src = c.tmp / "precomp"
    src.mkdir()
    np.save(src / "train_ims.npy", np.zeros((3, 4, 8), np.float32))
    (src / "train_caps.txt").write_bytes(captions)
    if ids is not None:
        (src / "train_ids.txt").write_text(ids)
    np.save(c.tmp / "labels.npy", np.ones((3, 2), np.uint8) if labels is None else labels)
    return ["import", "precomp", str(src), "--splits", "train", "--labels", str(c.tmp / "labels.npy"),
            "--out", str(c.tmp / "out")]


def _coco(folder, ids, image_id=lambda i: i, caption=lambda i: f"image {i} caption"):
    images = [{"id": image_id(i), "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in ids]
    captions = {"images": images, "annotations": [{"id": k, "image_id": image_id(i), "caption": caption(i)}
                                                  for k, i in enumerate(ids)]}
    instances = {"images": images, "categories": [{"id": 1, "name": "thing"}],
                 "annotations": [{"id": k, "image_id": image_id(i), "category_id": 1, "bbox": [1, 1, 10, 10]}
                                 for k, i in enumerate(ids)]}
    (folder / "captions.json").write_text(json.dumps(captions))
    (folder / "instances.json").write_text(json.dumps(instances))
    return folder / "captions.json", folder / "instances.json"


def _coco_import(c, captions=None, **kwargs):
    caps, inst = _coco(c.tmp, [1, 2], **kwargs)
    return ["import", "coco", "--captions", str(captions or caps), "--instances", str(inst), "--out", str(c.tmp / "out")]


def _tsv_line(image_id, count, boxes, features):
    encode = lambda a: base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode()  # noqa: E731
    return "\t".join([str(image_id), "64", "48", str(count), encode(boxes), encode(features)]) + "\n"


def _tsv(first_count, duplicate=False):
    def build(c):
        caps, inst = _coco(c.tmp, [1, 2])
        n = max(first_count, 0)
        lines = [_tsv_line(1, first_count, np.zeros((n, 4)) + [0, 0, 5, 5], np.ones((n, 8))),
                 _tsv_line(2, 1, np.array([[0, 0, 5, 5]]), np.ones((1, 8)))]
        (c.tmp / "a.tsv").write_text("".join([lines[1], lines[1]] if duplicate else lines))
        return ["import", "bottomup-tsv", str(c.tmp / "a.tsv"), "--captions", str(caps), "--instances", str(inst),
                "--out", str(c.tmp / "out")]
    return build


def _split_mat(label=1.0, nan_feature=False):
    def build(c):
        from scipy.io import savemat

        for split, n in (("train", 4), ("test", 2)):
            image = np.ones((n, 3))
            if nan_feature:
                image[1, 1] = np.nan
            labels = np.ones((n, 1))
            labels[0, 0] = label
            for kind, array in (("img", image), ("txt", np.ones((n, 2))), ("lab", labels)):
                savemat(c.tmp / f"{split}_{kind}.mat", {"x": array})
        return ["import", "split-mat", str(c.tmp), "--out", str(c.tmp / "out")]
    return build


def _dcmh_non_utf8_tags(c):
    from scipy.io import savemat

    savemat(c.tmp / "lall.mat", {"LAll": np.ones((6, 2))})
    savemat(c.tmp / "yall.mat", {"YAll": np.ones((6, 3))})
    (c.tmp / "tags.txt").write_bytes(b"a\n\xff\xfe\nc\n")
    return ["import", "dcmh-mat", "--labels", str(c.tmp / "lall.mat"), "--tags", str(c.tmp / "yall.mat"),
            "--tag-list", str(c.tmp / "tags.txt"), "--out", str(c.tmp / "out")]


def _images(c, count=3):
    from PIL import Image

    folder = c.tmp / "imgs"
    folder.mkdir(exist_ok=True)
    lines = []
    for i in range(count):
        Image.new("RGB", (40, 30), (40 * i, 100, 100)).save(folder / f"img{i}.png")
        lines.append(json.dumps({"file_name": f"img{i}.png", "captions": [f"a box {i}"], "labels": ["red", "blue"][i % 2:][:1]}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _extract(c, folder, *extra):
    return ["extract", "--images", str(folder), "--captions", str(folder / "captions.jsonl"), "--backbone", "tiny-random",
            "--out", str(c.tmp / "out"), *extra]


def _png_header_only(path, width=20000, height=20000):
    """A PNG that claims 400 megapixels (a decompression bomb), a few hundred bytes on disk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def _extract_bomb(c):
    folder = _images(c)
    _png_header_only(folder / "img1.png")
    return _extract(c, folder)


def _extract_file_name(kind):
    def build(c):
        folder = _images(c)
        outside = c.tmp / "outside.png"
        shutil.copy(folder / "img0.png", outside)
        name = {"dotdot": "../outside.png", "absolute": str(outside), "symlink": "link.png"}[kind]
        if kind == "symlink":
            os.symlink(outside, folder / "link.png")
        lines = (folder / "captions.jsonl").read_text().splitlines()
        lines[0] = json.dumps({**json.loads(lines[0]), "file_name": name})
        (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
        return _extract(c, folder)
    return build


def _extract_voc_box_outside(c):
    folder = _images(c)
    (folder / "xml").mkdir()
    for i in range(3):
        (folder / "xml" / f"img{i}.xml").write_text(
            "<annotation><object><name>red</name><bndbox><xmin>500</xmin><ymin>500</ymin><xmax>600</xmax>"
            "<ymax>600</ymax></bndbox></object></annotation>")
    return _extract(c, folder, "--voc-annotations", str(folder / "xml"))


def _extract_garbage_weights(c):
    folder = _images(c)
    (c.tmp / "w.pth").write_bytes(np.random.default_rng(0).bytes(1000))
    return _extract(c, folder, "--weights", str(c.tmp / "w.pth"))


def _nan_word_vectors(c):
    (c.tmp / "wv.txt").write_text("3 4\nthe nan 0 0 0\na 1 1 1 1\nred 1 0 1 0\n")
    return c.train(f"text.word_vectors_path={c.tmp / 'wv.txt'}")


def _files_json(edit):
    def build(c):
        run = c.run_copy()
        path = run / "best" / "files.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
        return ["evaluate", str(run), "--data", str(c.data)]
    return build


def _nan_padded_box(data):
    boxes, mask = np.load(data / "region_boxes.npy"), np.load(data / "region_mask.npy").astype(bool)
    row, slot = map(int, np.argwhere(~mask)[0])
    boxes[row, slot] = np.nan
    np.save(data / "region_boxes.npy", boxes)


def _surrogate_caption(data):
    lines = (data / "captions.jsonl").read_text().splitlines()
    record = json.loads(lines[3])
    record["captions"][0] = "a dog \ud800 on grass"
    lines[3] = json.dumps(record)  # ensure_ascii: the surrogate is written as \ud800, valid JSON
    (data / "captions.jsonl").write_text("\n".join(lines) + "\n")


def _object_npz(c):
    np.savez(c.tmp / "img.npz", emb=np.array([object()] * 3, dtype=object), ids=np.arange(3))
    np.savez(c.tmp / "txt.npz", emb=np.zeros((3, 2)), ids=np.arange(3))
    return ["evaluate-embeddings", "--data", str(c.data), "--img-emb", str(c.tmp / "img.npz"), "--txt-emb", str(c.tmp / "txt.npz")]


def _nan_weights(c):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    from semshare.fileio import write_files_manifest

    run = c.run_copy()
    path = run / "best" / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first].clone().fill_(float("nan"))
    save_file(tensors, str(path), metadata=metadata)
    write_files_manifest(run / "best")
    return ["evaluate", str(run), "--data", str(c.data)]


def _config_file(text):
    def build(c):
        (c.tmp / "cfg.yaml").write_text(text)
        return c.train(extra=["--config", str(c.tmp / "cfg.yaml")])
    return build


def _label_names_device(data):
    (data / "label_names.txt").unlink()
    (data / "label_names.txt").symlink_to("/dev/zero")


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))

CASES = {
    # bounded reads: devices, aliases, nesting (issue 34)
    "--set text.word_vectors_path=/dev/zero": (lambda c: c.train("text.word_vectors_path=/dev/zero"),
                                               "word vectors: expected a regular word2vec .bin or .txt file"),
    "a YAML alias bomb in --config": (_config_file(ALIAS_BOMB), "without anchors and aliases"),
    "a --config nested 5,000 deep": (_config_file("train: " + "[" * 5000 + "]" * 5000 + "\n"), "nesting: expected at most 64"),
    "a --set value nested 5,000 deep": (lambda c: c.train("train.lr=" + "[" * 5000 + "]" * 5000), "nesting: expected at most 64"),
    "NaN in a padded region_boxes slot": (_data_edit(_nan_padded_box), "region_boxes: expected finite values (padding slots too)"),
    "a lone surrogate in a caption": (_data_edit(_surrogate_caption), "expected Unicode text, found a lone surrogate"),
    "duplicate YAML keys in --config": (_config_file("train:\n  lr: 0.1\n  lr: 0.2\n"), "the key 'lr' twice"),
    "--set models.semantic_sharing.dim=-8": (lambda c: c.train("models.semantic_sharing.dim=-8", extra=["--method", "ours"]),
                                             "model.dim: expected an integer >= 1, found -8"),
    "duplicate label names": (lambda c: (lambda d: ((d / "label_names.txt").write_text(
        "\n".join(["same"] * 2 + [f"l{i}" for i in range(6)]) + "\n"), ["inspect", str(d)])[1])(c.data_copy()),
                              "label_names.txt: line 2: expected each label name once"),
    "benchmark --threads -1": (lambda c: ["benchmark", "--quick", "--methods", "cca", "--threads", "-1", "--out",
                                          str(c.tmp / "out")], "--threads: expected an integer >= 0, found -1"),
    "benchmark --workers 0": (lambda c: ["benchmark", "--quick", "--methods", "cca", "--workers", "0", "--out",
                                         str(c.tmp / "out")], "--workers: expected an integer >= 1, found 0"),
    "benchmark --reference nosuch": (lambda c: ["benchmark", "--quick", "--methods", "cca", "--reference", "nosuch",
                                                "--out", str(c.tmp / "out")], "--reference nosuch: expected one of"),
    "evaluate-embeddings of an object-array .npz": (lambda c: _object_npz(c), "numeric arrays"),
    "NaN weights whose files.json matches": (_nan_weights, "expected finite weights, found NaN"),
    "integer YAML keys in --config": (_config_file("train:\n  1: 2\n"), "expected text keys, found int"),
    "label_names.txt linked to /dev/zero": (lambda c: (lambda d: (_label_names_device(d), ["inspect", str(d)])[1])(c.data_copy()),
                                            "label_names.txt: label_names.txt: expected a regular file"),
    "a JSON id of 5,000 digits": (_run_file("splits.json", '{"data_dir": "x", "train": [' + "9" * 5000 + '], "val": []}'),
                                  "splits.json: JSON: expected"),
    "model_spec.json nested 5,000 deep": (_run_file("model_spec.json", "[" * 5000 + "]" * 5000), "model_spec.json: JSON: expected"),
    # --set values, --allow-change, run folders
    "--set train=5": (lambda c: c.train("train=5"), "train: expected a mapping"),
    "--set train.device=cuda on a CPU torch": (lambda c: c.train("train.device=cuda"),
                                               "train.device: expected auto or cpu on this machine"),
    "--set train.batch_size=0": (lambda c: c.train("train.batch_size=0"), "train.batch_size: expected an integer >= 1"),
    "--allow-change of no key": (lambda c: c.train(extra=["--allow-change", "nope.nothing"]),
                                 "--allow-change nope.nothing: expected a config key"),
    "--set models.nonexistent.dim=3": (lambda c: c.train("models.nonexistent.dim=3"),
                                       "models.nonexistent.dim: expected a registered method"),
    "--set models.cca.nonexistent=3": (lambda c: c.train("models.cca.nonexistent=3"),
                                       "models.cca.nonexistent: expected a field of cca's config"),
    "corrupt model_spec.json": (_run_file("model_spec.json", "{not json"), "model_spec.json: JSON: expected"),
    "model_spec.json a list": (_run_file("model_spec.json", "[1, 2]"), "model_spec.json: JSON: expected"),
    "corrupt data_fingerprint.json (resume)": (_run_file("data_fingerprint.json", "{oops", resume=True),
                                               "data_fingerprint.json: JSON: expected"),
    "corrupt splits.json": (_run_file("splits.json", "garbage"), "splits.json: JSON: expected"),
    "corrupt splits.json (resume)": (_run_file("splits.json", "garbage", resume=True), "splits.json: JSON: expected"),
    "splits.json rows out of range": (_run_file("splits.json", json.dumps({"data_dir": "x", "train": [10**6], "val": []})),
                                      "splits.json: train: expected a list of row numbers"),
    "vocab.json missing": (_run_file("vocab.json", None), "vocab.json: file: expected the vocabulary"),
    "vocab.json missing (resume)": (_run_file("vocab.json", None, resume=True), "vocab.json: file: expected the vocabulary"),
    "config.yaml not YAML": (_run_file("config.yaml", "::: [\n"), "config.yaml: cannot read YAML"),
    "files.json naming a file outside": (_files_json(lambda m: {"files": {**m["files"], "../../../etc/passwd":
                                                                          {"bytes": 1, "sha256": "0" * 64}}}),
                                         "files.json: files: expected names of files in this folder"),
    "files.json emptied": (_files_json(lambda m: {"files": {}}), "expected only the files listed in files.json"),
    # dataset folders
    "image.npy without regions.npy": (_data_edit(_image_without_regions), "inputs.image=regions needs regions.npy"),
    "a split index of 2**70": (_data_edit(_huge_split_index), "split 'train': expected row indices in [0, 120)"),
    "all-zero labels": (_data_edit(_zero("labels")), "labels.npy: labels: expected at least one item with a label"),
    "every region mask empty": (_data_edit(_zero("region_mask")), "region_mask: expected at least one region"),
    # importers
    "precomp captions not UTF-8": (lambda c: _precomp(c, captions=b"a\n\xff\xfe\nc\n"), "train_caps.txt: expected UTF-8"),
    "precomp non-integer ids": (lambda c: _precomp(c, ids="1\nx\n3\n"), "train_ids.txt: line 2: expected a COCO image id"),
    "precomp all-zero labels": (lambda c: _precomp(c, labels=np.zeros((3, 2), np.uint8)),
                                "labels.npy: labels (as written to labels.npy): expected at least one item"),
    "TSV num_boxes 0": (_tsv(0), "a.tsv: line 1 'num_boxes': expected an integer >= 1, found 0"),
    "TSV num_boxes -1": (_tsv(-1), "a.tsv: line 1 'num_boxes': expected an integer >= 1, found -1"),
    "TSV duplicate rows": (_tsv(1, duplicate=True), "a.tsv: line 2 'image_id': expected each image once"),
    "split-mat class id 1e9": (_split_mat(1e9), "train_lab.mat: labels: expected class indices up to 100000"),
    "split-mat label 1.5": (_split_mat(1.5), "train_lab.mat: labels: expected integer class indices, found 1.5"),
    "split-mat NaN feature": (_split_mat(nan_feature=True), "test_img.mat: image (as written to image.npy): expected finite"),
    "DCMH tag list not UTF-8": (_dcmh_non_utf8_tags, "tags.txt: tags.txt: expected UTF-8 text"),
    "COCO string image id": (lambda c: _coco_import(c, image_id=lambda i: f"id{i}"), "'id': expected an integer id"),
    "COCO --captions a folder": (lambda c: _coco_import(c, captions=c.tmp), "file: expected a JSON file, found a folder"),
    "COCO blank caption": (lambda c: _coco_import(c, caption=lambda i: " ... " if i == 2 else "a caption"),
                           "captions.json: line 2 (row 1) caption 0 (as written to captions.jsonl)"),
    # extract
    "extract --grid 0": (lambda c: _extract(c, _images(c), "--regions", "grid", "--grid", "0"),
                         "--grid: expected an integer in 1..32, found 0"),
    "extract --chunk 0": (lambda c: _extract(c, _images(c), "--chunk", "0"), "--chunk: expected an integer in 1..100000"),
    "extract a 400-megapixel PNG": (_extract_bomb, "img1.png: image: expected a readable image file, found DecompressionBombError"),
    "extract .jsonl not UTF-8": (lambda c: _extract(c, (lambda f: ((f / "captions.jsonl").write_bytes(
        b'{"file_name": "img0.png", "captions": ["\xff"]}\n'), f)[1])(_images(c))), "captions.jsonl: expected UTF-8"),
    "extract garbage --weights": (_extract_garbage_weights, "w.pth: --weights: expected weights for tiny-random"),
    "extract file_name through ../": (_extract_file_name("dotdot"), "expected a file inside --images"),
    "extract absolute file_name": (_extract_file_name("absolute"), "expected a file inside --images"),
    "extract symlink leading outside": (_extract_file_name("symlink"), "expected a file inside --images"),
    "extract VOC box outside the image": (_extract_voc_box_outside, "img0.xml: img0.png box 0 (red): expected x0 <= x1"),
    # evaluate, make-synthetic, text
    "evaluate --split nosuch": (lambda c: ["evaluate", str(c.run), "--split", "nosuch"],
                                "split 'nosuch': expected one of train, val, test, database"),
    "evaluate --json a folder": (lambda c: ["evaluate", str(c.run), "--json", str(c.tmp)],
                                 "expected a file path in an existing folder, found a folder"),
    "evaluate --k 0": (lambda c: ["evaluate", str(c.run), "--k", "0"], "--folds / --k: expected integers >= 1"),
    "make-synthetic num_items=0": (lambda c: ["make-synthetic", str(c.tmp / "out"), "--preset", "tiny", "--set", "num_items=0"],
                                   "num_items: expected an integer >= 2, found 0"),
    "make-synthetic num_labels=0": (lambda c: ["make-synthetic", str(c.tmp / "out"), "--preset", "tiny", "--set",
                                               "num_labels=0"], "num_labels: expected an integer >= 1, found 0"),
    "make-synthetic image_strength=-3": (lambda c: ["make-synthetic", str(c.tmp / "out"), "--preset", "tiny", "--set",
                                                    "image_strength=-3"], "image_strength: expected a number in 0..1"),
    "NaN in a word2vec file": (_nan_word_vectors, "wv.txt: vector of 'the': expected finite numbers"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_input_is_one_line_and_leaves_nothing(tiny_data_dir, finished_run, tmp_path, capsys, name):
    build, shown = CASES[name]
    argv = build(Case(tmp_path, tiny_data_dir, finished_run))
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.replace("\r", "\n").splitlines() if "semshare: error:" in line]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert shown in errors[0], errors[0]
    assert not (tmp_path / "out").exists()  # no half-made run, dataset or import


def test_an_allowed_optimizer_change_resumes_with_a_fresh_optimizer(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *FAST, *SMALL]) == 0
    longer = [a if a != "train.epochs=1" else "train.epochs=2" for a in FAST]
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *longer, *SMALL, "--resume",
                 "--set", "train.optimizer=sgd", "--allow-change", "train.optimizer", "--allow-change", "train.epochs"]) == 0
    assert json.loads((run / "last" / "state.json").read_text())["epoch"] == 2


def test_an_error_naming_lone_surrogates_is_printed_escaped(tiny_data_dir, tmp_path, capsys):
    """A key read from a broken config.yaml may be a lone surrogate ("\\ud800"): the one-line error shows it
    escaped instead of failing to encode it (found by the property test of broken run folders)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text('"\\ud800x": 1\n')
    (tmp_path / "run" / "model_spec.json").write_text("{}")
    assert main(["evaluate", str(tmp_path / "run"), "--data", str(tiny_data_dir)]) == 2
    assert "unknown config key \\ud800x" in capsys.readouterr().err
