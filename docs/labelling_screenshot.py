"""docs/label-budget.md's screenshot of the labelling page: `python docs/labelling_screenshot.py` -> docs/labelling_page.png.

A review queue like label_issues.csv over 12 synthetic galaxies in a throwaway store, served by galaxy-label,
three answered with the keyboard in headless Chromium (Debian's chromium + chromium-driver, through Selenium),
the asinh stretch on, then a screenshot. Run it from the project root with this checkout first on the path:
`PYTHONPATH=. python docs/labelling_screenshot.py`.
"""
from __future__ import annotations

import io
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from galaxy_finetune.core.files import atomic_path

from galaxy_finetune.data.synthetic import render_galaxy
from galaxy_finetune.labels import labelling_page as page

CLASSES = ["smooth_round", "smooth_cigar", "edge_on_disk", "unbarred_spiral"]
OUT = Path(__file__).resolve().with_name("labelling_page.png")


def main() -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains

    rng = np.random.default_rng(4)
    home = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # a project's paths on screen: metrics/label_budget/label_issues.csv, data/store
        root = Path(".")
        (root / "data" / "store").mkdir(parents=True)
        (root / "metrics" / "label_budget").mkdir(parents=True)
        shapes = [3, 2, 0, 3, 1, 2, 3, 0, 1, 3, 2, 0]
        np.save(root / "data" / "store" / "images.npy", np.stack([render_galaxy(s, 11, i, 128) for i, s in enumerate(shapes)]))
        given = [CLASSES[(s + 1) % 4] for s in shapes]  # every label wrong: a review queue
        p = np.round(rng.uniform(0.55, 0.95, len(shapes)), 4)
        pd.DataFrame({"rank": range(1, 13), "id_str": [f"J{1023 + 37 * i:04d}+{12 + i:02d}" for i in range(12)],
                      "split": "train", "given_label": given, "suggested_label": [CLASSES[s] for s in shapes],
                      "p_given": np.round((1 - p) / 3, 4), "p_suggested": p, "quality": 0.1, "row": range(12)}
                     ).to_csv(root / "metrics/label_budget/label_issues.csv", index=False)
        queue = page.load_queue(root / "metrics/label_budget/label_issues.csv", CLASSES, root / "data/store")
        book = page.Labelling(queue, page.default_labels_path(queue.source), "ana")
        ready = threading.Event()
        servers = []
        threading.Thread(target=page.serve, args=(book,), daemon=True,
                         kwargs={"ready": lambda s: (servers.append(s), ready.set())}).start()
        ready.wait(10)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1180,860"):
            options.add_argument(flag)
        browser = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            browser.get(f"http://127.0.0.1:{servers[0].server_address[1]}/")
            time.sleep(1)
            for key in "412a":
                ActionChains(browser).send_keys(key).perform()
                time.sleep(0.8)
            png = browser.get_screenshot_as_png()
        finally:
            browser.quit()
            servers[0].shutdown()
            os.chdir(home)
    shot = Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    with atomic_path(OUT) as tmp:  # a 256-colour palette: half the bytes, the same look
        shot.save(tmp, format="PNG", optimize=True)
    print(f"{OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
