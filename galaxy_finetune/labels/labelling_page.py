"""A local labelling page: `galaxy-label QUEUE [-o labels.csv]`, then label in the browser.

QUEUE is what says which galaxies to look at:
- the CSV galaxy-label-next wrote (id_str, file, pred_label, p_<class>...): galaxies to label, with the
  model's suggestion and its confidence;
- metrics/label_budget/label_issues.csv (id_str, given_label, suggested_label, p_suggested, row...): labels to
  review, the images read from the store's rows (data/store, already decoded);
- a folder of images, or a catalog with file_loc: galaxies to label, no suggestion.

The server binds to 127.0.0.1 on a free port and prints its address on its first line. It serves one page,
its script and style, the queue as JSON and each queue galaxy's image by its place in the queue (an integer,
never a path). Every answer is written at once, atomically, to the labels CSV (LABEL_COLUMNS); reopening the
page or restarting the server resumes at the first galaxy without an answer. An answer names the answer it
replaces, so a second tab that answered the same galaxy meanwhile is told, never overwritten.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import functools
import getpass
import http.server
import io
import json
import os
import sys
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from galaxy_finetune.core.cli import run_command
from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import read_table, write_csv
from galaxy_finetune.core.params import FitsView, load_params
from galaxy_finetune.data.images import decode_image
from galaxy_finetune.data.sources import image_files as sources_image_files
from galaxy_finetune.data.store import galaxy_pixels, open_images, read_rows
from galaxy_finetune.labels import labelling_assets as assets

LABEL_COLUMNS = ["id_str", "label", "who", "when", "queue", "kind", "file"]
SKIP, ARTEFACT = "skip", "artefact"  # the answers that are not a class
ACTIONS = (SKIP, ARTEFACT)
ISSUE_NEEDS = {"id_str", "given_label", "suggested_label", "row"}  # a label_issues.csv (review) queue
NEXT_NEEDS = {"id_str", "file", "pred_label"}  # galaxy-label-next's CSV
ACTION_KEYS = {"s", "x", "z", "a", "+", "-", "="}  # skip, artefact, undo, asinh, zoom: never a class key
CLASS_KEYS = [k for k in "123456789bcdefghijklmnopqrtuvwy" if k not in ACTION_KEYS]
ASINH_SOFTENING = 10.0  # x -> asinh(10 x) / asinh(10): faint outskirts brighter, the core compressed
IMAGE_SIDE = 424  # pixels of the served image (the page scales it; zoom is the browser's)


@dataclass
class Item:
    """One galaxy of the queue: its image is `file` (decoded on request) or store row `row`."""
    id_str: str
    file: str = ""
    row: int = -1
    suggestion: str = ""
    confidence: float | None = None
    given: str = ""
    split: str = ""


@dataclass
class Queue:
    kind: str  # label (galaxies to label) | review (labels to check)
    source: Path
    classes: list[str]
    items: list[Item]
    store: Path | None = None
    fits: FitsView = field(default_factory=FitsView)


def _probability(value) -> float | None:
    return None if value is None or value == "" or pd.isna(value) else round(float(value), 4)


def load_queue(source: Path, classes: list[str], store: Path | None = None, fits: FitsView = FitsView()) -> Queue:
    """The queue `source` names (see the module's docstring), its ids checked (present, unique, printable) and
    its suggested and given labels checked against `classes`."""
    source = Path(source)
    if not source.exists():
        raise PipelineError(f"{source}: not found; give galaxy-label-next's CSV, metrics/label_budget/"
                            f"label_issues.csv or a folder of images")
    columns = set() if source.is_dir() else set(pd.read_csv(source, nrows=0).columns)
    if ISSUE_NEEDS <= columns:
        table = read_table(source)
        store = Path(store or "data/store")
        items = [Item(str(r.id_str), row=int(r.row), suggestion=str(r.suggested_label),
                      confidence=_probability(getattr(r, "p_suggested", None)), given=str(r.given_label),
                      split=str(getattr(r, "split", ""))) for r in table.itertuples(index=False)]
        _check_names(source, "given_label", [i.given for i in items], classes)
        queue = Queue("review", source, classes, items, store, fits)
        if items:
            read_rows(open_images(store), [i.row for i in items], f"{source} (column row)")  # rows exist
    elif NEXT_NEEDS <= columns:
        table = read_table(source)
        items = []
        for r in table.to_dict("records"):
            p = r.get(f"p_{r['pred_label']}")
            file = str(r["file"]) if os.path.isabs(str(r["file"])) else os.path.join(source.parent, str(r["file"]))
            items.append(Item(str(r["id_str"]), file=os.path.abspath(file), suggestion=str(r["pred_label"]),
                              confidence=_probability(p)))
        queue = Queue("label", source, classes, items, None, fits)
    else:
        queue = Queue("label", source, classes, [Item(i, file=f) for i, f in image_files(source)], None, fits)
    _check_ids(source, [i.id_str for i in queue.items])
    if not queue.items:
        raise PipelineError(f"{source}: the queue is empty; nothing to label")
    return queue


def image_files(source: Path) -> list[tuple[str, str]]:
    """(id_str, absolute file) of the queue's images (data/sources.py's image_files): the page reads these without
    the model's imports."""
    return sources_image_files(source, "queue")


