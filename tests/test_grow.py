"""A gallery that grows (issue 32): `index add` / `index remove` for every backend, atomic, one writer, and a
running service that answers from the new version without a restart."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.data.dataset import open_dataset
from semshare.errors import SemshareError
from semshare.fileio import folder_lock
from semshare.search.gallery import build_gallery, load_index
from semshare.search.grow import add_to_index, remove_from_index
from semshare.training.experiment import load_run

from test_search import trained_run  # noqa: F401  (the module's tiny trained run)

KINDS = {"exact-torch": {}, "faiss-flat": {}, "faiss-hnsw": {"m": 8}, "faiss-ivfpq": {"nlist": 4, "nbits": 6, "subquantizers": 2}}


def _split_index(run_dir, data, folder: Path, kind: str, split: str = "train"):
    build_gallery(load_run(run_dir, data), "image", folder, kind, dict(KINDS[kind]), split=split)
    return folder


def _hits(index, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    return [[(h.id, round(h.score, 5)) for h in index.search(q, k)] for q in queries]


def _queries(run_dir, data, count: int = 12) -> np.ndarray:
    run = load_run(run_dir, data)
    return run.encode_texts([run.dataset.captions[r][0] for r in range(count)])


@pytest.mark.parametrize("kind", list(KINDS))
def test_added_rows_give_a_full_rebuilds_results(trained_run, tiny_data_dir, tmp_path, kind):
    dataset = open_dataset(tiny_data_dir)
    grown = _split_index(trained_run, tiny_data_dir, tmp_path / "grown", kind)
    added_rows = sorted(int(r) for s in ("val", "test") if s in dataset.splits for r in dataset.splits[s])
    manifest, added = add_to_index(grown, rows=added_rows)
    assert added == len(added_rows) and manifest.generation == 1
    rebuilt = tmp_path / "rebuilt"
    build_gallery(load_run(trained_run, tiny_data_dir), "image", rebuilt, kind, dict(KINDS[kind]), split="all")
    grown_index, rebuilt_index = load_index(grown), load_index(rebuilt)
    assert sorted(grown_index.ids.tolist()) == sorted(rebuilt_index.ids.tolist()) == list(range(dataset.num_items))
    queries = _queries(trained_run, tiny_data_dir)
    k = 10
    if kind in ("exact-torch", "faiss-flat"):  # the same vectors: the same hits and scores
        assert _hits(grown_index, queries, k) == _hits(rebuilt_index, queries, k)
    elif kind == "faiss-hnsw":  # the same stored vectors, linked into the graph: as close to exact as a rebuild
        by_id = {int(i): p for p, i in enumerate(rebuilt_index.ids)}
        np.testing.assert_array_equal(grown_index.stored_vectors,
                                      rebuilt_index.stored_vectors[[by_id[int(i)] for i in grown_index.ids]])
        vectors = load_run(trained_run, tiny_data_dir).encode_images(rows=np.arange(dataset.num_items))
        exact = np.argsort(-(vectors @ queries.T), axis=0, kind="stable")[:k].T  # gallery ids = rows
        truth = [set(column.tolist()) for column in exact]

        def recall(index):
            return np.mean([len(truth[i] & {h.id for h in index.search(q, k)}) / k for i, q in enumerate(queries)])

        assert recall(grown_index) >= recall(rebuilt_index) - 0.1
    else:  # IVF-PQ: the old items' codes untouched, the new ones encoded by the trained quantiser (recall at
        # 100k items against a rebuild: docs/PERFORMANCE.md)
        original = load_index(_split_index(trained_run, tiny_data_dir, tmp_path / "original", kind))
        old = len(original.ids)
        np.testing.assert_array_equal(grown_index.stored_vectors[:old], original.stored_vectors)
        trained = original.backend.index
        added_vectors = load_run(trained_run, tiny_data_dir).encode_images(rows=added_rows)
        decoded = trained.sa_decode(trained.sa_encode(np.ascontiguousarray(added_vectors, dtype=np.float32)))
        np.testing.assert_allclose(grown_index.backend.vectors()[old:], decoded, atol=1e-5)
    # each added image's captions are ranked for the query, as in a rebuild
    row = added_rows[0]
    assert grown_index.item(row)["captions"] == rebuilt_index.item(row)["captions"]
    np.testing.assert_allclose(grown_index.caption_vectors[grown_index.position_of[row]],
                               rebuilt_index.caption_vectors[rebuilt_index.position_of[row]], atol=1e-6)


@pytest.mark.parametrize("kind", list(KINDS))
def test_removed_items_are_gone_and_the_rest_rank_as_a_rebuild_without_them(trained_run, tiny_data_dir, tmp_path, kind):
    folder = _split_index(trained_run, tiny_data_dir, tmp_path / "idx", kind, split="all")
    before = load_index(folder)
    removed = before.ids[[0, 3, 4, 17]].tolist()
    manifest = remove_from_index(folder, removed)
    after = load_index(folder)
    assert manifest.size == before.manifest.size - 4 == len(after.items) and manifest.generation == 1
    assert not set(removed) & set(after.ids.tolist())
    queries = _queries(trained_run, tiny_data_dir)
    keep = ~np.isin(before.ids, removed)
    exact = before.stored_vectors[keep] @ queries.T  # the kept items, scored exactly
    for q, query in enumerate(queries):
        hits = after.search(query, 5)
        assert not {h.id for h in hits} & set(removed)
        if kind in ("exact-torch", "faiss-flat"):
            assert [h.id for h in hits] == before.ids[keep][np.argsort(-exact[:, q], kind="stable")[:5]].tolist()
    # every kept item keeps its record and its captions' vectors
    for item_id in after.ids[:5].tolist():
        assert after.item(item_id) == before.item(item_id)
        np.testing.assert_array_equal(after.caption_vectors[after.position_of[item_id]],
                                      before.caption_vectors[before.position_of[item_id]])
    with pytest.raises(SemshareError, match="not, e.g. 0"):
        remove_from_index(folder, [removed[0]])
    with pytest.raises(SemshareError, match="remove every item"):
        remove_from_index(folder, after.ids.tolist())


def test_rows_already_there_or_outside_the_dataset_and_photos_into_a_dataset_gallery_are_refused(trained_run, tiny_data_dir, tmp_path):
    folder = _split_index(trained_run, tiny_data_dir, tmp_path / "idx", "faiss-flat")
    train_row = int(open_dataset(tiny_data_dir).splits["train"][0])
    with pytest.raises(SemshareError, match="in the index already"):
        add_to_index(folder, rows=[train_row])
    with pytest.raises(SemshareError, match="expected rows of"):
        add_to_index(folder, rows=[10**6])
    with pytest.raises(SemshareError, match="holds rows of a dataset"):
        add_to_index(folder, images_dir=tmp_path)


def test_a_second_writer_is_refused_while_one_holds_the_index(trained_run, tiny_data_dir, tmp_path):
    folder = _split_index(trained_run, tiny_data_dir, tmp_path / "idx", "faiss-flat")
    with folder_lock(folder, "index"):
        with pytest.raises(SemshareError, match="another semshare process is writing"):
            add_to_index(folder, rows=[int(open_dataset(tiny_data_dir).splits["test"][0])])
    assert load_index(folder).manifest.generation == 0


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_an_add_that_fails_while_writing_leaves_the_old_index_whole(trained_run, tiny_data_dir, tmp_path, monkeypatch):
    folder = _split_index(trained_run, tiny_data_dir, tmp_path / "idx", "faiss-flat")
    before = _digest(folder)
    import semshare.search.gallery as gallery

    def failing_write(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gallery, "write_files_manifest", failing_write)  # the index writer's last step
    with pytest.raises(OSError):
        add_to_index(folder, rows=[int(r) for r in open_dataset(tiny_data_dir).splits["test"]])
    assert _digest(folder) == before and not list(tmp_path.glob(".idx*"))
    assert load_index(folder).manifest.size == len(open_dataset(tiny_data_dir).splits["train"])


def test_an_add_killed_at_any_point_leaves_the_old_or_the_new_version_whole(trained_run, tiny_data_dir, tmp_path):
    folder = _split_index(trained_run, tiny_data_dir, tmp_path / "idx", "exact-torch")
    before = _digest(folder)
    rows = ",".join(str(int(r)) for r in open_dataset(tiny_data_dir).splits["test"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "semshare.cli", "index", "add", str(folder), "--rows", rows, "--threads", "1"]
    rng = np.random.default_rng(32)
    outcomes = set()
    for delay in rng.uniform(0.5, 4.0, 3):
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        index = load_index(folder)  # whole: files.json vouches for every file
        outcomes.add(index.manifest.generation)
        if index.manifest.generation == 0:
            assert _digest(folder) == before
        else:
            break
    assert outcomes <= {0, 1}
    if load_index(folder).manifest.generation == 0:  # never finished: the add runs to its end now
        subprocess.run(command, env=env, check=True, capture_output=True)
    splits = open_dataset(tiny_data_dir).splits
    assert load_index(folder).manifest.size == len(splits["train"]) + len(splits["test"])


def test_photos_are_added_to_a_photo_gallery_as_a_build_over_all_of_them_would_hold_them(tmp_path, capsys):
    from test_extract import extracted_run, make_images

    images, run = extracted_run(tmp_path, seed=4)
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for name in ("img0.png", "img1.png", "img2.png"):
        shutil.copy(images / name, gallery / name)
    assert main(["index", "build", str(run), "--images", str(gallery), "--out", str(tmp_path / "idx"),
                 "--kind", "exact-torch"]) == 0
    for name in ("img5.png", "img6.png"):
        shutil.copy(images / name, gallery / name)
    capsys.readouterr()
    assert main(["index", "add", str(tmp_path / "idx"), "--images", str(gallery)]) == 0
    assert "added 2 items" in capsys.readouterr().out
    assert main(["index", "add", str(tmp_path / "idx"), "--images", str(gallery)]) == 0
    assert "nothing to add" in capsys.readouterr().out
    assert main(["index", "build", str(run), "--images", str(gallery), "--out", str(tmp_path / "all"),
                 "--kind", "exact-torch"]) == 0
    grown, whole = load_index(tmp_path / "idx"), load_index(tmp_path / "all")
    by_file = {Path(i["image_file"]).name: i for i in whole.items}
    assert sorted(Path(i["image_file"]).name for i in grown.items) == sorted(by_file)
    for item in grown.items:  # the same labels read, and the same vector, as a build over all five
        twin = by_file[Path(item["image_file"]).name]
        assert item["labels"] == twin["labels"]
        np.testing.assert_allclose(grown.stored_vectors[grown.position_of[item["id"]]],
                                   whole.stored_vectors[whole.position_of[twin["id"]]], atol=1e-6)
    assert len(set(grown.ids.tolist())) == 5
    # remove by id from the command line; bad ids are one line
    assert main(["index", "remove", str(tmp_path / "idx"), "--ids", "0,3"]) == 0
    assert load_index(tmp_path / "idx").manifest.size == 3
    assert main(["index", "remove", str(tmp_path / "idx"), "--ids", "0"]) == 2
    assert "not, e.g. 0" in capsys.readouterr().err
    assert main(["index", "remove", str(tmp_path / "idx"), "--ids", "1,x"]) == 2
    assert "--ids: expected integers" in capsys.readouterr().err
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(images / "img7.png", outside / "img7.png")
    assert main(["index", "add", str(tmp_path / "idx"), "--images", str(outside)]) == 2
    assert "inside the gallery's photo folder" in capsys.readouterr().err


def test_a_running_service_answers_from_the_new_version_without_a_restart(trained_run, tiny_data_dir, tmp_path):
    from fastapi.testclient import TestClient

    from semshare.search.service import create_app

    dataset = open_dataset(tiny_data_dir)
    folder = _split_index(trained_run, tiny_data_dir, tmp_path / "idx", "faiss-flat")
    client = TestClient(create_app(load_index(folder)))
    test_rows = [int(r) for r in dataset.splits["test"]]
    caption = dataset.captions[test_rows[0]][0]
    first = client.post("/search", json={"text": caption, "k": 1000}).json()
    assert not {h["id"] for h in first["results"]} & set(test_rows)
    assert client.get("/health").json()["version"] == 0
    add_to_index(folder, rows=test_rows)
    second = client.post("/search", json={"text": caption, "k": 1000}).json()
    assert set(test_rows) <= {h["id"] for h in second["results"]}
    health = client.get("/health").json()
    assert health["version"] == 1 and health["size"] == len(dataset.splits["train"]) + len(test_rows)
    assert client.get(f"/items/{test_rows[0]}").status_code == 200
    remove_from_index(folder, test_rows[:2])
    third = client.post("/search", json={"text": caption, "k": 1000}).json()
    assert not {h["id"] for h in third["results"]} & set(test_rows[:2])
    assert client.get(f"/items/{test_rows[0]}").status_code == 404


def test_a_version_caught_mid_replacement_is_not_served(trained_run, tiny_data_dir, tmp_path):
    from semshare.search.gallery import reopened

    folder = _split_index(trained_run, tiny_data_dir, tmp_path / "idx", "faiss-flat")
    index = load_index(folder)
    assert reopened(index) is None  # nothing changed
    add_to_index(folder, rows=[int(open_dataset(tiny_data_dir).splits["test"][0])])
    (folder / "ids.npy").write_bytes(b"torn")  # as if read between two files of different versions
    assert reopened(index) is None
