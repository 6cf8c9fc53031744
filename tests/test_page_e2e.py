"""The results page driven in headless Chromium: type a query, see the ranked items the API returns.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them) and selenium; skips without them.
"""

import shutil
import socket
import threading
import time

import pytest

from semshare.api import load_index
from semshare.search.gallery import build_gallery
from semshare.data.dataset import open_dataset
from semshare.training.recipes import resolve_config
from semshare.training.experiment import load_run, train_experiment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="headless Chromium not installed (apt-get install chromium chromium-driver)")

TINY = {"models.semantic_sharing.dim": 16, "models.semantic_sharing.layers": 1, "models.semantic_sharing.heads": 2, "models.semantic_sharing.ffn_dim": 32, "text.word_dim": 8,
        "text.word2vec_epochs": 1, "train.batch_size": 16, "train.epochs": 1, "train.progress": False}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(app):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(tiny_data_dir, tmp_path_factory):
    from semshare.search.service import create_app

    root = tmp_path_factory.mktemp("e2e")
    train_experiment(open_dataset(tiny_data_dir), resolve_config("ours", "small", overrides=TINY), root / "run")
    build_gallery(load_run(root / "run", open_dataset(tiny_data_dir)), "image", root / "index")
    searcher = load_index(root / "index")
    server, thread, url = _start(create_app(searcher))
    yield url, searcher
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # the flags that keep Chromium off the (closed) network and out of the sandbox a root CI user lacks
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def wait_for(condition, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met within the timeout")


def test_typed_query_shows_the_ranked_results(served, browser):
    from selenium.webdriver.common.by import By

    url, searcher = served
    browser.get(url + "/")
    wait_for(lambda: "Gallery:" in browser.find_element(By.ID, "gallery").text)
    assert f"{searcher.manifest.size} images" in browser.find_element(By.ID, "gallery").text
    caption = searcher.run.dataset.captions[2][0]
    box = browser.find_element(By.ID, "query")
    box.clear()
    box.send_keys(caption + " qwertyuiop")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("5")
    browser.find_element(By.ID, "search").click()
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "li.result"))
    expected = searcher.search(searcher.encode_text(caption)[0], 5)
    assert [int(r.get_attribute("data-id")) for r in rows] == [h.id for h in expected]
    first = rows[0]
    assert first.find_element(By.CLASS_NAME, "rank").text == "1"
    assert f"{expected[0].score:.4f}" in first.find_element(By.CLASS_NAME, "score").text
    shown_labels = [e.text for e in first.find_elements(By.CLASS_NAME, "label")]
    assert shown_labels == expected[0].item["labels"]
    assert "unknown words ignored: qwertyuiop" in browser.find_element(By.ID, "status").text


def test_a_query_of_unknown_words_shows_the_error(served, browser):
    from selenium.webdriver.common.by import By

    url, _ = served
    browser.get(url + "/")
    box = browser.find_element(By.ID, "query")
    box.send_keys("qwertyuiop asdfghjkl")
    browser.find_element(By.ID, "search").click()
    status = wait_for(lambda: (lambda e: e if "Error" in e.text else None)(browser.find_element(By.ID, "status")))
    assert "none of the query's words" in status.text
    assert browser.find_elements(By.CSS_SELECTOR, "li.result") == []


def _ids(browser):
    from selenium.webdriver.common.by import By

    return [int(r.get_attribute("data-id")) for r in browser.find_elements(By.CSS_SELECTOR, "li.result")]


def test_a_search_lives_in_the_url_and_back_returns_to_it(served, browser):
    from urllib.parse import quote

    from selenium.webdriver.common.by import By

    url, searcher = served
    caption = searcher.run.dataset.captions[2][0]
    expected = [h.id for h in searcher.search(searcher.encode_text(caption)[0], 3)]
    browser.get(f"{url}/?q={quote(caption)}&k=3")  # a shared link runs its search
    assert wait_for(lambda: _ids(browser) == expected)
    assert browser.find_element(By.ID, "query").get_attribute("value") == caption
    item_box = browser.find_element(By.ID, "item-id")
    browser.find_element(By.ID, "query").clear()
    item_box.send_keys("7")
    browser.find_element(By.ID, "search").click()
    by_image = [h.id for h in searcher.search(searcher.encode_image_row(7), 3)]
    assert wait_for(lambda: _ids(browser) == by_image)
    assert "item=7" in browser.current_url and "k=3" in browser.current_url
    assert "Query: item 7" in wait_for(lambda: browser.find_element(By.ID, "query-item").text)  # what was asked
    browser.back()
    assert wait_for(lambda: _ids(browser) == expected)
    assert browser.find_element(By.ID, "query").get_attribute("value") == caption


