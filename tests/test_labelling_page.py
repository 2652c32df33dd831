"""galaxy-label (the labelling page) and galaxy-label-merge: the answers file, the server's checks, and a real
headless Chromium labelling a queue with the keyboard and the mouse, then the merge into an own catalog."""
from __future__ import annotations

import http.client
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.data.synthetic import render_galaxy
from galaxy_finetune.labels import labelling_page as page
from galaxy_finetune.labels.merge import main as merge_main

CLASSES = ["smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"]
HOSTILE_ID = '<img src=x onerror="document.title=\'pwned\'">'


def next_queue(root: Path, n: int = 6) -> Path:
    """A galaxy-label-next CSV over n synthetic galaxies (the third one's id is HTML)."""
    folder = root / "pool"
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.fromarray(render_galaxy(i % 4, 3, i, 64)).save(folder / f"n{i:03d}.png")
        p = np.full(4, 0.1)
        p[(i + 1) % 4] = 0.7
        rows.append({"rank": i + 1, "id_str": HOSTILE_ID if i == 2 else f"n{i:03d}", "file": str(folder / f"n{i:03d}.png"),
                     "bald": 0.5 - i / 100, "pred_label": CLASSES[(i + 1) % 4],
                     **{f"p_{c}": p[k] for k, c in enumerate(CLASSES)}})
    path = root / "next.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


