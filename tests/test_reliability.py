"""Reliability: resume never corrupts a run; user errors are one line; killed runs resume to the same result."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semshare.cli.main import main

TRAIN = ["--set", "train.epochs=3", "--set", "train.batch_size=16", "--set", "train.log_every=2",
         "--set", "train.progress=false", "--set", "models.semantic_sharing.dim=16",
         "--set", "models.semantic_sharing.heads=2", "--set", "text.word2vec_epochs=1", "--set", "text.word_dim=8"]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def without_timing(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "items_per_s"} for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def finished_run(tiny_data_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("resume") / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "ours", "--out", str(run), *TRAIN]) == 0
    return run


@pytest.mark.parametrize("change, field", [
    (["--set", "models.semantic_sharing.dim=32"], "model.dim"),
    (["--set", "train.lr=0.5"], "train.lr"),
    (["--method", "wo_c"], "name"),
])
def test_resume_with_other_settings_is_refused_and_changes_nothing(tiny_data_dir, finished_run, capsys, change, field):
    before = snapshot(finished_run)
    args = ["train", "--data", str(tiny_data_dir), "--method", "ours", "--out", str(finished_run), *TRAIN, "--resume"]
    if change[0] == "--method":
        args[args.index("--method") + 1] = change[1]
    else:
        args += change
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f": {field}: the run has " in err and "Traceback" not in err
    assert snapshot(finished_run) == before


def test_resume_on_other_data_is_refused(tmp_path, finished_run, capsys):
    from semshare.data.synthetic import make_synthetic, preset

    other = make_synthetic(tmp_path / "other", preset("tiny", seed=3), name="tiny", progress=False)
    before = snapshot(finished_run)
    assert main(["train", "--data", str(other), "--method", "ours", "--out", str(finished_run), *TRAIN, "--resume"]) == 2
    assert "the run was trained on" in capsys.readouterr().err
    assert snapshot(finished_run) == before


def test_allowed_change_resumes_and_the_log_equals_an_uninterrupted_one(tiny_data_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(straight), *TRAIN]) == 0
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(resumed), *TRAIN, "--set", "train.epochs=1"]) == 0
    # a killed run's records after its last checkpoint: dropped on resume
    with open(resumed / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps({"step": 999, "epoch": 1, "train/loss": 1.0}) + "\n" + '{"step": 10')
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(resumed), *TRAIN, "--resume",
                 "--allow-change", "train.epochs"]) == 0
    assert without_timing(resumed / "metrics.jsonl") == without_timing(straight / "metrics.jsonl")


def test_a_fresh_start_in_a_folder_without_checkpoint_starts_the_log_over(tiny_data_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "epoch": 0, "train/loss": 9.0}) + "\n")
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *TRAIN, "--set", "train.epochs=1"]) == 0
    steps = [r["step"] for r in without_timing(run / "metrics.jsonl")]
    assert steps.count(1) == 1 and steps == sorted(steps)


CORRUPTIONS = {
    "truncated weights": lambda run: _truncate(run / "best" / "model.safetensors"),
    "random weights": lambda run: (run / "best" / "model.safetensors").write_bytes(os.urandom(2000)),
    "empty weights": lambda run: (run / "best" / "model.safetensors").write_bytes(b""),
    "missing weights": lambda run: (run / "best" / "model.safetensors").unlink(),
    "truncated state": lambda run: _truncate(run / "best" / "state.json"),
    "sizes that do not fit the weights": lambda run: _edit_json(run / "model_spec.json", region_dim=7),
    "broken model spec": lambda run: _truncate(run / "model_spec.json"),
}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("manifest", [True, False], ids=["with-manifest", "without-manifest"])
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(tiny_data_dir, finished_run, tmp_path, capsys, case, manifest):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    if not manifest:  # a folder written before manifests existed: the readers still catch it
        (run / "best" / "files.json").unlink()
    CORRUPTIONS[case](run)
    assert main(["evaluate", str(run), "--data", str(tiny_data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(run) in err, err
    assert "np.int64" not in err


INDEX_CORRUPTIONS = {
    "truncated index.faiss": lambda index: _truncate(index / "index.faiss"),
    "truncated ids.npy": lambda index: _truncate(index / "ids.npy"),
    "truncated items.jsonl": lambda index: _truncate(index / "items.jsonl"),
    "random manifest": lambda index: (index / "manifest.json").write_bytes(os.urandom(100)),
}


@pytest.fixture(scope="module")
def built_index(tiny_data_dir, finished_run, tmp_path_factory):
    index = tmp_path_factory.mktemp("index") / "index"
    assert main(["index", "build", str(finished_run), "--data", str(tiny_data_dir), "--side", "image",
                 "--out", str(index)]) == 0
    return index


@pytest.mark.parametrize("case", sorted(INDEX_CORRUPTIONS))
@pytest.mark.parametrize("manifest", [True, False], ids=["with-manifest", "without-manifest"])
def test_a_corrupt_index_is_one_line_naming_the_file(built_index, tmp_path, capsys, case, manifest):
    import shutil

    index = tmp_path / "index"
    shutil.copytree(built_index, index)
    if not manifest:
        (index / "files.json").unlink()
    INDEX_CORRUPTIONS[case](index)
    assert main(["search", str(index), "--image-id", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and str(index) in err, err


def _garbage_inputs(folder: Path) -> dict[str, list[str]]:
    junk = os.urandom(4000)
    for name in ("junk.json", "junk.tsv", "junk.npy", "junk.mat"):
        (folder / name).write_bytes(junk)
    (folder / "caps.jsonl").write_text(json.dumps({"image_id": 1, "captions": ["a cat"]}) + "\n")
    (folder / "pre").mkdir()
    np.save(folder / "pre" / "train_ims.npy", np.zeros((10, 4, 8), np.float32))
    full = (folder / "pre" / "train_ims.npy").read_bytes()
    (folder / "pre" / "train_ims.npy").write_bytes(full[: len(full) // 3])  # truncated
    (folder / "pre" / "train_caps.txt").write_text("a cat\n" * 50)
    (folder / "sm").mkdir()
    for name in ("train_img", "train_txt", "train_lab", "test_img", "test_txt", "test_lab"):
        (folder / "sm" / f"{name}.mat").write_bytes(junk)
    return {
        "coco": ["import", "coco", "--captions", "junk.json", "--instances", "junk.json"],
        "precomp truncated": ["import", "precomp", "pre", "--labels", "junk.npy", "--splits", "train"],
        "bottomup-tsv": ["import", "bottomup-tsv", "junk.tsv", "--captions", "caps.jsonl", "--labels", "junk.npy"],
        "bottomup-tsv captions": ["import", "bottomup-tsv", "junk.tsv", "--captions", "junk.json", "--labels", "junk.npy"],
        "split-mat": ["import", "split-mat", "sm"],
        "dcmh-mat": ["import", "dcmh-mat", "--labels", "junk.mat", "--tags", "junk.mat", "--tag-list", "junk.json"],
    }


@pytest.mark.parametrize("case", ["coco", "precomp truncated", "bottomup-tsv", "bottomup-tsv captions", "split-mat",
                                  "dcmh-mat"])
def test_importers_given_garbage_bytes_say_one_line_and_leave_nothing(tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    args = _garbage_inputs(tmp_path)[case]
    assert main([*args, "--out", "out"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "allow_pickle" not in err, err
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize("assignment, message", [
    ("train.batch_size=0", "train.batch_size: expected an integer >= 1, found 0"),
    ("train.lr=-1", "train.lr: expected a positive number, found -1.0"),
    ("train.optimizer=adagrad", "train.optimizer: expected one of adam, adamw, sgd, found 'adagrad'"),
    ("inputs.text=bow", "inputs.text: expected one of words, vector, segments, found 'bow'"),
    ("model.heads=3", "model.dim: expected a multiple of model.heads (3), found 128"),
    ("model.loss.mask_prob=1.5", "model.loss.mask_prob / model.dropout: expected fractions in [0, 1)"),
    ("model.loss.context_weight=-0.1", "model.loss.context_weight: expected a number >= 0, found -0.1"),
    ("train.batch_size=big", "train.batch_size: expected an integer, got 'big'"),
])
def test_bad_set_values_are_one_line_and_create_nothing(tiny_data_dir, tmp_path, capsys, assignment, message):
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(tmp_path / "run"), "--set", assignment]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_train_on_a_missing_folder_leaves_no_output(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert "nowhere: dataset folder: expected an existing folder" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "semshare.cli", *args]


def _run_timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=ENV, check=True, capture_output=True)
    return time.perf_counter() - started


def _kill_then_finish(command: list[str], rerun: list[str], delay: float, cwd: Path, out: Path) -> None:
    """Start `command`, SIGKILL it after `delay` seconds, then run `rerun` to the end. A process that
    finished before the kill (a loaded machine runs faster the second time, warm caches) is started
    again from scratch with half the delay, so the test always tests a kill."""
    import shutil

    for _ in range(4):
        process = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        if process.wait() == -signal.SIGKILL:
            break
        shutil.rmtree(cwd / out, ignore_errors=True)
        delay /= 2
    else:
        raise AssertionError("the command always finished before the kill")
    subprocess.run(rerun, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# seeded "random points": a fraction of the uninterrupted run's wall time (start-up included)
KILL_FRACTIONS = np.random.default_rng(12).uniform(0.45, 0.8, 3)


def test_train_killed_at_a_random_point_resumes_to_the_uninterrupted_weights(tiny_data_dir, tmp_path):
    from safetensors.torch import load_file

    args = ["train", "--data", str(tiny_data_dir), *TRAIN, "--set", "train.epochs=4", "--threads", "1"]
    seconds = _run_timed(_cli(*args, "--out", "straight"), tmp_path)
    _kill_then_finish(_cli(*args, "--out", "killed"), _cli(*args, "--out", "killed", "--resume"),
                      KILL_FRACTIONS[0] * seconds, tmp_path, Path("killed"))
    straight, killed = (load_file(str(tmp_path / r / "last" / "model.safetensors")) for r in ("straight", "killed"))
    assert straight.keys() == killed.keys()
    assert all(bool((straight[k] == killed[k]).all()) for k in straight)
    assert without_timing(tmp_path / "killed" / "metrics.jsonl") == without_timing(tmp_path / "straight" / "metrics.jsonl")


def test_benchmark_killed_at_a_random_point_resumes_to_the_same_table(tmp_path):
    args = ["benchmark", "--quick", "--methods", "ridge,wo_c,dscmr,st", "--threads", "1"]
    seconds = _run_timed(_cli(*args, "--out", "straight"), tmp_path)
    _kill_then_finish(_cli(*args, "--out", "killed"), _cli(*args, "--out", "killed"), KILL_FRACTIONS[1] * seconds,
                      tmp_path, Path("killed"))
    tests = lambda out: {(r["method"], r["seed"]): r["test"] for r in json.loads((tmp_path / out / "results.json").read_text())}
    assert tests("killed") == tests("straight")


def test_extract_killed_at_a_random_point_resumes_to_the_same_arrays(tmp_path):
    from test_extract import make_images

    images = make_images(tmp_path / "imgs", count=120)
    args = ["extract", "--images", str(images), "--captions", str(images / "captions.jsonl"), "--voc-annotations",
            str(images / "xml"), "--backbone", "tiny-random", "--chunk", "4"]
    seconds = _run_timed(_cli(*args, "--out", "straight"), tmp_path)
    _kill_then_finish(_cli(*args, "--out", "killed"), _cli(*args, "--out", "killed"), KILL_FRACTIONS[2] * seconds,
                      tmp_path, Path("killed"))
    for name in ("regions.npy", "region_boxes.npy", "region_mask.npy", "image.npy", "labels.npy", "captions.jsonl"):
        assert (tmp_path / "killed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name


def _writing_time(command: list[str], cwd: Path, marker: str, done: str) -> float:
    """Seconds from the first path matching `marker` to the `done` path, in one uninterrupted run: the span
    in which a kill interrupts the writing (not Python's start-up or exit)."""
    process = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = ended = None
    while process.poll() is None and ended is None:
        now = time.perf_counter()
        if began is None and list(cwd.glob(marker)):
            began = now
        if began is not None and (cwd / done).exists():
            ended = now
        time.sleep(0.001)
    assert process.wait() == 0 and began is not None
    return (ended or time.perf_counter()) - began


def _kill_while_writing(command: list[str], rerun: list[str] | None, cwd: Path, marker: str, work: float,
                        fraction: float) -> None:
    """Start `command`, wait until it has begun writing (a path matching `marker` exists: the start-up of
    Python and torch is not what is tested), SIGKILL it `fraction` of its writing time later, then run
    `rerun` to the end (None: nothing to rerun). The kill must really have happened."""
    for attempt in range(4):
        process = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and not list(cwd.glob(marker)):
            time.sleep(0.002)
        time.sleep(fraction * work / 2**attempt)
        process.send_signal(signal.SIGKILL)
        if process.wait() == -signal.SIGKILL:
            break
    else:
        raise AssertionError("the command always finished before the kill")
    if rerun is not None:
        subprocess.run(rerun, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _files(folder: Path) -> dict:
    """Every file's bytes; JSON files without their creation time, weights without the run's id (the things
    two runs may differ in: each run has its own identity)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name not in ("files.json", "identity.json"):
            content = path.read_bytes()
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), framework="np") as handle:
                    metadata = {k: v for k, v in (handle.metadata() or {}).items() if k != "run_id"}
                    content = {"metadata": metadata, "tensors": {
                        k: hashlib.sha256(handle.get_tensor(k).tobytes()).hexdigest() for k in handle.keys()}}
            if path.suffix == ".json":
                loaded = json.loads(content)
                content = {k: v for k, v in loaded.items() if k != "created"} if isinstance(loaded, dict) else loaded
            found[str(path.relative_to(folder))] = content
    return found


WRITE_FRACTIONS = np.random.default_rng(26).uniform(0.2, 0.8, 4)


@pytest.mark.parametrize("case", ["make-synthetic", "import coco", "closed-form train", "index build"])
def test_a_command_killed_while_writing_ends_as_an_uninterrupted_one(tiny_data_dir, tmp_path, case):
    """SIGKILL while writing, then the same command (train: --resume): the same output as a straight run, and
    no temporary folder left behind."""
    from semshare.search.gallery import load_index

    if case == "make-synthetic":
        args, rerun_extra = ["make-synthetic", "--preset", "tiny", "--set", "num_items=4000"], []
    elif case == "import coco":
        from test_importers import write_coco

        caps, inst, _ = write_coco(tmp_path, list(range(1, 3001)))
        args, rerun_extra = ["import", "coco", "--captions", str(caps), "--instances", str(inst)], []
    elif case == "closed-form train":
        args, rerun_extra = ["train", "--data", str(tiny_data_dir), "--method", "cca", "--threads", "1", *TRAIN], ["--resume"]
    else:
        run = tmp_path / "run"
        assert main(["train", "--data", str(tiny_data_dir), "--method", "ridge", "--out", str(run), *TRAIN]) == 0
        args, rerun_extra = ["index", "build", str(run), "--side", "text", "--kind", "exact-torch", "--threads", "1"], []

    def command(out: str) -> list[str]:
        return _cli(args[0], out, *args[1:]) if case == "make-synthetic" else _cli(*args, "--out", out)

    done = "straight/best/state.json" if case == "closed-form train" else "straight/meta.json" if case != "index build" \
        else "straight/manifest.json"
    writing = _writing_time(command("straight"), tmp_path, "*straight*", done)
    fraction = WRITE_FRACTIONS[["make-synthetic", "import coco", "closed-form train", "index build"].index(case)]
    _kill_while_writing(command("killed"), None, tmp_path, "*killed*", writing, fraction)
    # a folder written through a temporary sibling is there whole or not at all; a run folder is resumed
    if rerun_extra or not (tmp_path / "killed").exists():
        subprocess.run(command("killed") + rerun_extra, cwd=tmp_path, env=ENV, check=True, capture_output=True)
    assert _files(tmp_path / "killed") == {
        name: (content.replace(b"straight", b"killed") if isinstance(content, bytes) else
               json.loads(json.dumps(content).replace("straight", "killed")))
        for name, content in _files(tmp_path / "straight").items()}
    assert not list(tmp_path.glob(".killed*"))
    if case == "index build":
        load_index(tmp_path / "killed")  # its files.json vouches for what the rerun wrote