def test_a_gallery_without_image_files_says_so_and_the_grid_view_is_in_the_url(served, browser):
    from selenium.webdriver.common.by import By

    url, _ = served
    browser.get(f"{url}/?item=3&k=12&view=grid")
    assert wait_for(lambda: len(_ids(browser)) == 12)
    assert "no image files" in wait_for(lambda: browser.find_element(By.ID, "note").text)
    assert browser.find_element(By.ID, "results").get_attribute("class") == "grid"
    assert browser.find_element(By.ID, "grid").is_selected()


def test_thumbnails_come_from_captions_file_names_under_the_image_root_and_open_the_image(tiny_data_dir, served,
                                                                                         browser, tmp_path):
    import json

    from PIL import Image
    from selenium.webdriver.common.by import By

    from semshare.search.service import create_app

    url, searcher = served
    photos = tmp_path / "photos"  # the images live elsewhere; captions.jsonl names them, no image_files.txt
    photos.mkdir()
    for row in range(searcher.manifest.size):
        Image.new("RGB", (8, 8), (row % 255, 0, 0)).save(photos / f"img{row}.png")
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    lines = [json.loads(line) for line in (data / "captions.jsonl").read_text().splitlines()]
    (data / "captions.jsonl").write_text("".join(json.dumps({**r, "file_name": f"img{i}.png"}) + "\n"
                                                 for i, r in enumerate(lines)))
    index = load_index(searcher.folder, data_dir=data)
    server, thread, with_images = _start(create_app(index, image_root=photos))
    try:
        browser.get(f"{with_images}/?item=3&k=4")
        assert wait_for(lambda: len(_ids(browser)) == 4)
        assert browser.find_element(By.ID, "note").text == ""
        links = browser.find_elements(By.CSS_SELECTOR, "li.result a")
        first = _ids(browser)[0]
        assert links and links[0].get_attribute("href") == f"{with_images}/items/{first}/image"
        assert wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#query-item img"))  # the query's own image
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_click_on_a_label_keeps_only_the_hits_with_it_and_the_filter_can_be_removed(served, browser):
    from selenium.webdriver.common.by import By

    from semshare.search.gallery import LabelFacet

    url, searcher = served
    browser.get(f"{url}/?item=3&k=8")
    assert wait_for(lambda: len(_ids(browser)) == 8)
    unfiltered = _ids(browser)
    chip = browser.find_elements(By.CSS_SELECTOR, "li.result .labels .label")[0]
    label = chip.text
    chip.click()
    expected = [h.id for h in searcher.search(searcher.encode_image_row(3), 8, LabelFacet((label,)))]
    assert wait_for(lambda: _ids(browser) == expected)
    assert f"labels={label}" in browser.current_url
    assert [c.get_attribute("data-label") for c in browser.find_elements(By.CSS_SELECTOR, "#facets .label")] == [label]
    browser.find_element(By.CSS_SELECTOR, "#facets .label").click()  # remove it
    assert wait_for(lambda: _ids(browser) == unfiltered)
    assert "labels=" not in browser.current_url


def test_the_page_shows_what_the_model_read_and_flags_a_weak_query(served, browser):
    from selenium.webdriver.common.by import By

    url, searcher = served
    browser.get(f"{url}/?q=the&k=3")
    reading = wait_for(lambda: (lambda e: e if "Read as:" in e.text else None)(browser.find_element(By.ID, "reading")))
    expected = searcher.read_text("the")
    assert expected.weak and "Weak query: none of its known words carries content" in reading.text
    assert f"{expected.labels[0][0]} {expected.labels[0][1]:.2f}" in reading.text
    caption = searcher.run.dataset.captions[2][0]
    browser.get(f"{url}/?q={caption.replace(' ', '+')}&k=3")
    wait_for(lambda: "Read as:" in browser.find_element(By.ID, "reading").text
             and browser.find_elements(By.CSS_SELECTOR, "li.result"))
    assert ("Weak query" in browser.find_element(By.ID, "reading").text) == searcher.read_text(caption).weak


def test_the_api_docs_render_offline_with_every_route_summarised(served, browser):
    """/docs (Swagger UI) and /redoc load their scripts from the server itself (fastapi-offline), not a CDN, so
    they render on a machine without internet; each route shows its summary."""
    from selenium.webdriver.common.by import By

    url, _ = served
    browser.get(url + "/docs")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-description"))
    summaries = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")}
    assert {"Rank the gallery for one query", "One gallery item", "Status and the gallery"} <= summaries
    browser.get(url + "/redoc")
    wait_for(lambda: "Rank the gallery for one query" in browser.find_element(By.TAG_NAME, "body").text, timeout=30)
    scripts = browser.execute_script("return Array.from(document.scripts).map(s => s.src).filter(Boolean)")
    assert scripts and all(src.startswith(url) for src in scripts), scripts


