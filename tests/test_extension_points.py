"""The extension points (issue 31, docs/MODEL.md): a new index backend, import format and annotation format is one
file each (tests/extensions/), and the command line, the API and their help take it with no other edit."""

import json

import numpy as np
import pytest

import extensions.toy_annotations  # noqa: F401  (each file registers its entry, as a module under src/ would)
import extensions.toy_import  # noqa: F401
import extensions.toy_index  # noqa: F401
from semshare.cli.main import main
from semshare.data.dataset import open_dataset
from semshare.index import build_backend


def test_a_new_index_backend_ranks_as_the_reference_and_reaches_the_command_line(tiny_data_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(50, 8)), rng.normal(size=(5, 8)).astype(np.float32)
    ours = build_backend("numpy-flat", vectors, {"block": 2}).search(queries, 7)
    reference = build_backend("exact-torch", vectors).search(queries, 7)
    np.testing.assert_array_equal(ours[1], reference[1])
    np.testing.assert_allclose(ours[0], reference[0], atol=1e-5)

    assert main(["index", "kinds"]) == 0
    assert "numpy-flat: exact: NumPy brute force" in capsys.readouterr().out
    assert main(["train", "--data", str(tiny_data_dir), "--method", "ridge", "--out", str(tmp_path / "run")]) == 0
    assert main(["index", "build", str(tmp_path / "run"), "--side", "image", "--kind", "numpy-flat",
                 "--param", "block=4", "--out", str(tmp_path / "index")]) == 0
    assert main(["index", "build", str(tmp_path / "run"), "--side", "image", "--out", str(tmp_path / "flat")]) == 0
    capsys.readouterr()

    def search(index: str) -> list[int]:
        assert main(["search", str(tmp_path / index), "--image-id", "3", "-k", "5", "--json"]) == 0
        return [hit["id"] for hit in json.loads(capsys.readouterr().out)["results"]]

    ours_hits = search("index")
    assert ours_hits == search("flat") and ours_hits[0] == 3
    assert main(["search", str(tmp_path / "index"), "--image-id", "3", "--param", "block=1", "--json"]) == 0
    assert main(["search", str(tmp_path / "index"), "--image-id", "3", "--param", "nprobe=1"]) == 2
    assert "unknown parameter(s) nprobe; accepted: block" in capsys.readouterr().err


def test_a_new_import_format_gets_its_subcommand_and_flags(tmp_path, capsys):
    rows = [("a dog on a sofa", "dog|sofa"), ("a cat", "cat"), ("two dogs", "dog"), ("a cat on a sofa", "cat|sofa"),
            ("a dog and a cat", "cat|dog")]
    (tmp_path / "pairs.csv").write_text("caption,labels\n" + "".join(f"{c},{labels}\n" for c, labels in rows))
    np.save(tmp_path / "features.npy", np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    assert "labelled-csv" in capsys.readouterr().out
    assert main(["import", "labelled-csv", str(tmp_path / "pairs.csv"), "--features", str(tmp_path / "features.npy"),
                 "--out", str(tmp_path / "data")]) == 0
    dataset = open_dataset(tmp_path / "data")
    assert dataset.label_names == ["cat", "dog", "sofa"] and dataset.captions[0] == ["a dog on a sofa"]
    np.testing.assert_array_equal(np.asarray(dataset.labels)[0], [0, 1, 1])
    with pytest.raises(SystemExit):  # its declared required flag
        main(["import", "labelled-csv", str(tmp_path / "pairs.csv"), "--out", str(tmp_path / "x")])
    assert "the following arguments are required: --features" in capsys.readouterr().err


def test_a_new_annotation_format_gives_extract_its_flag(tmp_path, capsys):
    from PIL import Image

    images, tags = tmp_path / "images", tmp_path / "tags"
    images.mkdir()
    tags.mkdir()
    lines = []
    for i, labels in enumerate([["red"], ["blue"], ["red", "blue"], ["blue"]]):
        Image.new("RGB", (40, 30), (200 * (i % 2), 40, 90)).save(images / f"im{i}.png")
        (tags / f"im{i}.tags").write_text("\n".join(labels) + "\n")
        lines.append(json.dumps({"file_name": f"im{i}.png", "captions": [f"picture {i}"]}))
    (images / "captions.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    assert "--tags DIR" in capsys.readouterr().out
    common = ["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"), "--backbone",
              "tiny-random", "--grid", "2"]
    assert main(common + ["--tags", str(tags), "--out", str(tmp_path / "data")]) == 0
    dataset = open_dataset(tmp_path / "data")
    assert dataset.label_names == ["blue", "red"]
    np.testing.assert_array_equal(np.asarray(dataset.labels), [[0, 1], [1, 0], [1, 1], [1, 0]])
    capsys.readouterr()
    assert main(common + ["--tags", str(tags), "--voc-annotations", str(tags), "--out", str(tmp_path / "x")]) == 2
    assert "give the annotations of one format" in capsys.readouterr().err
