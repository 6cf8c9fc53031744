"""A model that travels (issue 33): `semshare export` writes a self-contained package that loads with no dataset
and no network, gives the same embeddings to the last bit, and says in one line what is wrong with a damaged
or newer one."""

import json
import shutil

import numpy as np
import pytest

from semshare.cli.main import main

FAST = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
        "--set", "text.word2vec_epochs=1", "--set", "model.dim=16", "--set", "model.heads=2"]


@pytest.fixture(scope="module")
def project(tiny_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("package")
    shutil.copytree(tiny_data_dir, root / "data")
    assert main(["train", "--data", str(root / "data"), "--out", str(root / "run"), *FAST]) == 0
    assert main(["fit-instance", str(root / "run"), "--set", "epochs=2"]) == 0
    assert main(["evaluate", str(root / "run"), "--json", str(root / "eval.json")]) == 0
    return root


def test_an_exported_package_loads_elsewhere_without_its_data_to_the_same_bits(project, tmp_path):
    import semshare

    assert main(["export", str(project / "run"), str(tmp_path / "pkg")]) == 0
    card = (tmp_path / "pkg" / "README.md").read_text()
    assert "## Trained on" in card and "labels sha256" in card and "## Test metrics" in card
    record = json.loads((tmp_path / "pkg" / "package.json").read_text())
    assert record["format"] == "semshare-package" and "best/model.safetensors" in record["files"]
    original = semshare.load_run(project / "run")
    captions = [original.dataset.captions[row][0] for row in range(8)]
    expected = original.encode_texts(captions)
    label_names = list(original.dataset.label_names)
    moved = tmp_path / "elsewhere" / "pkg"  # another place, and the dataset out of reach
    shutil.copytree(tmp_path / "pkg", moved)
    packaged = semshare.load_run(moved)
    assert packaged.dataset is None and packaged.ranking == "combined" and packaged.label_names == label_names
    np.testing.assert_array_equal(packaged.encode_texts(captions), expected)
    np.testing.assert_array_equal(packaged.predict_labels(texts=captions[:3]), original.predict_labels(texts=captions[:3]))
    # every command that takes RUN takes it, given the data its rows come from
    assert main(["evaluate", str(moved), "--data", str(project / "data"), "--json", str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads((project / "eval.json").read_text())


def test_a_tar_package_loads_and_a_damaged_or_newer_one_is_one_line(project, tmp_path, capsys):
    import semshare
    from semshare.errors import SemshareError

    assert main(["export", str(project / "run"), str(tmp_path / "pkg"), "--tar", "--ranking", "label"]) == 0
    archive = tmp_path / "pkg.tar.gz"
    assert archive.is_file() and not (tmp_path / "pkg").exists()
    run, source = semshare.load_run(archive), semshare.load_run(project / "run", ranking="label")
    caption = source.dataset.captions[3][0]
    assert run.ranking == "label"
    np.testing.assert_array_equal(run.encode_texts([caption]), source.encode_texts([caption]))
    assert main(["export", str(project / "run"), str(tmp_path / "folder")]) == 0
    weights = tmp_path / "folder" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(SemshareError, match="model.safetensors: sha256: expected the exported file's"):
        semshare.load_run(tmp_path / "folder")
    (tmp_path / "folder" / "best" / "model.safetensors").unlink()
    assert main(["evaluate", str(tmp_path / "folder"), "--data", str(project / "data")]) == 2
    assert "model.safetensors: file: expected it in the package" in capsys.readouterr().err
    path = tmp_path / "folder" / "package.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "version": 99}))
    with pytest.raises(SemshareError, match="written by a newer semshare"):
        semshare.load_run(tmp_path / "folder")
