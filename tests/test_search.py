"""Index folders, queries, the CLI `index build` / `search` and the HTTP service, on a tiny trained run."""

import json
import re

import numpy as np
import pytest

from semshare.cli.main import main
from semshare.errors import SemshareError
from semshare.evaluation.embed import embed_rows
from semshare.index import normalize_rows
from semshare.api import load_index
from semshare.search.gallery import build_gallery
from semshare.data.dataset import open_dataset
from semshare.training.recipes import resolve_config
from semshare.training.experiment import load_run, train_experiment

TINY = {"models.semantic_sharing.dim": 16, "models.semantic_sharing.layers": 1, "models.semantic_sharing.heads": 2,
        "models.semantic_sharing.ffn_dim": 32, "text.word_dim": 8,
        "text.word2vec_epochs": 1, "train.batch_size": 16, "train.epochs": 2, "train.progress": False}


@pytest.fixture(scope="module")
def trained_run(tiny_data_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search") / "run"
    train_experiment(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides=TINY), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def image_index(trained_run, tiny_data_dir):
    out = trained_run.parent / "image-index"
    build_gallery(load_run(trained_run, open_dataset(tiny_data_dir)), "image", out)
    return out


def test_index_ranks_as_the_embeddings_do(trained_run, tiny_data_dir, image_index):
    searcher = load_index(image_index)
    run = load_run(trained_run, tiny_data_dir)
    rows = np.arange(run.dataset.num_items)
    img, txt = embed_rows(run.model, run.builder(training=False), rows)
    assert searcher.manifest.size == run.dataset.num_items == len(searcher.items)
    # a text query typed in is the same vector as that caption embedded from the dataset
    caption = run.dataset.captions[3][0]
    query, unknown = searcher.encode_text(caption)
    assert unknown == []
    np.testing.assert_allclose(query, normalize_rows(txt.emb[txt.ids == run.dataset.caption_offsets[3]])[0],
                               atol=1e-5)
    hits = searcher.search(query, 5)
    brute = normalize_rows(img.emb) @ query
    assert [h.id for h in hits] == list(np.argsort(-brute, kind="stable")[:5])
    np.testing.assert_allclose([h.score for h in hits], np.sort(brute)[::-1][:5], atol=1e-5)
    # an image finds itself first, with cosine 1
    first = searcher.search(searcher.encode_image_row(7), 1)[0]
    assert first.id == 7 and first.score == pytest.approx(1.0, abs=1e-5)
    assert first.item["labels"] == [run.dataset.label_names[c] for c in np.flatnonzero(run.dataset.labels[7])]
    assert first.item["captions"] == run.dataset.captions[7]


def test_text_gallery_and_query_errors(trained_run, tiny_data_dir):
    out = trained_run.parent / "text-index"
    manifest = build_gallery(load_run(trained_run, open_dataset(tiny_data_dir)), "text", out, kind="exact-torch", split="test")
    searcher = load_index(out)
    dataset = searcher.run.dataset
    test_rows = dataset.split("test")
    assert manifest.size == int(sum(len(dataset.captions[r]) for r in test_rows))
    hit = searcher.search(searcher.encode_image_row(int(test_rows[0])), 3)[0]
    row = hit.item["row"]
    assert hit.item["captions"][0] in dataset.captions[row]
    assert len(searcher.search(searcher.encode_image_row(0), manifest.size + 5)) == manifest.size
    with_unknown, unknown = searcher.encode_text(dataset.captions[0][0] + " qwertyuiop")
    assert unknown == ["qwertyuiop"]
    np.testing.assert_array_equal(with_unknown, searcher.encode_text(dataset.captions[0][0])[0])  # dropped
    with pytest.raises(SemshareError, match="none of the query's words"):
        searcher.encode_text("qwertyuiop asdfghjkl")
    with pytest.raises(SemshareError, match="not a row"):
        searcher.encode_image_row(10**6)
    with pytest.raises(SemshareError, match="did not come from `semshare extract`"):
        searcher.encode_image_file(tiny_data_dir / "labels.npy")
    with pytest.raises(SemshareError, match="already exists"):
        build_gallery(load_run(trained_run, open_dataset(tiny_data_dir)), "text", out)


def test_cli_index_build_and_search(trained_run, tiny_data_dir, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", "build", str(trained_run), "--data", str(tiny_data_dir), "--side", "image",
                 "--out", str(out), "--kind", "faiss-hnsw", "--param", "ef_search=32"]) == 0
    assert json.loads((out / "manifest.json").read_text())["params"] == {"ef_search": 32}
    capsys.readouterr()
    dataset = load_index(out).run.dataset
    assert main(["search", str(out), "--text", dataset.captions[0][0], "-k", "4", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [h["rank"] for h in payload["results"]] == [1, 2, 3, 4]
    assert main(["search", str(out), "--image-id", "2", "-k", "3"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("read as: ")  # what the model read in the query image, then the ranking
    assert table[1].startswith("ranking: label (label space alone); each hit's caption closest to the query")
    assert table[2].split()[:3] == ["rank", "score", "id"] and table[3].split()[2] == "2"
    assert main(["search", str(out), "--text", "qwertyuiop", "-k", "3"]) == 2
    assert "none of the query's words" in capsys.readouterr().err
    assert main(["search", str(tmp_path), "--text", "a"]) == 2
    assert "not an index folder" in capsys.readouterr().err


def test_http_api(image_index, tiny_data_dir):
    from fastapi.testclient import TestClient

    from semshare.search.service import create_app

    searcher = load_index(image_index)
    client = TestClient(create_app(searcher, max_body_bytes=2048))
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["size"] == searcher.manifest.size and health["side"] == "image"
    caption = searcher.run.dataset.captions[5][0]
    response = client.post("/search", json={"text": caption, "k": 5})
    assert response.status_code == 200
    results = response.json()["results"]
    expected = searcher.search(searcher.encode_text(caption)[0], 5)
    assert [r["id"] for r in results] == [h.id for h in expected]
    assert client.post("/search", json={"item_id": 4, "k": 1}).json()["results"][0]["id"] == 4
    assert client.get("/items/4").json()["labels"] == searcher.item(4)["labels"]
    assert client.get("/items/999999").status_code == 404
    assert client.get("/items/4/image").status_code == 404  # the synthetic data has no image files
    for bad in ({"text": "a", "k": 0}, {"text": "a", "k": 1001}, {"k": 3}, {"text": "a", "item_id": 1},
                {"text": "x" * 1001}, {"item_id": -1}):
        assert client.post("/search", json=bad).status_code == 422, bad
    assert "none of the query's words" in client.post("/search", json={"text": "qwertyuiop"}).json()["detail"]
    assert client.post("/search", content=b"{" + b" " * 4096 + b"}",
                       headers={"content-type": "application/json"}).status_code == 413
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text


def test_thumbnails_come_from_the_dataset_image_files(trained_run, tiny_data_dir, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from semshare.search.service import create_app

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    num_items = len(json.loads((data / "meta.json").read_text()) and np.load(data / "labels.npy"))
    (data / "images").mkdir()
    (data / "images" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n fake")
    (data / "image_files.txt").write_text("images/0.png\n" + "\n" * (num_items - 1))
    build_gallery(load_run(trained_run, open_dataset(data)), "image", tmp_path / "idx")
    client = TestClient(create_app(load_index(tmp_path / "idx")))
    item = client.get("/items/0").json()
    assert item["image_url"] == "/items/0/image" and "image_file" not in item
    assert client.get(item["image_url"]).content == b"\x89PNG\r\n\x1a\n fake"
    assert client.get("/items/1").json()["image_url"] is None


def test_the_server_serves_only_listed_files_inside_the_image_root(trained_run, tiny_data_dir, tmp_path, capsys):
    import shutil

    from fastapi.testclient import TestClient

    from semshare.cli.main import main
    from semshare.search.service import create_app

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    num_items = len(np.load(data / "labels.npy"))
    (data / "images").mkdir()
    (data / "images" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n fake")
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    entries = ["images/0.png", "/etc/passwd", "../secret.txt", "images/../../secret.txt", "images/missing.png"]
    (data / "image_files.txt").write_text("\n".join(entries) + "\n" * (num_items - len(entries) + 1))
    assert main(["inspect", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)["image_files"]
    assert report["outside_root"] == 3 and report["missing"] == 1 and report["readable"] == 1
    build_gallery(load_run(trained_run, open_dataset(data)), "image", tmp_path / "idx")
    index = load_index(tmp_path / "idx")
    client = TestClient(create_app(index))
    assert client.get("/items/0/image").content == b"\x89PNG\r\n\x1a\n fake"
    for item_id in range(1, 5):
        response = client.get(f"/items/{item_id}/image")
        assert response.status_code == 404 and "do not serve" not in response.text and "root:" not in response.text
    # even an items.jsonl edited after the build cannot point the server outside the root
    index.items[index.position_of[0]]["image_file"] = str(secret)
    assert client.get("/items/0/image").status_code == 404
    for path in ("/items/..%2F..%2Fetc%2Fpasswd/image", "/items/-1/image", "/items/0/../../etc/passwd"):
        assert client.get(path).status_code in (404, 422)
    # errors shown to a client carry no absolute path of this machine
    response = client.post("/search", json={"item_id": 10**6, "k": 3})
    assert response.status_code == 422 and str(tmp_path) not in response.text and "/" not in response.json()["detail"]
    assert client.post("/search", json={"text": "!!! ???", "k": 3}).status_code == 422


def test_a_datasets_image_root_can_only_narrow_what_is_served_and_only_images_are_served(trained_run, tiny_data_dir,
                                                                                        tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from semshare.search.service import create_app

    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    num_items = len(np.load(data / "labels.npy"))
    (data / "images").mkdir()
    (data / "images" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 a jpeg")
    (data / "images" / "fake.png").write_text("not an image, whatever its name says")
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "image_root": "/"}))  # a downloaded dataset asks for all
    entries = ["images/0.jpg", "/etc/passwd", "meta.json", "images/fake.png"]
    (data / "image_files.txt").write_text("\n".join(entries) + "\n" * (num_items - len(entries) + 1))
    build_gallery(load_run(trained_run, open_dataset(data)), "image", tmp_path / "idx")
    index = load_index(tmp_path / "idx")
    client = TestClient(create_app(index))  # default: the dataset folder, not the "/" meta.json asks for
    response = client.get("/items/0/image")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    for item_id in (1, 2, 3):  # /etc/passwd, a JSON file, a text file named .png
        assert client.get(f"/items/{item_id}/image").status_code == 404
    # the person serving may widen the root: /etc/passwd is still no image, so still not served
    wide = TestClient(create_app(index, image_root="/"))
    assert wide.get("/items/0/image").status_code == 200 and wide.get("/items/1/image").status_code == 404
    # a narrower root than the dataset folder serves nothing outside it
    narrow = tmp_path / "elsewhere"
    narrow.mkdir()
    narrow_client = TestClient(create_app(index, image_root=narrow))
    assert narrow_client.get("/items/0/image").status_code == 404
    # /health counts what is served, not what is listed (issue 32: no count of thumbnails drawn broken)
    assert narrow_client.get("/health").json()["images"] == 0 and client.get("/health").json()["images"] == 3


def test_queries_are_batched_off_the_event_loop_and_a_full_queue_answers_503(image_index, monkeypatch):
    import asyncio
    import time

    import httpx

    from semshare.search.service import create_app

    searcher = load_index(image_index)
    captions = [searcher.run.dataset.captions[r][0] for r in range(12)]
    serial = {c: [h.id for h in searcher.search(searcher.encode_text(c)[0], 5)] for c in captions}
    batches = []
    real = searcher.run.query_texts

    def slow(texts, with_labels=True):
        batches.append(len(texts))
        time.sleep(0.2)  # a slow model: later requests pile up behind the first batch
        return real(texts, with_labels)

    monkeypatch.setattr(searcher.run, "query_texts", slow)
    app = create_app(searcher, max_pending=4, max_batch=8)

    async def burst():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await asyncio.gather(*(client.post("/search", json={"text": c, "k": 5}) for c in captions))

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 503} and codes.count(200) >= 4, codes
    assert all(r.headers.get("retry-after") == "1" for r in responses if r.status_code == 503)
    for caption, response in zip(captions, responses):
        if response.status_code == 200:  # a batched answer is the serial one
            assert [r["id"] for r in response.json()["results"]] == serial[caption]
    assert max(batches) > 1  # the queued requests went through the model together


def test_index_build_refuses_an_existing_folder_before_embedding(trained_run, tiny_data_dir, tmp_path, monkeypatch, capsys):
    from semshare.cli.main import main

    out = tmp_path / "idx"
    out.mkdir()
    monkeypatch.setattr("semshare.training.experiment.load_run", lambda *a, **k: pytest.fail("embedded anyway"))
    assert main(["index", "build", str(trained_run), "--data", str(tiny_data_dir), "--side", "image",
                 "--out", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err


def test_slow_or_partial_requests_are_cut_off_and_a_chunked_body_over_the_limit_is_413(image_index):
    import socket
    import threading
    import time

    import uvicorn

    from semshare.search.service import create_app, request_deadline_protocol

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(load_index(image_index), max_body_bytes=4096), host="127.0.0.1",
                                           port=port,
                                           log_level="warning", http=request_deadline_protocol(0.5)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    try:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for connection in slow:  # a request head that never ends
            connection.sendall(b"POST /search HTTP/1.1\r\nHost: x\r\n")
        time.sleep(1.5)
        for connection in slow:
            connection.settimeout(2)
            assert connection.recv(100) == b""  # closed by the server
            connection.close()
        # a chunked body larger than the limit: 413, not the 400 of a body cut short
        with socket.create_connection(("127.0.0.1", port)) as connection:
            chunk = b"x" * 1000
            head = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            connection.sendall(head + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n")
            connection.settimeout(5)
            assert connection.recv(100).startswith(b"HTTP/1.1 413")
        # a normal request still gets its answer on a connection that is quick
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            connection.settimeout(5)
            assert connection.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_one_hit_schema_for_the_cli_python_and_http(image_index, capsys):
    from fastapi.testclient import TestClient

    from semshare.cli.main import main
    from semshare.search.service import create_app

    searcher = load_index(image_index)
    python = [hit.as_dict() for hit in searcher.search_image(4, k=5)]
    assert main(["search", str(image_index), "--image-id", "4", "-k", "5", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    client = TestClient(create_app(searcher))
    http = client.post("/search", json={"item_id": 4, "k": 5}).json()
    assert cli == http and cli["results"] == python
    assert set(python[0]) == {"rank", "score", "id", "row", "labels", "captions", "captions_ranked", "image_url"}
    assert cli["query"] == {"text": None, "item_id": 4, "k": 5, "labels": None, "label_match": "all",
                            "label_boost": False} and cli["gallery_side"] == "image"
    # the schema is typed in the OpenAPI document /docs shows
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["HitOut"]["properties"]) == set(python[0])
    assert schemas["SearchResponse"]["properties"]["results"]["items"]["$ref"].endswith("/HitOut")
    assert client.get("/docs").status_code == 200


def test_label_facets_in_the_cli_and_http_give_the_python_answer(image_index, capsys):
    from fastapi.testclient import TestClient

    from semshare.cli.main import main
    from semshare.search.gallery import LabelFacet
    from semshare.search.service import create_app

    searcher = load_index(image_index)
    labels = sorted({n for item in searcher.items for n in item["labels"]})[:2]
    facet = LabelFacet(tuple(labels), "any")
    python = [h.as_dict() for h in searcher.search_image(4, k=6, facet=facet)]
    assert python and all(set(h["labels"]) & set(labels) for h in python)
    assert main(["search", str(image_index), "--image-id", "4", "-k", "6", "--labels", ",".join(labels), "--any",
                 "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    client = TestClient(create_app(searcher))
    http = client.post("/search", json={"item_id": 4, "k": 6, "labels": labels, "label_match": "any"}).json()
    assert cli == http and cli["results"] == python and cli["query"]["labels"] == labels
    bad = client.post("/search", json={"item_id": 4, "k": 6, "labels": ["nope"]})
    assert bad.status_code == 422 and "unknown label 'nope'" in bad.json()["detail"]
    assert main(["search", str(image_index), "--image-id", "4", "--labels", "nope"]) == 2


def test_the_api_docs_need_no_network_and_describe_every_route(image_index):
    """The Swagger UI and ReDoc pages point at assets this server serves (fastapi-offline), and every route of
    /openapi.json has a summary; the search request carries examples."""
    from fastapi.testclient import TestClient

    from semshare.search.service import create_app

    client = TestClient(create_app(load_index(image_index)))
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert sources and all(s.startswith("/") for s in sources), sources  # nothing from another host
        assert all(client.get(s).status_code == 200 for s in sources if "openapi" not in s)
    spec = client.get("/openapi.json").json()
    assert all(operation.get("summary") for path in spec["paths"].values() for operation in path.values())
    assert spec["components"]["schemas"]["SearchRequest"]["examples"][0]["text"]


def test_embeddings_and_an_index_export_as_parquet_read_back_with_pyarrow(trained_run, tiny_data_dir, image_index,
                                                                         tmp_path):
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow not installed")
    assert main(["embed", str(trained_run), "--split", "test", "--out", str(tmp_path / "npz")]) == 0
    assert main(["embed", str(trained_run), "--split", "test", "--format", "parquet", "--out", str(tmp_path / "pq")]) == 0
    dataset = open_dataset(tiny_data_dir)
    for side in ("img", "txt"):
        table = pq.read_table(tmp_path / "pq" / f"{side}_emb.parquet")
        npz = np.load(tmp_path / "npz" / f"{side}_emb.npz")
        assert table.column_names == ["id", "row", "side", "labels", "captions", "image_file", "embedding"]
        np.testing.assert_array_equal(table["id"].to_numpy(), npz["ids"])
        np.testing.assert_allclose(np.stack(table["embedding"].to_numpy(zero_copy_only=False)),
                                   normalize_rows(npz["emb"]), atol=1e-6)
        first = table.slice(0, 1).to_pylist()[0]
        row = first["row"]
        assert first["labels"] == [dataset.label_names[c] for c in np.flatnonzero(dataset.labels[row])]
        assert json.loads(table.schema.metadata[b"semshare"])["split"] == "test"
    assert pq.read_table(tmp_path / "pq" / "txt_emb.parquet")["captions"][0].as_py() == [dataset.captions[
        int(pq.read_table(tmp_path / "pq" / "txt_emb.parquet")["row"][0].as_py())][0]]
    assert main(["embed", str(trained_run), "--split", "all", "--out", str(tmp_path / "all")]) == 0
    assert len(np.load(tmp_path / "all" / "img_emb.npz")["ids"]) == dataset.num_items

    assert main(["index", "export", str(image_index), "--out", str(tmp_path / "index.parquet")]) == 0
    exported = pq.read_table(tmp_path / "index.parquet")
    searcher = load_index(image_index)
    assert exported.num_rows == searcher.manifest.size and exported["side"][0].as_py() == "image"
    vectors = np.stack(exported["embedding"].to_numpy(zero_copy_only=False))
    hit = searcher.search(vectors[7], 1)[0]  # the stored vectors are the index's: item 7 finds itself
    assert hit.id == exported["id"][7].as_py() and hit.score == pytest.approx(1.0, abs=1e-5)


def test_each_hit_shows_its_caption_closest_to_the_query_first(trained_run, tiny_data_dir, image_index, tmp_path,
                                                               capsys):
    """issue 32, why a hit matched: an image gallery keeps its captions' embeddings, and every answer lists a
    hit's captions by their cosine to the query (the run's own text embedding), closest first, through the CLI,
    HTTP and Python alike; an index built before keeps the dataset's order and says so."""
    import shutil

    from fastapi.testclient import TestClient

    from semshare.search.gallery import QueryRequest
    from semshare.search.service import create_app

    searcher = load_index(image_index)
    run = load_run(trained_run, tiny_data_dir)
    query_text = run.dataset.captions[11][1]
    answer = searcher.query(QueryRequest(text=query_text, k=6))
    query, _ = searcher.encode_text(query_text)
    _, txt = run.embed(np.arange(run.dataset.num_items), sides=("text",))
    by_item = dict(zip(txt.ids.tolist(), normalize_rows(txt.emb)))
    for hit in answer.hits:
        start = int(run.dataset.caption_offsets[hit.id])
        scores = [float(by_item[start + j] @ query) for j in range(len(run.dataset.captions[hit.id]))]
        assert hit.captions == [run.dataset.captions[hit.id][j] for j in np.argsort(-np.array(scores), kind="stable")]
        assert sorted(hit.captions) == sorted(run.dataset.captions[hit.id]) and hit.as_dict()["captions_ranked"]
    assert any(hit.captions != run.dataset.captions[hit.id] for hit in answer.hits)  # some order did change
    http = TestClient(create_app(searcher)).post("/search", json={"text": query_text, "k": 6}).json()
    assert [h["captions"] for h in http["results"]] == [h.captions for h in answer.hits]
    assert main(["search", str(image_index), "--text", query_text, "-k", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == http["results"]

    old = tmp_path / "old-index"  # as an index built before caption embeddings were kept
    shutil.copytree(image_index, old)
    (old / "caption_vectors.safetensors").unlink()
    from semshare.fileio import write_files_manifest

    (old / "files.json").unlink()
    write_files_manifest(old)
    hits = load_index(old).query(QueryRequest(text=query_text, k=6)).hits
    assert [h.id for h in hits] == [h.id for h in answer.hits]
    assert all(h.captions == run.dataset.captions[h.id] and not h.as_dict()["captions_ranked"] for h in hits)