def _check_ids(source: Path, ids: list[str]) -> None:
    seen = set()
    for n, i in enumerate(ids):
        if not i.strip() or any(ord(c) < 32 or ord(c) == 127 for c in i):
            raise PipelineError(f"{source}: row {n}: id_str {i!r} is empty or holds a control character; fix the queue")
        if i in seen:
            raise PipelineError(f"{source}: id_str {i!r} appears twice; a queue lists each galaxy once")
        seen.add(i)


def _check_names(source: Path, column: str, names: list[str], classes: list[str]) -> None:
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise PipelineError(f"{source}: {column} {unknown[0]!r} is not one of the classes {classes}; pass --classes "
                            f"or --params with the data.classes the queue was made with")


def stretched(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels through an asinh stretch (faint features brighter; 0 and 255 stay put)."""
    x = pixels.astype(np.float32) / 255.0
    return np.round(np.arcsinh(ASINH_SOFTENING * x) / np.arcsinh(ASINH_SOFTENING) * 255).astype(np.uint8)


class Labelling:
    """A queue and its answers: the labels CSV is rewritten atomically on every answer, under one lock, and
    held by this process alone (an advisory lock file beside it) while the server runs."""

    def __init__(self, queue: Queue, labels_path: Path, who: str):
        self.queue, self.path, self.who = queue, Path(labels_path), who
        self.index = {item.id_str: n for n, item in enumerate(queue.items)}
        self.lock = threading.Lock()
        self.rows = self._read()  # id_str -> the answer's row (dict of LABEL_COLUMNS), in answer order
        self._lock_file = None

    def _read(self) -> dict[str, dict]:
        if not self.path.is_file():
            return {}
        table = pd.read_csv(self.path, dtype=str, keep_default_na=False)
        missing = set(LABEL_COLUMNS[:2]) - set(table.columns)
        if missing:
            raise PipelineError(f"{self.path}: not a labels file (no column(s) {sorted(missing)}); name another "
                                f"file with -o")
        allowed = set(self.queue.classes) | set(ACTIONS)
        rows = {}
        for n, r in enumerate(table.to_dict("records")):
            if r["label"] not in allowed:
                raise PipelineError(f"{self.path}: row {n}: label {r['label']!r} is not one of {self.queue.classes} "
                                    f"or {list(ACTIONS)}; fix the file or pass the queue's --classes")
            rows[r["id_str"]] = {c: r.get(c, "") for c in LABEL_COLUMNS}
        return rows

    @contextlib.contextmanager
    def held(self):
        """The labels file is this process's while the server runs: a second server on it stops with one line."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise PipelineError(f"{self.path}: another galaxy-label is writing it; open that one's page, or "
                                f"give this one another file with -o") from None
        try:
            yield self
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)  # the file stays: removing it would let two servers lock two files
            handle.close()

    def answers(self) -> dict[str, str]:
        """id_str -> label for the queue's galaxies."""
        return {i: r["label"] for i, r in self.rows.items() if i in self.index}

    def answer(self, id_str: str, label: str, expect: str) -> tuple[bool, str]:
        """Set `id_str`'s answer to `label` ('' removes it: an undo) if its answer is still `expect` ('' for
        none); return (done, the answer now). Written to the labels CSV before this returns."""
        if id_str not in self.index:
            raise ValueError(f"id {id_str!r} is not in this queue")
        if label and label not in self.queue.classes and label not in ACTIONS:
            raise ValueError(f"label {label!r} is not one of {self.queue.classes + list(ACTIONS)}")
        with self.lock:
            now = self.rows.get(id_str, {}).get("label", "")
            if now != expect:
                return False, now
            before = self.rows.pop(id_str, None)
            if label:
                item = self.queue.items[self.index[id_str]]
                self.rows[id_str] = {"id_str": id_str, "label": label, "who": self.who,
                                     "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                     "queue": str(self.queue.source), "kind": self.queue.kind, "file": item.file}
            try:
                write_csv(self.path, pd.DataFrame(list(self.rows.values()), columns=LABEL_COLUMNS))
            except BaseException:
                self.rows.pop(id_str, None)
                if before is not None:
                    self.rows[id_str] = before
                raise
            return True, label

    def state(self) -> dict:
        q = self.queue
        return {"queue": str(q.source), "kind": q.kind, "labels_file": str(self.path), "who": self.who,
                "classes": [{"name": c, "key": k} for c, k in zip(q.classes, CLASS_KEYS)],
                "items": [{"id_str": i.id_str, "suggestion": i.suggestion, "confidence": i.confidence,
                           "given": i.given, "split": i.split} for i in q.items],
                "answers": self.answers()}

    @functools.lru_cache(maxsize=256)
    def image_png(self, n: int, asinh: bool) -> bytes:
        """Queue galaxy n's image as PNG bytes (IMAGE_SIDE pixels a side), asinh-stretched on request."""
        item = self.queue.items[n]
        if item.row >= 0:
            pixels = galaxy_pixels(self.queue.store, [item.row])[0]
            pixels = np.asarray(Image.fromarray(pixels).resize((IMAGE_SIDE, IMAGE_SIDE), Image.BICUBIC))
        else:
            pixels = decode_image(item.file, IMAGE_SIDE, fits=self.queue.fits)
        buffer = io.BytesIO()
        Image.fromarray(stretched(pixels) if asinh else pixels).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()


def make_handler(book: Labelling, allowed_hosts: set[str]):
    static = {"/": ("text/html; charset=utf-8", assets.PAGE_HTML), "/app.js": ("text/javascript", assets.PAGE_JS),
              "/app.css": ("text/css", assets.PAGE_CSS)}

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "galaxy-label"
        sys_version = ""

        def log_message(self, format, *args):  # the terminal shows the address and errors, not every image
            pass

        def _send(self, code: int, body: bytes, content_type: str, cache: bool = False) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "private, max-age=3600" if cache else "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; "
                             "img-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, obj) -> None:
            self._send(code, json.dumps(obj).encode(), "application/json")

        def _trusted(self) -> bool:
            """Only this machine's page: the Host a browser sent must be ours (no DNS rebinding)."""
            if self.headers.get("Host", "") not in allowed_hosts:
                self._json(403, {"error": "unknown Host"})
                return False
            return True

        def do_GET(self):
            if not self._trusted():
                return
            url = urllib.parse.urlsplit(self.path)
            if url.path in static:
                content_type, text = static[url.path]
                return self._send(200, text.encode(), content_type)
            if url.path == "/api/state":
                with book.lock:
                    return self._json(200, book.state())
            if url.path.startswith("/image/"):
                number = url.path[len("/image/"):]
                if not number.isdigit() or int(number) >= len(book.queue.items):
                    return self._json(404, {"error": "no such galaxy in the queue"})
                asinh = urllib.parse.parse_qs(url.query).get("stretch") == ["asinh"]
                try:
                    return self._send(200, book.image_png(int(number), asinh), "image/png", cache=True)
                except PipelineError as exc:
                    print(f"warning: {exc}", file=sys.stderr, flush=True)
                    return self._json(500, {"error": str(exc)})
            self._json(404, {"error": "not found"})

        def do_POST(self):
            if not self._trusted():
                return
            origin = self.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc not in allowed_hosts:
                return self._json(403, {"error": "cross-origin request"})
            if self.path != "/api/answer" or self.headers.get_content_type() != "application/json":
                return self._json(404, {"error": "POST application/json to /api/answer"})
            try:
                length = int(self.headers.get("Content-Length", "0"))
                if not 0 < length <= 65536:
                    raise ValueError("body size")
                body = json.loads(self.rfile.read(length))
                id_str, label, expect = str(body["id_str"]), str(body["label"]), str(body.get("expect", ""))
                done, now = book.answer(id_str, label, expect)
            except (ValueError, KeyError, TypeError) as exc:
                return self._json(400, {"error": str(exc)})
            except (OSError, PipelineError) as exc:  # disk full, folder gone: the page says the answer was not kept
                print(f"error: {book.path}: {exc}", file=sys.stderr, flush=True)
                return self._json(500, {"error": f"{book.path}: not written ({exc})"})
            self._json(200 if done else 409, {"label": now, "answered": len(book.answers())})

    return Handler


def serve(book: Labelling, host: str = "127.0.0.1", port: int = 0, ready=None) -> None:
    """Serve the page until interrupted; print the address first, then what it serves. `ready(server)` is
    called once it listens (tests stop it with server.shutdown())."""
    http.server.ThreadingHTTPServer.daemon_threads = True
    with book.held(), http.server.ThreadingHTTPServer((host, port), make_handler(book, set())) as server:
        port = server.server_address[1]
        names = {host, "127.0.0.1", "localhost"} if host in ("127.0.0.1", "localhost") else {host}
        server.RequestHandlerClass = make_handler(book, {f"{n}:{port}" for n in names})
        print(f"http://{host}:{port}/", flush=True)
        answered = len(book.answers())
        print(f"galaxy-label: {len(book.queue.items)} galaxies to {'review' if book.queue.kind == 'review' else 'label'}"
              f" from {book.queue.source}, {answered} answered already; answers -> {book.path}; Ctrl-C stops",
              flush=True)
        if ready:
            ready(server)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    print(f"galaxy-label: stopped; {len(book.answers())} of {len(book.queue.items)} answered in {book.path}; "
          f"merge them with galaxy-label-merge {book.path}", flush=True)


def queue_classes(args: argparse.Namespace) -> tuple[list[str], FitsView]:
    """The class names the page offers (--classes, else params.yaml's data.classes, else a
    galaxy-label-next CSV's p_<class> columns) and how FITS files are shown (data.fits_*)."""
    fits = FitsView()
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else []
    if Path(args.params).is_file():
        data = load_params(args.params).data
        fits = FitsView(tuple(data.fits_bands), data.fits_stretch, data.fits_q)
        classes = classes or list(data.classes)
    if not classes and args.queue.is_file():
        columns = pd.read_csv(args.queue, nrows=0).columns
        classes = [c[2:] for c in columns if c.startswith("p_") and c not in ("p_given", "p_suggested")]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise PipelineError(f"--classes {','.join(classes) or '(none)'}: name at least 2 distinct classes "
                            f"(or run from the project, whose {args.params} names data.classes)")
    clash = sorted(set(classes) & set(ACTIONS))
    if clash:
        raise PipelineError(f"--classes: {clash[0]!r} is an answer of its own here; rename that class")
    if len(classes) > len(CLASS_KEYS):
        raise PipelineError(f"--classes: {len(classes)} classes but only {len(CLASS_KEYS)} keys; label at most "
                            f"{len(CLASS_KEYS)} classes per page")
    return classes, fits


def default_labels_path(queue: Path) -> Path:
    """labels.csv beside the queue: next.csv -> next_labels.csv, a folder my_galaxies -> my_galaxies_labels.csv."""
    queue = Path(queue)
    return queue.with_name(f"{queue.stem if queue.is_file() else queue.name}_labels.csv")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="galaxy-label", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("queue", type=Path, help="galaxy-label-next's CSV, metrics/label_budget/label_issues.csv, "
                        "a folder of images or a catalog with file_loc")
    parser.add_argument("-o", "--output", type=Path, help="the labels CSV (default: QUEUE_labels.csv beside the queue)")
    parser.add_argument("--who", default=None, help="the name written beside each answer (default: your login)")
    parser.add_argument("--classes", default="", help="comma-separated class names (default: params.yaml's data.classes)")
    parser.add_argument("--params", default="params.yaml", help="the project's params.yaml (classes, FITS view)")
    parser.add_argument("--store", type=Path, default=Path("data/store"), help="the store a label_issues.csv's rows "
                        "refer to (default data/store)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args(argv)

    def body():
        classes, fits = queue_classes(args)
        queue = load_queue(args.queue, classes, args.store, fits)
        who = args.who or _login()
        serve(Labelling(queue, args.output or default_labels_path(args.queue), who), args.host, args.port)

    run_command(body)


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


if __name__ == "__main__":
    main()
