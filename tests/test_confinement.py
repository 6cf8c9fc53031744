"""Names are never paths, and comparisons stay on one dataset (issue 34): a user-controlled name (a dataset's
meta.json name, a method) becomes one safe folder name, every write stays under the folder the user gave,
and two datasets that would share a folder are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from semshare.cli.main import main
from semshare.names import folder_name

HOSTILE_NAMES = ["../../../x", "..", ".", "a/b", "/etc/passwd", "x\x00y", "a" * 300, "C:\\win", " spaced out ",
                 ".hidden", "\ud800", "名前"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_name_becomes_one_safe_component(name):
    safe = folder_name(name)
    assert safe and len(safe) <= 80 and "/" not in safe and "\\" not in safe and "\x00" not in safe
    assert not safe.startswith(".") and safe not in (".", "..")
    assert Path(safe).name == safe


def test_safe_names_are_kept_and_different_names_stay_different():
    for name in ("coco_2k", "synthetic-tiny", "wikipedia", "pascal_sentences_img", "v1.2"):
        assert folder_name(name) == name
    names = ["a/b", "a_b", "a?b", "a b", "A/b", "a" * 300, "a" * 301]
    assert len({folder_name(n) for n in names}) == len(names)


def _named_copy(source: Path, folder: Path, name: str) -> Path:
    shutil.copytree(source, folder)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "name": name}))
    return folder


@pytest.mark.parametrize("name", ["../../../escaped", "/tmp/absolute-escape", "a/../../b"])
def test_a_dataset_name_that_is_a_path_never_leaves_the_benchmark_folder(tiny_data_dir, tmp_path, name):
    data = _named_copy(tiny_data_dir, tmp_path / "work" / "data", name)
    out = tmp_path / "work" / "deep" / "bench"
    assert main(["benchmark", "--data", str(data), "--methods", "cca", "--threads", "1", "--out", str(out)]) == 0
    written = {p for p in (tmp_path / "work").rglob("*") if p.is_file()} - {p for p in data.rglob("*") if p.is_file()}
    assert written and all(p.is_relative_to(out) for p in written), sorted(map(str, written))[:5]
    assert not Path("/tmp/absolute-escape").exists()
    results = json.loads((out / "results.json").read_text())
    assert [Path(r["run_dir"]).parent.name for r in results] == [folder_name(name)]


def test_two_datasets_of_one_name_are_refused_not_merged(tiny_data_dir, tmp_path, capsys):
    first = _named_copy(tiny_data_dir, tmp_path / "one", "shared")
    second = _named_copy(tiny_data_dir, tmp_path / "two", "Shared")  # one folder on a case-blind file system
    code = main(["benchmark", "--data", str(first), "--data", str(second), "--methods", "cca", "--threads", "1",
                 "--out", str(tmp_path / "bench")])
    err = capsys.readouterr().err
    assert code == 2 and "are both named" in err and "Traceback" not in err
    assert not list((tmp_path / "bench").glob("*/cca-seed0"))


def test_compare_refuses_two_benchmarks_of_different_data(tiny_data_dir, tmp_path, capsys):
    changed = _named_copy(tiny_data_dir, tmp_path / "changed", json.loads((tiny_data_dir / "meta.json").read_text())["name"])
    lines = (changed / "captions.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["captions"] = ["an entirely different caption"] * len(record["captions"])
    (changed / "captions.jsonl").write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    for data, out in ((tiny_data_dir, "a"), (changed, "b")):
        assert main(["benchmark", "--data", str(data), "--methods", "cca", "--threads", "1", "--out", str(tmp_path / out)]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "trained on different data" in err and "Traceback" not in err


def test_prepare_text_and_extract_text_never_write_into_a_run(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "ridge", "--out", str(run), "--threads", "1"]) == 0
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for out in (run, run / "sub"):
        capsys.readouterr()
        assert main(["prepare-text", str(tiny_data_dir), "--out", str(out), "--dim", "8", "--epochs", "1"]) == 2
        assert "never rewrites a run's vocabulary" in capsys.readouterr().err
    assert main(["extract-text", str(tiny_data_dir), "--out", str(run / "segments")]) == 2
    assert "inside the run folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # its own folder: written once, refused a second time unless --overwrite, and a folder of other files never
    prepared = tmp_path / "prepared"
    args = ["prepare-text", str(tiny_data_dir), "--out", str(prepared), "--dim", "8", "--epochs", "1"]
    assert main(args) == 0 and sorted(p.name for p in prepared.iterdir()) == ["vocab.json", "word_vectors.safetensors"]
    assert main(args) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main(["prepare-text", str(tiny_data_dir), "--out", str(tmp_path / "other"), "--overwrite"]) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err
