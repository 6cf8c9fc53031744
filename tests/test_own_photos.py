"""docs/OWN_PHOTOS.md, walked on a handful of generated photos: a folder of images and a captions file (with
labels, and without them, derived from the captions) -> extract -> train -> index -> search -> served page
answers, and new photos indexed with the trained run."""

import json

import pytest
from fastapi.testclient import TestClient

from semshare.cli.main import main
from test_extract import make_images

FAST = ["--backbone", "tiny-random", "--grid", "2"]
TRAIN = ["--set", "train.epochs=1", "--set", "train.batch_size=8", "--set", "models.semantic_sharing.dim=16",
         "--set", "models.semantic_sharing.heads=2", "--set", "text.word_dim=8", "--set", "train.progress=false"]


@pytest.mark.parametrize("labels", ["given", "derived"])
def test_the_own_photos_walk(tmp_path, capsys, labels):
    from semshare.api import load_index
    from semshare.search.service import create_app

    photos = make_images(tmp_path / "photos", count=20, seed=8)  # captions.jsonl with labels, as in step 1
    extract = ["extract", "--images", str(photos), "--captions", str(photos / "captions.jsonl"), *FAST,
               "--out", str(tmp_path / "data")]
    if labels == "derived":  # step 2 without labels: the captions name the colours
        lines = [json.loads(line) for line in (photos / "captions.jsonl").read_text().splitlines()]
        (photos / "captions.jsonl").write_text("".join(json.dumps({k: v for k, v in line.items() if k != "labels"})
                                                       + "\n" for line in lines))
        (tmp_path / "labels.txt").write_text("red\ngreen\nblue\n")
        extract += ["--labels-from-captions", str(tmp_path / "labels.txt")]
    assert main(extract) == 0
    assert main(["inspect", str(tmp_path / "data")]) == 0
    assert main(["train", "--data", str(tmp_path / "data"), "--method", "ours", *TRAIN, "--out", str(tmp_path / "run")]) == 0
    assert main(["index", "build", str(tmp_path / "run"), "--side", "image", "--out", str(tmp_path / "index")]) == 0
    capsys.readouterr()
    assert main(["search", str(tmp_path / "index"), "--text", "a red box", "-k", "5"]) == 0
    printed = capsys.readouterr().out
    assert "ranking:" in printed and printed.count(" | ") >= 5
    client = TestClient(create_app(load_index(tmp_path / "index")))
    assert client.get("/health").json()["images"] == 20  # the page draws every thumbnail
    assert len(client.post("/search", json={"text": "a blue box", "k": 3}).json()["results"]) == 3
    new = make_images(tmp_path / "more-photos", count=4, seed=9)
    (new / "captions.jsonl").unlink()
    assert main(["index", "build", str(tmp_path / "run"), "--images", str(new), "--out", str(tmp_path / "more-index")]) == 0
    more = load_index(tmp_path / "more-index")
    assert more.manifest.size == 4 and TestClient(create_app(more)).get("/items/0/image").status_code == 200