def test_the_pages_small_defects_are_gone(served, browser, tmp_path):
    """issue 33: an oversized k reads as a sentence, not raw JSON; a URL with both q and item says it searched
    the text; on a text gallery an image-id query is shown as the image row it is, not text item ID's photo."""
    from selenium.webdriver.common.by import By

    from semshare.search.service import create_app

    url, searcher = served
    browser.get(f"{url}/?q=a+dog&k=5000")
    status = wait_for(lambda: (lambda e: e if "Error" in e.text else None)(browser.find_element(By.ID, "status")))
    assert status.text.startswith("Error: k: ") and "1000" in status.text and "{" not in status.text
    caption = searcher.run.dataset.captions[4][0]
    browser.get(f"{url}/?q={caption.replace(' ', '+')}&item=5&k=3")
    status = wait_for(lambda: (lambda e: e if "results" in e.text else None)(browser.find_element(By.ID, "status")))
    assert "Both a text and an image id (item 5) were given: searched the text" in status.text
    assert browser.find_element(By.ID, "query-item").text == ""

    run = load_run(searcher.run_dir, searcher.run.dataset)
    build_gallery(run, "text", tmp_path / "text-index")
    server, thread, text_url = _start(create_app(load_index(tmp_path / "text-index")))
    try:
        browser.get(f"{text_url}/?item=7&k=3")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "li.result"))
        panel = wait_for(lambda: (lambda e: e if e.text else None)(browser.find_element(By.ID, "query-item")))
        assert panel.text.startswith("Query: image row 7 of the dataset (this gallery holds texts")
        assert panel.find_elements(By.TAG_NAME, "img") == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_hit_shows_its_closest_caption_and_the_others_on_demand(served, browser):
    """issue 32: the first caption of a hit is the one closest to the query (the API's order); all captions
    open on demand."""
    from selenium.webdriver.common.by import By

    from semshare.search.gallery import QueryRequest

    url, searcher = served
    text = searcher.run.dataset.captions[6][1]
    expected = searcher.query(QueryRequest(text=text, k=3)).hits
    browser.get(f"{url}/?q={text.replace(' ', '+')}&k=3")
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "li.result"))
    for row, hit in zip(rows, expected):
        shown = row.find_elements(By.CSS_SELECTOR, ".info > p.caption")
        assert [p.text for p in shown] == [hit.captions[0]]
        details = row.find_element(By.CSS_SELECTOR, "details.more-captions")
        assert "closest to the query first" in details.find_element(By.TAG_NAME, "summary").text
        details.find_element(By.TAG_NAME, "summary").click()
        assert [p.text for p in details.find_elements(By.CSS_SELECTOR, "p.caption")] == hit.captions[1:]


def test_an_image_is_uploaded_from_the_page_and_every_hit_finds_similar(browser, tmp_path):
    """issue 32: the page's file picker sends the image to POST /search and shows it with its results and
    reading; "find similar" on a hit searches with that hit's image (the URL's ?item=)."""
    from selenium.webdriver.common.by import By

    from semshare.cli.main import main
    from semshare.search.service import create_app
    from test_extract import extracted_run

    images, _ = extracted_run(tmp_path, seed=6)
    assert main(["index", "build", str(tmp_path / "run"), "--side", "image", "--out", str(tmp_path / "index")]) == 0
    index = load_index(tmp_path / "index")
    expected = [h.id for h in index.search_image_file(images / "img3.png", k=4)]
    server, thread, url = _start(create_app(index))
    try:
        browser.get(f"{url}/?k=4")
        wait_for(lambda: "Gallery:" in browser.find_element(By.ID, "gallery").text)
        browser.find_element(By.ID, "image-file").send_keys(str(images / "img3.png"))
        wait_for(lambda: "results for the image" in browser.find_element(By.ID, "status").text)
        assert _ids(browser) == expected
        assert browser.find_element(By.CSS_SELECTOR, "#query-item img").get_attribute("src").startswith("blob:")
        assert "Read as:" in browser.find_element(By.ID, "reading").text
        first = browser.find_elements(By.CSS_SELECTOR, "li.result button.similar")[0]
        row = int(first.get_attribute("data-row"))
        first.click()
        wait_for(lambda: f"item={row}" in browser.current_url and _ids(browser))
        assert _ids(browser)[0] == row  # an image of the gallery finds itself first
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_more_results_asks_again_with_a_larger_k_and_keeps_the_first_hits(served, browser):
    from selenium.webdriver.common.by import By

    url, searcher = served
    caption = searcher.run.dataset.captions[3][0]
    browser.get(url + f"/?q={caption}&k=4")
    wait_for(lambda: len(_ids(browser)) == 4)
    first = _ids(browser)
    more = browser.find_element(By.ID, "more")
    assert more.is_displayed()
    more.click()
    wait_for(lambda: len(_ids(browser)) == 14)
    assert _ids(browser)[:4] == first
    assert [h.id for h in searcher.search(searcher.encode_text(caption)[0], 14)] == _ids(browser)
    assert "k=14" in browser.current_url
    if searcher.manifest.size <= 14:  # every item shown: nothing more to ask for
        assert not browser.find_element(By.ID, "more").is_displayed()
