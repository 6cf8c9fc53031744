"""What the command line prints: a bar only on a terminal (a log file gets one line per epoch), answers
without INFO noise for search / index / serve (-v brings it back), the URL `serve` listens on."""

import json
import os
import socket
import subprocess
import sys

import pytest

from semshare.cli.main import main

FAST = ["--set", "train.epochs=2", "--set", "train.batch_size=16", "--set", "text.word_dim=8",
        "--set", "text.word2vec_epochs=1", "--set", "model.dim=16", "--set", "model.heads=2"]


@pytest.fixture(scope="module")
def index_dir(tiny_data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-output")
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(folder / "run")]) == 0
    assert main(["index", "build", str(folder / "run"), "--side", "image", "--kind", "exact-torch",
                 "--out", str(folder / "index")]) == 0
    return folder / "index"


def test_training_into_a_log_file_writes_epoch_lines_not_bar_frames(tiny_data_dir, tmp_path):
    """stderr is a file here, as with `semshare train ... 2> train.log`: no carriage-return frames; each
    epoch is one line counted as the bar and metrics.jsonl count it (from 1)."""
    log = tmp_path / "train.log"
    with open(log, "w") as stderr:
        subprocess.run([sys.executable, "-m", "semshare.cli", "train", "--data", str(tiny_data_dir), "--out",
                        str(tmp_path / "run"), *FAST], stderr=stderr, stdout=subprocess.DEVNULL, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "\r" not in text and "it/s" not in text
    epochs = [line.split("semshare.training.loop: ")[1] for line in text.splitlines() if ": epoch " in line]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    assert all("train loss" in e and "items/s" in e and "val ave/NDCG@500" in e for e in epochs)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sorted({r["epoch"] for r in records if "val/ave/NDCG@500" in r}) == [1, 2]


def test_search_prints_the_answer_without_info_lines_unless_verbose(index_dir):
    def search(*flags):
        return subprocess.run([sys.executable, "-m", "semshare.cli", *flags, "search", str(index_dir), "--image-id", "3",
                               "-k", "2"], capture_output=True, text=True, check=True)

    quiet, verbose = search(), search("-v")
    assert quiet.stdout.startswith("rank") and quiet.stderr == ""
    assert verbose.stdout == quiet.stdout and " INFO semshare.data.dataset: opened dataset" in verbose.stderr


def test_serve_says_where_it_listens(index_dir):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "semshare.cli", "serve", str(index_dir), "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving http://127.0.0.1:{port}/") and f"http://127.0.0.1:{port}/docs" in line
    finally:
        process.kill()
        process.wait()
        stderr = process.stderr.read()
    assert " INFO " not in stderr


