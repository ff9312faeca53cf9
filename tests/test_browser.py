"""The drawing page in a real browser: headless Chromium (Debian's package, /usr/bin/chromium or
$CHROMIUM) driven by Playwright, against the real server (`python -m digits.server`). Draws a 1 and a
0 with mouse events and checks what the page shows, then sends a correction through the page's
"Wrong?" control and finds it in the server's feedback store; saves a screenshot in the test's tmp folder
(and docs/drawing-page.png, the one docs/recognize.md shows, when that file is missing).

No Chromium is a failure, not a skip: `make test` installs it (apt-get install chromium) when missing."""
import math
import re
import shutil

import pytest

from conftest import ROOT
from digits import feedback

DOCS_SCREENSHOT = ROOT / "docs" / "drawing-page.png"


def draw(page, points):
    """One stroke through `points` (x, y in the canvas' own pixels), with the mouse."""
    box = page.locator("#pad").bounding_box()
    at = lambda x, y: (box["x"] + x * box["width"] / 280, box["y"] + y * box["height"] / 280)
    page.mouse.move(*at(*points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*at(*point), steps=2)
    page.mouse.up()


def answer(page) -> dict:
    page.wait_for_function("document.body.dataset.state === 'done' || document.body.dataset.state === 'error'",
                           timeout=30_000)
    return {"state": page.evaluate("document.body.dataset.state"),
            "digit": page.inner_text("#digit"), "message": page.inner_text("#message"),
            "bars": [page.locator(f"#bar-{d} .value").inner_text() for d in range(10)],
            "seen": page.locator("#preprocessed").is_visible()}


@pytest.mark.integration
def test_drawing_a_1_and_a_0_on_the_page(browser, server_url, feedback_db, tmp_path):
    page = browser.new_page(viewport={"width": 820, "height": 620})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server_url + "/")
    assert page.title() == "Draw a digit" and page.inner_text("#digit") == "\u2013"

    draw(page, [(140, 45), (140, 140), (140, 235)])                         # a vertical stroke
    one = answer(page)
    assert one["state"] == "done" and one["digit"] == "1", one
    assert one["seen"] and max(one["bars"], key=lambda v: float(v.rstrip("%"))) == one["bars"][1]

    page.click("#clear")
    assert page.inner_text("#digit") == "\u2013" and page.evaluate("document.body.dataset.state") == "idle"
    loop = [(140 + 62 * math.sin(t), 140 - 92 * math.cos(t)) for t in [k * 2 * math.pi / 48 for k in range(51)]]
    draw(page, loop)                                                         # a closed loop
    zero = answer(page)
    assert zero["state"] == "done" and zero["digit"] == "0", zero
    fill, track = page.locator("#bar-0 .fill").bounding_box(), page.locator("#bar-0 .track").bounding_box()
    share = float(zero["bars"][0].rstrip("%")) / 100
    assert abs(fill["width"] - share * track["width"]) <= 2                # the bar is drawn to scale

    page.select_option("#label", "6")                                       # "Wrong? This is a 6"
    page.click("#send")
    page.wait_for_function("['sent', 'error'].includes(document.body.dataset.feedback)", timeout=30_000)
    sent = re.fullmatch(r"Thanks: saved as #(\d+) for review", page.inner_text("#feedback-message"))
    assert sent, page.inner_text("#feedback-message")
    item = feedback.get(feedback.open_store(feedback_db), int(sent[1]))
    assert (item.label, item.predicted, item.source, item.client) == (6, 0, "page", "127.0.0.1")

    shot = tmp_path / "drawing-page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if not DOCS_SCREENSHOT.exists():
        DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copy(shot, DOCS_SCREENSHOT)
    assert all(url.startswith(server_url) for url in requests), requests     # works offline
    page.close()
