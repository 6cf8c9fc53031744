"""The Python API: the README's example runs verbatim; embeddings equal the CLI's."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from semshare.errors import SemshareError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> tuple[str, str]:
    text = README.read_text()
    start = text.index("<!-- api-example")
    bash = re.search(r"```bash\n(.*?)```", text[start:], re.S).group(1)
    python = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
    return bash, python


def test_the_readme_example_runs_verbatim(tmp_path):
    bash, python = readme_example()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for line in bash.strip().splitlines():
        subprocess.run(line, shell=True, check=True, cwd=tmp_path, env=env, capture_output=True)
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("Run('api-demo/run', method='ours'") and len(lines) == 6  # repr, shapes, 3 hits, answer
    assert lines[1].startswith("(2, ")
    assert [int(line.split()[0]) for line in lines[2:5]] == [1, 2, 3]
    assert lines[5].startswith("3 [")  # the query path's answer: 3 hits, its unknown words, whether it is weak


def test_api_embeddings_are_the_runs_own(tiny_data_dir, tmp_path):
    import semshare
    from semshare.cli.main import main
    from semshare.index import normalize_rows

    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tiny_data_dir), "--method", "wo_c", "--set", "train.epochs=1",
                 "--set", "models.semantic_sharing.dim=16", "--set", "models.semantic_sharing.heads=2",
                 "--set", "text.word2vec_epochs=1", "--out", str(run_dir)]) == 0
    assert main(["embed", str(run_dir), "--data", str(tiny_data_dir), "--split", "test"]) == 0
    saved = np.load(run_dir / "embeddings" / "test" / "img_emb.npz")
    run = semshare.load_run(run_dir)
    np.testing.assert_allclose(run.encode_images(rows=saved["ids"]), normalize_rows(saved["emb"]), atol=1e-6)
    texts = np.load(run_dir / "embeddings" / "test" / "txt_emb.npz")
    first_id = int(texts["ids"][0])
    row = int(np.searchsorted(run.dataset.caption_offsets, first_id, side="right") - 1)
    caption = run.dataset.captions[row][first_id - int(run.dataset.caption_offsets[row])]
    np.testing.assert_allclose(run.encode_texts([caption])[0], normalize_rows(texts["emb"][:1])[0], atol=1e-5)
    assert set(semshare.__all__) >= {"load_run", "load_index", "Run", "Index", "SearchHit"}


def test_python_objects_are_easy_to_look_at_and_a_batch_survives_unusable_texts(tiny_data_dir, tmp_path):
    import semshare
    from semshare.cli.main import main

    assert {"load_run", "load_index", "build_index", "Run", "Index", "SearchHit"} <= set(dir(semshare))
    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(tmp_path / "run")]) == 0
    run = semshare.load_run(tmp_path / "run")
    assert repr(run).startswith(f"Run({str(tmp_path / 'run')!r}, method='cca'") and len(repr(run)) < 300
    assert repr(run.dataset).startswith("Dataset(") and "items=120" in repr(run.dataset) and len(repr(run.dataset)) < 300
    index = semshare.build_index(run, "image", tmp_path / "index", kind="exact-torch")
    assert repr(index) == (f"Index({str(tmp_path / 'index')!r}, side='image', kind='exact-torch', size=120, "
                           f"dim={index.manifest.dim}, split='all')")
    caption = run.dataset.captions[0][0]
    texts = [caption, "", "zzqx qqzz", caption]
    out = run.encode_texts(texts, batch_size=2)
    assert out.shape[0] == 4 and np.isnan(out[1]).all() and np.isnan(out[2]).all()
    np.testing.assert_allclose(out[0], out[3], atol=1e-6)
    np.testing.assert_allclose(out[0], run.encode_texts([caption])[0], atol=1e-6)
    reasons = [emb for emb, _ in run.encode_text_batch(texts)]
    assert "empty" in str(reasons[1]) and "none of the query's words" in str(reasons[2])
    with pytest.raises(SemshareError, match="takes a list of texts"):
        run.encode_texts("a single string")
    with pytest.raises(SemshareError, match="none of the query's words"):  # nothing readable: nothing to return
        run.encode_texts(["zzqx"])
    reopened = semshare.load_index(tmp_path / "index")
    assert [h.id for h in index.search_text(caption, k=3)] == [h.id for h in reopened.search_text(caption, k=3)]


@pytest.mark.parametrize("method", ["ours", "cca"])
def test_a_run_and_its_index_travel_without_their_dataset(tiny_data_dir, tmp_path, capsys, method):
    """The run folder is enough to encode text; the index then answers text queries; what needs the data says
    so; and a project moved whole (run, index, data together) keeps working by its relative paths."""
    import shutil

    import semshare
    from semshare.cli.main import main

    project = tmp_path / "project"
    shutil.copytree(tiny_data_dir, project / "data")
    small = ["--set", "train.epochs=1", "--set", "model.dim=16", "--set", "model.heads=2", "--set", "text.word_dim=8",
             "--set", "text.word2vec_epochs=1", "--set", "train.batch_size=16"] if method == "ours" else []
    assert main(["train", "--data", str(project / "data"), "--method", method, "--out", str(project / "run"), *small]) == 0
    assert main(["index", "build", str(project / "run"), "--side", "image", "--kind", "exact-torch",
                 "--out", str(project / "index")]) == 0
    caption = semshare.load_run(project / "run").dataset.captions[5][0]
    before = semshare.load_run(project / "run").encode_texts([caption])
    ranked = [h.id for h in semshare.load_index(project / "index").search_text(caption, k=5)]
    by_image = [h.id for h in semshare.load_index(project / "index").search_image(5, k=5)]
    # the whole project moves: relative paths find the data, image queries work too
    moved = tmp_path / "elsewhere"
    (project).rename(moved)
    index = semshare.load_index(moved / "index")
    assert [h.id for h in index.search_image(5, k=5)] == by_image
    # the data is gone: text still works from the run folder alone; rows of the data need it, one clear error
    shutil.rmtree(moved / "data")
    run = semshare.load_run(moved / "run")
    assert run.dataset is None and "dataset=None" in repr(run)
    np.testing.assert_allclose(run.encode_texts([caption]), before, atol=1e-6)
    with pytest.raises(SemshareError, match="loaded without its dataset"):
        run.encode_images(rows=[0])
    index = semshare.load_index(moved / "index")
    assert [h.id for h in index.search_text(caption, k=5)] == ranked
    with pytest.raises(SemshareError, match="image id queries need the index's dataset"):
        index.search_image(5, k=5)
    capsys.readouterr()
    assert main(["search", str(moved / "index"), "--text", caption, "-k", "5", "--json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)["results"]] == ranked
    assert main(["evaluate", str(moved / "run")]) == 2
    assert "loaded without its dataset" in capsys.readouterr().err


def test_a_run_declares_what_it_accepts_and_where_it_came_from(tiny_data_dir, tmp_path):
    """The one Run: capabilities are declared by each kind of run (never found by catching an error), and its
    provenance names its folder, checkpoint, ranking and data fingerprint."""
    import semshare
    from semshare.cli.main import main

    assert main(["train", "--data", str(tiny_data_dir), "--method", "cca", "--out", str(tmp_path / "cca")]) == 0
    closed = semshare.load_run(tmp_path / "cca")
    assert isinstance(closed, semshare.Run) and closed.capabilities == semshare.RunCapabilities(
        free_text=True, token_states=False, image_files=False, label_classifier=False, pairwise_scoring=False)
    from semshare.errors import SemshareError

    with pytest.raises(SemshareError, match="no label classifier"):
        closed.predict_labels(texts=["a"])
    provenance = closed.provenance()
    assert provenance["method"] == "cca" and provenance["checkpoint"] == "best" and provenance["ranking"] == "label"
    assert provenance["data"]["labels_sha256"] and provenance["data"]["num_items"] == closed.dataset.num_items