class Served:
    """galaxy-label's server on a free loopback port, in a thread, stopped on exit."""

    def __init__(self, book: page.Labelling):
        self.book, self.ready = book, threading.Event()
        self.thread = threading.Thread(target=page.serve, args=(book,), kwargs={"ready": self._ready}, daemon=True)

    def _ready(self, server):
        self.server = server
        self.ready.set()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.thread.join(10)

    def request(self, method: str, path: str, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, payload


def book_for(tmp_path: Path, who: str = "tester") -> page.Labelling:
    queue = next_queue(tmp_path) if not (tmp_path / "next.csv").exists() else tmp_path / "next.csv"
    return page.Labelling(page.load_queue(queue, CLASSES), tmp_path / "labels.csv", who)


# ---- the answers file ----

def test_every_answer_is_on_disk_at_once_and_a_stale_answer_is_refused(tmp_path):
    book = book_for(tmp_path)
    assert book.answer("n000", "smooth_cigar", "") == (True, "smooth_cigar")
    on_disk = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
    assert on_disk.columns.tolist() == page.LABEL_COLUMNS
    assert on_disk[["id_str", "label", "who", "kind"]].values.tolist() == [["n000", "smooth_cigar", "tester", "label"]]
    assert on_disk["file"].iloc[0].endswith("n000.png") and on_disk["queue"].iloc[0].endswith("next.csv")
    # a second tab that still thinks n000 is unanswered does not overwrite the first tab's answer
    assert book.answer("n000", "edge_on_disk", "") == (False, "smooth_cigar")
    # undo (label '') only undoes the answer it names
    assert book.answer("n000", "", "edge_on_disk") == (False, "smooth_cigar")
    assert book.answer("n000", "", "smooth_cigar") == (True, "")
    assert pd.read_csv(tmp_path / "labels.csv").empty
    book.answer(HOSTILE_ID, "artefact", "")
    # a new server on the same file resumes with what is there
    assert page.Labelling(book.queue, tmp_path / "labels.csv", "other").answers() == {HOSTILE_ID: "artefact"}
    with pytest.raises(ValueError, match="not one of"):
        book.answer("n001", "spiral", "")
    with pytest.raises(ValueError, match="not in this queue"):
        book.answer("nope", "smooth_round", "")


def test_a_second_server_on_one_labels_file_stops_with_one_line(tmp_path):
    book = book_for(tmp_path)
    with book.held():
        with pytest.raises(PipelineError, match="another galaxy-label is writing it"):
            with page.Labelling(book.queue, tmp_path / "labels.csv", "b").held():
                pass
    with page.Labelling(book.queue, tmp_path / "labels.csv", "b").held():  # released: free again
        pass


def test_queues_labels_files_and_classes_are_checked(tmp_path):
    queue = next_queue(tmp_path)
    loaded = page.load_queue(queue, CLASSES)
    assert loaded.kind == "label" and loaded.items[0].suggestion == "smooth_cigar"
    assert loaded.items[0].confidence == 0.7
    # a folder of images is a queue too, ids from the file names
    assert [i.id_str for i in page.load_queue(tmp_path / "pool", CLASSES).items][:2] == ["n000", "n001"]
    # a review queue: label_issues.csv rows point into the store
    store = tmp_path / "store"
    store.mkdir()
    np.save(store / "images.npy", np.stack([render_galaxy(i % 4, 5, i, 32) for i in range(4)]))
    issues = pd.DataFrame({"rank": [1, 2], "id_str": ["007", "NA"], "split": ["train", "test"],
                           "given_label": ["smooth_round", "edge_on_disk"], "suggested_label": ["edge_on_disk"] * 2,
                           "p_given": [0.1, 0.2], "p_suggested": [0.8, 0.7], "quality": [0.1, 0.2], "row": [3, 0]})
    issues.to_csv(tmp_path / "label_issues.csv", index=False)
    review = page.load_queue(tmp_path / "label_issues.csv", CLASSES, store)
    assert review.kind == "review" and [i.id_str for i in review.items] == ["007", "NA"]  # ids stay text
    assert (review.items[0].given, review.items[0].row) == ("smooth_round", 3)
    png = page.Labelling(review, tmp_path / "r.csv", "t").image_png(0, False)
    shown = np.asarray(Image.open(__import__("io").BytesIO(png)))
    assert shown.shape == (page.IMAGE_SIDE, page.IMAGE_SIDE, 3)
    issues.assign(row=[3, 9]).to_csv(tmp_path / "bad_rows.csv", index=False)
    with pytest.raises(PipelineError, match="no row 9 in a store of 4"):
        page.load_queue(tmp_path / "bad_rows.csv", CLASSES, store)
    with pytest.raises(PipelineError, match="given_label 'edge_on_disk' is not one of the classes"):
        page.load_queue(tmp_path / "label_issues.csv", ["smooth_round", "spiral"], store)
    pd.concat([issues, issues.head(1)]).to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(PipelineError, match="'007' appears twice"):
        page.load_queue(tmp_path / "twice.csv", CLASSES, store)
    pd.DataFrame({"id_str": ["n000"], "label": ["spiral"]}).to_csv(tmp_path / "old.csv", index=False)
    with pytest.raises(PipelineError, match=r"old.csv: row 0: label 'spiral' is not one of"):
        page.Labelling(loaded, tmp_path / "old.csv", "t")
    with pytest.raises(PipelineError, match="not found"):
        page.load_queue(tmp_path / "missing.csv", CLASSES)


def test_stretch_brightens_faint_pixels_and_keeps_the_ends():
    pixels = np.array([[[0, 10, 255]]], dtype=np.uint8)
    out = page.stretched(pixels)
    assert out[0, 0, 0] == 0 and out[0, 0, 2] == 255 and out[0, 0, 1] >= 3 * 10


# ---- the server's checks ----

def test_the_server_serves_only_queue_images_and_only_to_its_own_host(tmp_path):
    with Served(book_for(tmp_path)) as served:
        status, body = served.request("GET", "/image/0?stretch=asinh")
        assert status == 200 and body.startswith(b"\x89PNG")
        for path in ("/image/6", "/image/-1", "/image/../next.csv", "/image/0/../../etc/passwd", "/next.csv",
                     "/pool/n000.png", "/%2e%2e/next.csv"):
            assert served.request("GET", path)[0] == 404, path
        # DNS rebinding: a page on another name that resolves here gets nothing
        assert served.request("GET", "/api/state", headers={"Host": f"evil.example:{served.port}"})[0] == 403
        # another site's page cannot post answers
        answer = {"id_str": "n000", "label": "smooth_round", "expect": ""}
        assert served.request("POST", "/api/answer", answer, {"Origin": "http://evil.example"})[0] == 403
        assert served.request("POST", "/api/answer", {"id_str": "n000", "label": "spiral"})[0] == 400
        assert served.request("POST", "/api/answer", answer)[0] == 200
        status, body = served.request("POST", "/api/answer", {**answer, "label": "edge_on_disk"})
        assert status == 409 and json.loads(body)["label"] == "smooth_round"  # the other tab's answer stands
        state = json.loads(served.request("GET", "/api/state")[1])
        assert state["answers"] == {"n000": "smooth_round"} and state["items"][2]["id_str"] == HOSTILE_ID
        status, html = served.request("GET", "/")
        assert status == 200 and b"script-src" not in html and b"<script src=\"/app.js\"" in html
    assert pd.read_csv(tmp_path / "labels.csv")["label"].tolist() == ["smooth_round"]


def test_the_command_prints_its_address_first_and_refuses_bad_classes(tmp_path, capsys):
    with pytest.raises(SystemExit):
        page.main([str(next_queue(tmp_path)), "--classes", "only_one", "--params", str(tmp_path / "none.yaml")])
    assert capsys.readouterr().err.strip() == ("error: --classes only_one: name at least 2 distinct classes (or run "
                                               f"from the project, whose {tmp_path / 'none.yaml'} names data.classes)")
    args = page.argparse.Namespace(classes="", params=str(tmp_path / "none.yaml"), queue=tmp_path / "next.csv")
    assert page.queue_classes(args)[0] == CLASSES  # from the p_<class> columns of galaxy-label-next's CSV
    assert page.default_labels_path(tmp_path / "next.csv") == tmp_path / "next_labels.csv"
    assert page.default_labels_path(tmp_path / "pool") == tmp_path / "pool_labels.csv"


# ---- a real browser ----

def _browser():
    """Headless Chromium through Selenium, or a skip saying what is missing."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -r requirements.txt")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver "
                    "(apt-get install chromium chromium-driver) to run the labelling page's browser test")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(driver))


def _press(browser, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    ActionChains(browser).send_keys(key).perform()


def _wait_for(browser, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    WebDriverWait(browser, 10).until(lambda b: text in b.find_element(By.ID, element_id).text,
                                     f"#{element_id} never showed {text!r}")


@pytest.fixture
def labelled(tmp_path):
    """Six galaxies labelled in headless Chromium: five with keys, one undone, a reload, the rest finished
    (one with the mouse). Returns (the queue, the labels CSV)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    book = book_for(tmp_path, who="ana")
    try:
        with Served(book) as served:
            browser.get(served.url)
            _wait_for(browser, "galaxy-id", "n000")
            assert "model suggests: smooth_cigar (70.0%)" in browser.find_element(By.ID, "suggestion").text
            legend = [b.text.split() for b in browser.find_elements(By.CSS_SELECTOR, "#classes button")]
            assert legend == [[k, c] for k, c in zip("1234", CLASSES)]  # one key per class, on screen
            assert len(browser.find_elements(By.CSS_SELECTOR, "#strip img")) == 5  # the next ones
            _press(browser, "a")  # asinh stretch on, zoomed in: the galaxy still loads
            _press(browser, "+")
            _wait_for(browser, "stretch-state", "on")
            image = browser.find_element(By.ID, "galaxy")
            assert "stretch=asinh" in image.get_attribute("src") and "scale(1.5)" in image.get_attribute("style")
            WebDriverWait(browser, 10).until(  # the stretched image arrives and decodes
                lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 424,
                "the asinh-stretched galaxy never loaded")
            _press(browser, "a")
            for key, shown_next, done in (("1", "n001", 1), ("2", HOSTILE_ID, 2), ("x", "n003", 3),
                                          ("3", "n004", 4), ("s", "n005", 5)):
                _press(browser, key)
                _wait_for(browser, "progress", f"{done} of 6 answered")
                _wait_for(browser, "galaxy-id", shown_next)
            # the HTML id was shown as text, never run
            assert browser.title.startswith("galaxy-label") and not browser.find_elements(By.CSS_SELECTOR, "aside img")
            assert len(pd.read_csv(tmp_path / "labels.csv")) == 5  # on disk before the next galaxy
            _press(browser, "z")  # undo the skip of n004
            _wait_for(browser, "progress", "4 of 6 answered")
            _wait_for(browser, "galaxy-id", "n004")
            assert pd.read_csv(tmp_path / "labels.csv")["id_str"].tolist() == ["n000", "n001", HOSTILE_ID, "n003"]
            assert "s per galaxy" in browser.find_element(By.ID, "pace").text
            browser.refresh()  # resumes at the first galaxy without an answer
            _wait_for(browser, "galaxy-id", "n004")
            _wait_for(browser, "progress", "4 of 6 answered")
            _press(browser, "4")
            _wait_for(browser, "galaxy-id", "n005")
            browser.find_element(By.XPATH, "//div[@id='classes']/button[@data-name='smooth_round']").click()
            _wait_for(browser, "progress", "6 of 6 answered")
            _wait_for(browser, "done", "galaxy-label-merge")
            browser.save_screenshot(str(tmp_path / "done.png"))
            assert browser.title == "galaxy-label: " + str(tmp_path / "next.csv")
    finally:
        browser.quit()
    return tmp_path / "next.csv", tmp_path / "labels.csv"


@pytest.mark.slow  # headless Chromium
def test_a_browser_labels_a_queue_with_the_keyboard_undo_and_reload(labelled):
    queue, labels_path = labelled
    labels = pd.read_csv(labels_path, dtype=str, keep_default_na=False)
    assert labels[["id_str", "label"]].values.tolist() == [
        ["n000", "smooth_round"], ["n001", "smooth_cigar"], [HOSTILE_ID, "artefact"], ["n003", "edge_on_disk"],
        ["n004", "unbarred_spiral"], ["n005", "smooth_round"]]
    assert set(labels["who"]) == {"ana"} and set(labels["queue"]) == {str(queue)} and set(labels["kind"]) == {"label"}
    assert pd.to_datetime(labels["when"]).is_monotonic_increasing
    assert labels["file"].tolist()[3].endswith("pool/n003.png")


@pytest.mark.slow  # headless Chromium (its labels)
def test_merge_folds_the_browser_labels_into_the_catalog(labelled, tmp_path, capsys):
    queue, labels_path = labelled
    pool = tmp_path / "pool"
    # the catalog already holds n000 (labelled edge_on_disk: a correction) and n001 (smooth_cigar: a confirmation)
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame({"id_str": ["n000", "n001", "007"], "file_loc": ["pool/n000.png", "pool/n001.png", "pool/n002.png"],
                  "label": ["edge_on_disk", "smooth_cigar", "smooth_round"], "split": ["train", "test", "val"]}
                 ).to_csv(catalog, index=False)
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: catalog\n  catalog: {catalog}\n  classes: {CLASSES}\n")
    merge_main([str(labels_path), "--params", str(params)])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("galaxy-label-merge: 3 added, 1 corrected, 1 confirmed, 1 skipped, 0 removed -> ")
    merged = pd.read_csv(catalog, dtype=str, keep_default_na=False)
    assert merged["id_str"].tolist() == ["n000", "n001", "007", "n003", "n004", "n005"]  # the artefact is not added
    assert merged["label"].tolist() == ["smooth_round", "smooth_cigar", "smooth_round", "edge_on_disk",
                                        "unbarred_spiral", "smooth_round"]
    assert merged["label_before"].tolist() == ["edge_on_disk", "", "", "", "", ""]
    assert merged["label_by"].tolist() == ["ana", "", "", "ana", "ana", "ana"]
    assert merged["file_loc"].tolist()[3:] == ["pool/n003.png", "pool/n004.png", "pool/n005.png"]
    assert merged["split"].tolist() == ["train", "test", "val", "", "", ""]
    # the project reads the merged catalog: new galaxies in, the corrected label, 007 kept as text
    from galaxy_finetune.data.sources import user_catalog
    raw = user_catalog(catalog, CLASSES)
    assert raw.catalog["label"].tolist() == [0, 1, 0, 2, 3, 0] and raw.catalog["id_str"].iloc[2] == "007"
    # merging again changes nothing: the catalog's bytes (and so dvc's hash) stay as they are
    before = catalog.read_bytes()
    merge_main([str(labels_path), "--params", str(params)])
    assert catalog.read_bytes() == before
    assert capsys.readouterr().out.startswith("galaxy-label-merge: 0 added, 0 corrected, 5 confirmed, 1 skipped, "
                                              "0 removed; ")
    assert (pool / "n000.png").is_file()


# ---- merging, without a browser ----

def _project(tmp_path, labels: list[dict], catalog_rows: dict, kind: str = "label"):
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame(catalog_rows).to_csv(catalog, index=False)
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: catalog\n  catalog: {catalog}\n  classes: [round, disk]\n")
    labels_path = tmp_path / "labels.csv"
    pd.DataFrame([{"who": "b", "when": "2025-01-01T00:00:00+00:00", "queue": "q", "kind": kind, "file": "", **r}
                  for r in labels], columns=page.LABEL_COLUMNS).to_csv(labels_path, index=False)
    return catalog, params, labels_path


def test_merge_reviews_corrections_artefacts_and_integer_labels(tmp_path, capsys):
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
    catalog, params, labels = _project(
        tmp_path, [{"id_str": "a", "label": "disk"}, {"id_str": "b", "label": "artefact"},
                   {"id_str": "c", "label": "skip"}, {"id_str": "a", "label": "round"}],
        {"id_str": ["a", "b", "c"], "file_loc": ["a.png", "b.png", "c.png"], "label": [1, 0, 1]}, kind="review")
    merge_main([str(labels), "--params", str(params)])
    assert capsys.readouterr().out.startswith("galaxy-label-merge: 0 added, 1 corrected, 0 confirmed, 1 skipped, "
                                              "1 removed -> ")
    merged = pd.read_csv(catalog, dtype=str, keep_default_na=False)
    assert merged[["id_str", "label", "label_before"]].values.tolist() == [["a", "0", "1"], ["c", "1", ""]]
    assert pd.read_csv(tmp_path / "catalog.artefacts.csv", dtype=str)["id_str"].tolist() == ["b"]


@pytest.mark.parametrize("labels, catalog_rows, kind, message", [
    ([{"id_str": "zz", "label": "round"}], {"id_str": ["a"], "file_loc": ["a.png"], "label": ["round"]}, "review",
     "id 'zz' was reviewed but is not in"),
    ([{"id_str": "a", "label": "spiral"}], {"id_str": ["a"], "file_loc": ["a.png"], "label": ["round"]}, "review",
     "label 'spiral' is not one of data.classes ['round', 'disk']"),
    ([{"id_str": "typo", "label": "disk", "file": "a.png"}], {"id_str": ["a"], "file_loc": ["a.png"],
                                                              "label": ["round"]}, "label",
     "is already in"),
    ([{"id_str": "new", "label": "disk"}], {"id_str": ["a"], "file_loc": ["a.png"], "label": ["round"]}, "label",
     "gives no file to add it from"),
])
def test_merge_refuses_ids_and_labels_it_cannot_place(tmp_path, capsys, labels, catalog_rows, kind, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    for row in labels:
        if row.get("file"):
            row["file"] = str(tmp_path / row["file"])
    catalog, params, labels_path = _project(tmp_path, labels, catalog_rows, kind)
    before = catalog.read_bytes()
    with pytest.raises(SystemExit):
        merge_main([str(labels_path), "--params", str(params)])
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert catalog.read_bytes() == before


def test_merge_starts_an_own_catalog_from_a_built_in_run(tmp_path, capsys):
    raw = tmp_path / "raw.csv"
    Image.new("RGB", (8, 8)).save(tmp_path / "g.png")
    pd.DataFrame({"id_str": ["g"], "label": [0], "label_name": ["round"], "split": ["train"],
                  "src": [str(tmp_path / "g.png")]}).to_csv(raw, index=False)
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  source: synthetic\n  classes: [smooth_round, edge_on_disk]\n")
    labels = tmp_path / "labels.csv"
    pd.DataFrame([{"id_str": "g", "label": "edge_on_disk", "kind": "review"}]).to_csv(labels, index=False)
    with pytest.raises(SystemExit):
        merge_main([str(labels), "--params", str(params)])
    assert "not an own catalog; pass --catalog" in capsys.readouterr().err
    pd.DataFrame({"id_str": ["g"], "label": [0], "label_name": ["smooth_round"], "split": ["train"],
                  "src": [str(tmp_path / "g.png")]}).to_csv(raw, index=False)
    mine = tmp_path / "mine.csv"
    merge_main([str(labels), "--params", str(params), "--catalog", str(mine), "--from-raw", str(raw)])
    out = capsys.readouterr().out
    assert "0 added, 1 corrected" in out and "set data.source: catalog and data.catalog" in out
    merged = pd.read_csv(mine, dtype=str, keep_default_na=False)
    assert merged[["id_str", "label", "label_before", "split"]].values.tolist() == [
        ["g", "edge_on_disk", "smooth_round", "train"]]


@pytest.mark.slow  # the page's server killed in its own process
def test_a_killed_server_loses_nothing_answered_and_a_restart_resumes(tmp_path):
    """The command as a user runs it: its first line is its address; SIGKILL after an answer, then a restart on
    the same queue serves that answer back."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    queue = next_queue(tmp_path)
    command = [sys.executable, "-m", "galaxy_finetune.labels.labelling_page", str(queue), "--classes",
               ",".join(CLASSES), "--params", str(tmp_path / "none.yaml")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for attempt, expected in ((0, {}), (1, {"n001": "edge_on_disk"})):
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            url = server.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:") and url.endswith("/"), url
            state = json.loads(urllib.request.urlopen(url + "api/state", timeout=10).read())
            assert state["answers"] == expected
            if attempt == 0:
                request = urllib.request.Request(url + "api/answer", method="POST",
                                                 data=json.dumps({"id_str": "n001", "label": "edge_on_disk"}).encode(),
                                                 headers={"Content-Type": "application/json"})
                assert json.loads(urllib.request.urlopen(request, timeout=10).read())["answered"] == 1
        finally:
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            server.stdout.close()
            server.stderr.close()
    assert pd.read_csv(tmp_path / "next_labels.csv")["label"].tolist() == ["edge_on_disk"]
