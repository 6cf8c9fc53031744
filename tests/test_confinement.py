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


RIDGE = ["--method", "ridge", "--threads", "1"]


def _train(tiny_data_dir, out, *extra):
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(out), *RIDGE, *extra]) == 0
    return out


def test_a_checkpoint_from_another_run_is_refused_whether_copied_or_linked(tiny_data_dir, tmp_path, capsys):
    from semshare.training.experiment import load_run
    from semshare.errors import SemshareError

    a, b = _train(tiny_data_dir, tmp_path / "a"), _train(tiny_data_dir, tmp_path / "b", "--set", "train.seed=1")
    ids = [json.loads((run / "identity.json").read_text())["run_id"] for run in (a, b)]
    assert ids[0] != ids[1] and all(len(i) == 32 for i in ids)
    load_run(a)
    shutil.rmtree(a / "best")
    shutil.copytree(b / "best", a / "best")
    with pytest.raises(SemshareError, match=f"written by run {ids[1]}, but .* is run {ids[0]}"):
        load_run(a)
    shutil.rmtree(a / "best")
    (a / "best").symlink_to(b / "best")
    capsys.readouterr()
    assert main(["evaluate", str(a)]) == 2
    assert "this checkpoint was written by run" in capsys.readouterr().err


def test_a_checkpoint_whose_embedded_config_is_not_config_yamls_is_refused(tiny_data_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    from semshare.errors import SemshareError
    from semshare.fileio import write_files_manifest
    from semshare.training.experiment import load_run

    run = _train(tiny_data_dir, tmp_path / "run")
    weights = run / "best" / "model.safetensors"
    tensors = load_file(str(weights))
    for config in ({"train": 5}, {**json.loads(json.dumps({"method": "cca", "model": {}, "inputs": {}}))}):
        save_file(tensors, str(weights), metadata={"config": json.dumps(config)})
        write_files_manifest(run / "best")
        with pytest.raises(SemshareError, match="config|the checkpoint was trained with"):
            load_run(run)


def test_an_index_answers_only_with_the_run_and_weights_that_made_it(tiny_data_dir, tmp_path, capsys):
    from semshare.search.gallery import load_index
    from semshare.errors import SemshareError

    a, b = _train(tiny_data_dir, tmp_path / "a"), _train(tiny_data_dir, tmp_path / "b", "--set", "train.seed=1")
    assert main(["index", "build", str(a), "--side", "text", "--out", str(tmp_path / "idx")]) == 0
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["run_id"] == json.loads((a / "identity.json").read_text())["run_id"] and manifest["checkpoint_sha256"]
    load_index(tmp_path / "idx")
    # pointed at another run
    manifest_path.write_text(json.dumps({**manifest, "run_dir": str(b), "run_dir_absolute": str(b)}))
    from semshare.fileio import write_files_manifest

    write_files_manifest(tmp_path / "idx")
    with pytest.raises(SemshareError, match="embedded by run .* but .* is run"):
        load_index(tmp_path / "idx")
    manifest_path.write_text(json.dumps(manifest))
    write_files_manifest(tmp_path / "idx")
    # the run deleted and trained again at the same path: another run
    shutil.rmtree(a)
    _train(tiny_data_dir, a, "--set", "train.seed=2")
    capsys.readouterr()
    assert main(["search", str(tmp_path / "idx"), "--text", "a b", "-k", "2"]) == 2
    assert "run_id: the gallery was embedded by run" in capsys.readouterr().err


def test_folders_from_before_identities_still_load(tiny_data_dir, tmp_path):
    from semshare.search.gallery import load_index
    from semshare.fileio import write_files_manifest
    from semshare.training.experiment import load_run

    run = _train(tiny_data_dir, tmp_path / "run")
    assert main(["index", "build", str(run), "--side", "text", "--out", str(tmp_path / "idx")]) == 0
    (run / "identity.json").unlink()
    manifest_path = tmp_path / "idx" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({k: v for k, v in manifest.items() if k not in ("run_id", "checkpoint_sha256")}))
    write_files_manifest(tmp_path / "idx")
    load_run(run)
    assert load_index(tmp_path / "idx").manifest.run_id == ""


@pytest.mark.parametrize("k", [10**9, 0, 2.5, None, "3", True])
def test_the_python_api_caps_and_checks_k_like_the_cli(tiny_data_dir, tmp_path, k):
    from semshare.errors import SemshareError
    from semshare.search.gallery import load_index

    run = _train(tiny_data_dir, tmp_path / "run")
    assert main(["index", "build", str(run), "--side", "text", "--out", str(tmp_path / "idx")]) == 0
    index = load_index(tmp_path / "idx")
    with pytest.raises(SemshareError, match=r"k: expected an integer in 1\.\.1000"):
        index.search_text("a b", k=k)


@pytest.mark.parametrize("rows, shown", [("abc", "expected a sequence of row numbers"), ([1.5], "of integers"),
                                         ([[1, 2]], "1-D sequence")])
def test_encode_images_takes_whole_row_numbers_only(tiny_data_dir, tmp_path, rows, shown):
    from semshare.errors import SemshareError
    from semshare.training.experiment import load_run

    run = load_run(_train(tiny_data_dir, tmp_path / "run"))
    with pytest.raises(SemshareError, match=shown):
        run.encode_images(rows=rows)
    assert run.encode_images(rows=[1, 2]).shape[0] == 2


