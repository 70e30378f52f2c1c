"""The web review page in a real browser: Debian's chromium driven by Playwright against `taxonomist serve`.

Signs in with a reviewer key, reviews three records by keyboard only (Enter
confirms, 2 then Enter corrects to the second alternative, / searches a category),
undoes the last one with U, then checks the label journal, the reopened review item,
the next classification through the API, and that the server's log never held
record text. Saves screenshots of the review page and the dashboard to $TAXONOMIST_SCREENSHOTS (docs/img).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from taxonomist.store import Store

from .test_api import build_store

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots for the docs go where $TAXONOMIST_SCREENSHOTS points (e.g. docs/img), not on every run:
# a test run must not leave the checkout changed.
IMG = Path(os.environ.get("TAXONOMIST_SCREENSHOTS") or tempfile.mkdtemp(prefix="taxonomist-shots-"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"taxonomist serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("taxonomist serve did not become ready")


@pytest.fixture
def server(tmp_path: Path):
    built = build_store(tmp_path)
    port = _free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "taxonomist", "serve", "--db", str(built["db"]), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        yield {**built, "url": url, "log": tmp_path / "serve.log"}
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def _api(url: str, path: str, key: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"X-API-Key": key, "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium "
                    "(apt-get install -y chromium; .ci/run installs it)")
def test_review_three_records_by_keyboard_then_undo(server: dict) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url, keys = server["url"], server["keys"]
    queue = _api(url, "/v1/review/queue?limit=10", keys["reviewer"])["items"]
    first, second, third = (i["record_id"] for i in queue[:3])
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 820})
        page.goto(url + "/ui/review/next")
        assert page.url.endswith("/ui/login")
        page.fill("#key", keys["reviewer"])
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/ui/review/{first}")
        cookie = next(c for c in page.context.cookies() if c["name"] == "tx_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMG / "review-page.png"))

        page.keyboard.press("Enter")  # 1: confirm the suggestion
        page.wait_for_url(f"**/ui/review/{second}")
        alt2 = page.locator(".alt").nth(1).get_attribute("data-code")
        page.keyboard.press("2")  # 2: pick the second alternative, Enter corrects
        page.keyboard.press("Enter")
        page.wait_for_url(f"**/ui/review/{third}")
        page.keyboard.press("/")  # 3: search all categories, pick J3
        page.keyboard.type("J3")
        page.keyboard.press("Enter")
        assert page.inner_text("#chosen") == "J3"
        page.keyboard.press("Enter")
        page.wait_for_url(lambda u: not u.endswith(f"/ui/review/{third}"))
        page.keyboard.press("U")  # undo the third: back on it
        page.wait_for_url(f"**/ui/review/{third}")

        page.goto(url + "/ui/dashboard")
        assert page.locator("svg").count() >= 4
        page.screenshot(path=str(IMG / "dashboard.png"), full_page=True)
        browser.close()

    with Store.open(server["db"]) as store:
        h1, h2, h3 = (store.label_history(r) for r in (first, second, third))
        assert h1[-1]["is_current"] and h1[-1]["category"] == queue[0]["suggested"] and h1[-1]["who"] == "reviewer-1"
        assert h1[-1]["reason"].startswith("review:confirm")
        assert h2[-1]["is_current"] and h2[-1]["category"] == alt2
        assert h2[-1]["reason"].startswith("review:correct" if alt2 != queue[1]["suggested"] else "review:confirm")
        assert h3 and h3[-1]["category"] == "J3" and not h3[-1]["is_current"]  # written, then reverted: in the journal
        assert store.current_labels([third]) == {}
        open_ids = [i["record_id"] for i in store.review_queue()]
        assert third in open_ids and first not in open_ids and second not in open_ids
        text = next(r.text for r in store.records([second]))
    nxt = _api(url, "/v1/classify", keys["classifier"], {"records": [{"id": "NEXT-1", "text": text}]})["decisions"][0]
    assert nxt["model_id"] and nxt["taxonomy_version"]
    trail = _api(url, "/v1/decisions/NEXT-1", keys["reviewer"])
    assert trail["decisions"][-1]["category"] == nxt["category"]
    log = server["log"].read_text(errors="replace")
    assert "POST /v1/classify" in log and text[:40] not in log  # access log: paths, never record text
