"""A run is never overwritten: every run kind goes through the same checks before anything is written; a
benchmark never reuses a run trained on other data; equal weights give equal bytes."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from semshare.cli.main import main
from semshare.data.synthetic import make_synthetic, preset

FAST = ["--set", "train.epochs=1", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
        "--set", "text.word2vec_epochs=1", "--set", "train.progress=false"]
OURS = FAST + ["--set", "model.dim=16", "--set", "model.heads=2", "--set", "model.ffn_dim=32"]


def _digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def other_data_dir(tmp_path_factory):
    """The same preset with another seed: same name, same sizes, other labels."""
    return make_synthetic(tmp_path_factory.mktemp("other") / "tiny", preset("tiny", seed=7), name="tiny", progress=False)


def test_a_closed_form_run_is_not_rewritten_by_another_config_or_other_data(tiny_data_dir, other_data_dir, tmp_path,
                                                                            capsys):
    run = tmp_path / "cca"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(run), *FAST]) == 0
    before = _digest(run)
    assert main(["train", "--data", str(other_data_dir), "--method", "cca", "--set", "model.dim=7", "--out", str(run),
                 "--resume", *FAST]) == 2
    assert "model.dim" in capsys.readouterr().err
    assert main(["train", "--data", str(other_data_dir), "--method", "cca", "--out", str(run), "--resume", *FAST]) == 2
    assert "the run was trained on" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(run), *FAST]) == 2
    assert "already holds a run" in capsys.readouterr().err
    # the same run resumed: its finished fit is returned as it is
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(run), "--resume", *FAST]) == 0
    assert _digest(run) == before


def test_a_trained_run_without_last_is_not_retrained_over_its_best(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "ours"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *OURS]) == 0
    shutil.rmtree(run / "last")
    before = _digest(run)
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *OURS]) == 2
    assert "already holds a run" in capsys.readouterr().err and _digest(run) == before


def test_checkpoints_without_their_config_are_not_resumed_from_scratch(tiny_data_dir, tmp_path, capsys):
    run = tmp_path / "ours"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *OURS]) == 0
    (run / "config.yaml").unlink()
    before = _digest(run)
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--resume", *OURS]) == 2
    assert "config.yaml: file: expected the config of the run" in capsys.readouterr().err and _digest(run) == before


def test_an_allowed_change_is_what_config_yaml_then_says(tiny_data_dir, tmp_path):
    import yaml

    run = tmp_path / "ours"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *OURS]) == 0
    longer = [a if a != "train.epochs=1" else "train.epochs=2" for a in OURS]
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--resume", "--allow-change", "train.epochs",
                 *longer]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2


def test_a_benchmark_never_reports_a_run_trained_on_other_data_of_the_same_name(tiny_data_dir, other_data_dir,
                                                                                tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "cca", "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert main(["benchmark", "--quick", "--data", str(other_data_dir), "--methods", "cca", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "data_fingerprint.json: labels_sha256" in error and str(tiny_data_dir) in error and str(other_data_dir) in error
    assert (out / "table.md").read_text() == table


def test_equal_weights_give_equal_bytes(tmp_path):
    from semshare.training.checkpoint import read_checkpoint_metadata, save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    metadata = {"config": {"b": 1, "a": [1, 2]}, "model_spec": {"x": 1}, "zeta": "z", "alpha": "w"}
    files = []
    for name in ("one", "two"):
        save_checkpoint(tmp_path / name, model, None, {"step": 1}, metadata)
        files.append((tmp_path / name / "model.safetensors").read_bytes())
    assert files[0] == files[1]
    assert torch.equal(load_file(str(tmp_path / "one" / "model.safetensors"))["weight"], model.weight.detach())
    assert read_checkpoint_metadata(tmp_path / "one")["config"] == {"b": 1, "a": [1, 2]}
    manifest = json.loads((tmp_path / "one" / "files.json").read_text())["files"]
    assert manifest["model.safetensors"] == json.loads((tmp_path / "two" / "files.json").read_text())["files"]["model.safetensors"]


@pytest.mark.parametrize("param, shown", [("m=-3", "m: expected an integer in 2..256, found -3"),
                                          ("m=abc", "m: expected an integer in 2..256, found 'abc'"),
                                          ("ef_search=0", "ef_search: expected an integer in 1..100000, found 0"),
                                          ("m=1.5", "m: expected an integer in 2..256, found 1.5")])
def test_index_parameters_are_range_checked_before_faiss_sees_them(tiny_data_dir, tmp_path, capsys, param, shown):
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(run), *FAST]) == 0
    capsys.readouterr()
    assert main(["index", "build", str(run), "--side", "image", "--kind", "faiss-hnsw", "--param", param,
                 "--out", str(tmp_path / "index")]) == 2
    assert shown in capsys.readouterr().err and not (tmp_path / "index").exists()


def test_serve_on_a_port_in_use_or_out_of_range_is_one_line(tmp_path, capsys):
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path / "no-index"), "--port", str(port)]) == 2
        assert f"--port {port}: expected a free port on 127.0.0.1, found it unavailable" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "no-index"), "--port", "70000"]) == 2
    assert "--port: expected an integer in 1..65535, found 70000" in capsys.readouterr().err


def test_a_killed_commands_partial_folder_is_removed_by_the_next_run(tmp_path):
    stale = tmp_path / ".data.partial-999999999"  # no process has this id
    stale.mkdir()
    (stale / "labels.npy").write_bytes(b"half")
    assert main(["make-synthetic", str(tmp_path / "data"), "--preset", "tiny"]) == 0
    assert not stale.exists() and (tmp_path / "data" / "meta.json").exists()


@pytest.mark.parametrize("argv, shown", [
    (["train", "--set", "train.seed=-1"], "train.seed: expected an integer in 0..4294967295, found -1"),
    (["train", "--set", "train.seed=99999999999999999999"], "train.seed: expected an integer in 0..4294967295"),
    (["benchmark", "--quick", "--seeds", "0"], "--seeds: expected an integer >= 1, found 0"),
    (["benchmark", "--quick", "--seeds", "-2"], "--seeds: expected an integer >= 1, found -2"),
    (["evaluate", "RUN", "--k", "-5"], "--folds / --k: expected integers >= 1, found 1 / -5"),
    (["evaluate", "RUN", "--folds", "0"], "--folds / --k: expected integers >= 1, found 0 / 500"),
    (["make-synthetic", "OUT", "--seed", "-1"], "--seed: expected an integer in 0..4294967295, found -1"),
])
def test_out_of_range_numbers_are_one_line_not_a_traceback(tiny_data_dir, tmp_path, capsys, argv, shown):
    run = tmp_path / "run"
    if "RUN" in argv:
        assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(run), *FAST]) == 0
        capsys.readouterr()
    argv = [str(run) if a == "RUN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    if argv[0] in ("train", "benchmark"):
        argv += ["--data", str(tiny_data_dir), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert shown in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_resume_checks_every_data_file_and_follows_a_moved_dataset(tiny_data_dir, tmp_path, capsys):
    import numpy as np

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    run = tmp_path / "ours"
    assert main(["train", "--data", str(data), "--out", str(run), *OURS]) == 0
    longer = [a if a != "train.epochs=1" else "train.epochs=2" for a in OURS]
    resume = ["train", "--out", str(run), "--resume", "--allow-change", "train.epochs", *longer]
    # noise in the regions or an edited caption: other data, refused, and the run is left as it was
    noisy = tmp_path / "noisy"
    shutil.copytree(data, noisy)
    regions = np.load(noisy / "regions.npy")
    np.save(noisy / "regions.npy", regions + np.float32(1e-3))
    edited = tmp_path / "edited"
    shutil.copytree(data, edited)
    lines = (edited / "captions.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    first["captions"][0] = first["captions"][0].replace(" ", "  ", 1) + " again"
    (edited / "captions.jsonl").write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    before = _digest(run)
    for other, name in ((noisy, "regions.npy"), (edited, "captions.jsonl")):
        assert main([*resume, "--data", str(other)]) == 2
        assert f"data_fingerprint.json: files.{name}: the run was trained on" in capsys.readouterr().err
        assert _digest(run) == before
    # the same files in another folder are the same data: the run resumes there and records the new place
    moved = tmp_path / "moved"
    data.rename(moved)
    assert main([*resume, "--data", str(moved)]) == 0
    assert json.loads((run / "splits.json").read_text())["data_dir_absolute"] == str(moved.resolve())
    assert json.loads((run / "splits.json").read_text())["data_dir"] == "../moved"  # relative to the run
    assert json.loads((run / "data_fingerprint.json").read_text())["path"] == str(moved.resolve())
    assert main(["evaluate", str(run)]) == 0  # --data defaults to the recorded, moved folder


def test_an_older_fingerprint_without_file_hashes_moves_only_when_told(tiny_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    run = tmp_path / "ours"
    assert main(["train", "--data", str(data), "--out", str(run), *OURS]) == 0
    fingerprint = json.loads((run / "data_fingerprint.json").read_text())
    del fingerprint["files"]  # as written before file hashes were recorded
    (run / "data_fingerprint.json").write_text(json.dumps(fingerprint))
    moved = tmp_path / "moved"
    data.rename(moved)
    longer = [a if a != "train.epochs=1" else "train.epochs=2" for a in OURS]
    resume = ["train", "--data", str(moved), "--out", str(run), "--resume", "--allow-change", "train.epochs", *longer]
    assert main(resume) == 2
    assert "data_fingerprint.json: path: the run was trained on" in capsys.readouterr().err
    assert main([*resume, "--allow-change", "path"]) == 0


def test_a_run_folder_being_written_is_not_written_by_a_second_command(tiny_data_dir, tmp_path, capsys):
    from semshare.fileio import folder_lock

    run = tmp_path / "ours"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *OURS]) == 0
    before = _digest(run)
    longer = [a if a != "train.epochs=1" else "train.epochs=2" for a in OURS]
    with folder_lock(run):  # as a train of this run still going would hold it
        assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--resume", "--allow-change",
                     "train.epochs", *longer]) == 2
        assert "another semshare process is writing this run now" in capsys.readouterr().err
        assert _digest(run) == before
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), "--resume", "--allow-change",
                 "train.epochs", *longer]) == 0


def test_a_benchmark_folder_in_use_is_refused(tiny_data_dir, tmp_path, capsys):
    from semshare.fileio import folder_lock

    out = tmp_path / "bench"
    out.mkdir()
    with folder_lock(out):
        assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "cca", "--out", str(out)]) == 2
        assert "another semshare process is writing this benchmark now" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    from semshare.fileio import atomic_write_text

    stale = tmp_path / ".vocab.json.tmp-999999999"  # no process has this id
    stale.write_text("half a vocabulary")
    live = tmp_path / f".vocab.json.tmp-{__import__('os').getppid()}"  # a running process's: kept
    live.write_text("being written")
    atomic_write_text(tmp_path / "vocab.json", "{}")
    assert not stale.exists() and live.exists() and (tmp_path / "vocab.json").read_text() == "{}"


def test_a_crash_between_the_writers_two_renames_leaves_the_old_version_found(tmp_path):
    """fileio.atomic_directory replaces a folder by renaming it to .NAME.old, then the new one into place: a
    crash between the two renames leaves only .NAME.old, which published_folder and load_checkpoint read."""
    import os

    import torch

    from semshare.fileio import atomic_directory, published_folder
    from semshare.training.checkpoint import checkpoint_exists, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path / "last", model, None, {"step": 1})
    save_checkpoint(tmp_path / "last", model, None, {"step": 2})  # a replacement: the old version is gone after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    os.replace(tmp_path / "last", tmp_path / ".last.old")  # as if killed after the first rename
    assert checkpoint_exists(tmp_path / "last") and published_folder(tmp_path / "last", "state.json").name == ".last.old"
    fresh = torch.nn.Linear(3, 2)
    assert load_checkpoint(tmp_path / "last", fresh)["step"] == 2
    torch.testing.assert_close(fresh.weight, model.weight)
    with atomic_directory(tmp_path / "last", overwrite=True) as folder:  # the next write puts a version in place
        (folder / "state.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