def _cli_pair(first: list[str], second: list[str], cwd: Path) -> list[int]:
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "semshare.cli", *args], cwd=cwd, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for args in (first, second)]
    codes = [p.wait() for p in processes]
    for process, code in zip(processes, codes):
        err = process.stderr.read()
        assert "Traceback" not in err, err
        if code:
            assert code == 2 and len([l for l in err.splitlines() if "semshare: error:" in l]) == 1, err
    return codes


SYNTHETIC = ["make-synthetic", "out", "--preset", "tiny"]
TRAIN_OUT = ["--out", "out", "--method", "ridge", "--threads", "1"]


@pytest.mark.parametrize("pair", ["make-synthetic twice", "make-synthetic and train", "train twice",
                                  "import coco twice", "index build twice", "index build and make-synthetic"])
def test_two_writers_of_one_folder_one_succeeds_the_other_is_refused_nothing_mixed(tiny_data_dir, tmp_path, pair):
    train = ["train", "--data", str(tiny_data_dir), *TRAIN_OUT]
    commands = {"make-synthetic twice": (SYNTHETIC, SYNTHETIC), "make-synthetic and train": (SYNTHETIC, train),
                "train twice": (train, train)}
    if "coco" in pair:
        from test_importers import write_coco

        caps, inst, _ = write_coco(tmp_path, list(range(1, 400)))
        coco = ["import", "coco", "--captions", str(caps), "--instances", str(inst), "--out", "out"]
        commands[pair] = (coco, coco)
    if "index" in pair:
        run = _train(tiny_data_dir, tmp_path / "run")
        index = ["index", "build", str(run), "--side", "text", "--out", "out", "--threads", "1"]
        commands[pair] = (index, index) if pair == "index build twice" else (index, SYNTHETIC)
    first, second = commands[pair]
    codes = _cli_pair(first, second, tmp_path)
    assert sorted(codes) == [0, 2], codes
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    kinds = [marker for marker in ("meta.json", "config.yaml", "manifest.json") if marker in names]
    assert len(kinds) == 1, sorted(names)  # one kind of folder, whole
    winner = [first, second][codes.index(0)]
    expected = {"make-synthetic": "meta.json", "import": "meta.json", "train": "config.yaml", "index": "manifest.json"}
    assert kinds[0] == expected[winner[0]]
    if kinds[0] == "manifest.json":
        from semshare.search.gallery import load_index

        load_index(out)
    elif kinds[0] == "config.yaml":
        from semshare.training.experiment import load_run

        load_run(out)
    else:
        from semshare.data.dataset import open_dataset

        open_dataset(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left behind


def _limited_file_size(limit: int):
    def limit_writes():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_writes


@pytest.mark.parametrize("command", ["make-synthetic", "index build"])
def test_a_full_disk_is_one_line_naming_the_folder_and_leaves_nothing(tiny_data_dir, tmp_path, command):
    import os
    import subprocess
    import sys

    if command == "make-synthetic":
        args = ["make-synthetic", str(tmp_path / "out"), "--preset", "tiny", "--set", "num_items=4000"]
    else:
        run = _train(tiny_data_dir, tmp_path / "run")
        args = ["index", "build", str(run), "--side", "text", "--kind", "exact-torch", "--out", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "semshare.cli", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, preexec_fn=_limited_file_size(20_000), timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "semshare: error:" in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr and "File too large" in errors[0], done.stderr[-2000:]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_sigterm_stops_training_in_one_line_and_the_run_resumes(tiny_data_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = ["train", "--data", str(tiny_data_dir), "--out", str(run), "--threads", "1", "--set", "train.epochs=15",
            "--set", "train.patience=0", "--set", "train.progress=false", "--set", "models.semantic_sharing.dim=16",
            "--set", "models.semantic_sharing.heads=2", "--set", "text.word_dim=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "semshare.cli", *args], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "last" / "state.json").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    err = process.communicate(timeout=60)[1]
    assert process.returncode == 143 and "stopped by SIGTERM" in err and "Traceback" not in err, err[-2000:]
    done = subprocess.run([sys.executable, "-m", "semshare.cli", *args, "--resume"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((run / "last" / "state.json").read_text())["epoch"] == 15


def test_overwrite_replaces_only_a_folder_of_its_own_kind(tiny_data_dir, tmp_path, capsys):
    run = _train(tiny_data_dir, tmp_path / "run")
    before = sorted(p.name for p in run.iterdir())
    for argv in (["make-synthetic", str(run), "--preset", "tiny", "--overwrite"],
                 ["index", "build", str(run), "--side", "text", "--out", str(run), "--overwrite"]):
        capsys.readouterr()
        assert main(argv) == 2
        assert "holds a run, not what this command writes" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before
    # its own kind is replaced
    data = tmp_path / "data"
    assert main(["make-synthetic", str(data), "--preset", "tiny"]) == 0
    assert main(["make-synthetic", str(data), "--preset", "tiny", "--overwrite", "--seed", "3"]) == 0
