"""The Python API: the README's example runs verbatim; embeddings equal the CLI's."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

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
    assert lines[0].startswith("(1, ") and len(lines) == 4  # the shapes line, then 3 hits
    assert [int(line.split()[0]) for line in lines[1:]] == [1, 2, 3]


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