def test_comparisons_are_readable(tiny_data_dir, tmp_path, capsys):
    """plot: two benchmarks' runs of one method get different labels (or the user's); PR curves of 16 methods
    get 16 distinct styles and a legend outside both panels."""
    from semshare.evaluation.plots import pr_figure, run_labels

    runs = []
    for bench in ("benchA", "benchB"):
        run = tmp_path / bench / "synthetic-tiny" / "ours-seed0"
        assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *FAST, "--set", "train.epochs=1"]) == 0
        runs.append(run)
    assert run_labels(runs) == ["benchA/synthetic-tiny/ours-seed0", "benchB/synthetic-tiny/ours-seed0"]
    capsys.readouterr()
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "curves.png")]) == 0
    assert "benchA/synthetic-tiny/ours-seed0, benchB/synthetic-tiny/ours-seed0" in capsys.readouterr().out
    assert main(["plot", *map(str, runs), "--labels", "before,after", "--out", str(tmp_path / "c2.png")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(": before, after")
    assert main(["plot", *map(str, runs), "--labels", "one", "--out", str(tmp_path / "c3.png")]) == 2
    curve = {"recall": [0.1, 0.5, 1.0], "precision": [0.9, 0.6, 0.3]}
    fig = pr_figure({f"method {i}": {"i2t": curve, "t2i": curve} for i in range(16)})
    lines = fig.axes[1].get_lines()
    assert len({(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}) == 16
    fig.canvas.draw()
    legend = fig.legends[0].get_window_extent()
    assert legend.x0 >= fig.axes[1].get_window_extent().x1  # beside the T2I panel, not over it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal (pty) is a POSIX thing")
def test_on_a_terminal_the_bar_is_drawn_and_log_lines_start_on_their_own_line(tiny_data_dir, tmp_path):
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: semshare train with a 120-column terminal as its stdout and stderr
        import fcntl
        import struct
        import termios

        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.execvp(sys.executable, [sys.executable, "-m", "semshare.cli", "train", "--data", str(tiny_data_dir),
                                   "--out", str(tmp_path / "run"), *FAST, "--set", "train.epochs=3"])
    output = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    text = output.decode(errors="replace")
    assert "train:" in text and "%|" in text  # the bar was drawn
    epoch_lines = [line for line in text.replace("\r", "\n").split("\n") if ": epoch " in line]
    assert len(epoch_lines) == 3 and all(line[:4].isdigit() for line in epoch_lines)  # not glued onto the bar
    assert "epoch=1" in text and "epoch=0" not in text  # the bar counts epochs as the log does


def test_evaluate_and_benchmark_report_instance_recall_beside_the_label_metrics(tiny_data_dir, index_dir, tmp_path,
                                                                                capsys):
    run = index_dir.parent / "run"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    table = json.loads((tmp_path / "eval.json").read_text())
    for key in ("i2t/R@1", "t2i/R@5", "ave/R@10", "ave/NDCG@500"):
        assert 0.0 <= table[key] <= 1.0, key
    assert table["t2i/R@1"] <= table["t2i/R@5"] <= table["t2i/R@10"]
    # a gallery of another split holds no query's own item: no R@k rather than a meaningless 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--split", "test", "--gallery-split", "val", "--json", str(tmp_path / "x.json")]) == 0
    assert not any("R@" in key for key in json.loads((tmp_path / "x.json").read_text()))
    assert "R@k (instance-level recall): left out" in capsys.readouterr().out  # said, not silently dropped
    out = tmp_path / "bench"
    assert main(["benchmark", "--quick", "--data", str(tiny_data_dir), "--methods", "cca,ridge", "--out", str(out)]) == 0
    markdown = (out / "table.md").read_text()
    assert "| R@10 x100 |" in markdown and "| R@1 x100 |" in markdown
    capsys.readouterr()
    assert main(["compare", str(out), str(out), "--metric", "R@10", "--resamples", "200"]) == 0
    assert "Ave R@10 x100" in capsys.readouterr().out


def test_the_small_defects_of_the_cli_and_its_figures_are_gone(tiny_data_dir, index_dir, tmp_path, capsys, caplog,
                                                               monkeypatch):
    """issue 33: --boost / --any without --labels is refused, a log line never names a writer's temporary
    folder, `plot` has whole epoch ticks and a title, a --quick PR-curve figure says it is a smoke test, Figure
    4's label lines cut at a whole name, fit-instance logs as it goes."""
    import logging

    import numpy as np

    from semshare.evaluation.plots import runs_figure
    from semshare.experiments.figures import label_line
    from semshare.training.instance_head import InstanceConfig, train_head

    for flag in ("--boost", "--any"):
        assert main(["search", str(index_dir), "--image-id", "1", flag]) == 2
        assert f"{flag}: goes with --labels" in capsys.readouterr().err
    with caplog.at_level(logging.INFO):
        assert main(["make-synthetic", str(tmp_path / "data"), "--preset", "tiny"]) == 0
    assert caplog.records and not any(".partial" in record.getMessage() for record in caplog.records)

    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--out", str(run), *FAST, "--set", "train.epochs=3"]) == 0
    fig = runs_figure([run], ["ours"], "ave/NDCG@500")
    fig.canvas.draw()
    ticks = [t for t in fig.axes[1].get_xticks() if fig.axes[1].get_xlim()[0] <= t <= fig.axes[1].get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert "validation ave/NDCG@500" in fig._suptitle.get_text()

    titles = []
    monkeypatch.setattr("semshare.experiments.benchmark.plot_pr_curves", lambda curves, path, title: titles.append(title))
    assert main(["benchmark", "--quick", "--methods", "ridge", "--out", str(tmp_path / "bench")]) == 0
    assert titles and titles[0].startswith("SMOKE TEST, not results")

    assert label_line(["person", "cell phone", "dining table", "potted plant", "chair"], 30) == \
        "person, cell phone +3 more"
    with caplog.at_level(logging.INFO, logger="semshare.training.instance_head"):
        rng = np.random.default_rng(0)
        train_head(rng.normal(size=(20, 4)), rng.normal(size=(40, 3)), np.repeat(np.arange(20), 2),
                   InstanceConfig(dim=4, epochs=20, batch_size=8))
    assert [r.getMessage().split(",")[0] for r in caplog.records if "instance head: epoch" in r.getMessage()] == \
        ["instance head: epoch 10/20", "instance head: epoch 20/20"]
