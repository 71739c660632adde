"""Screenshots of the main pages for docs/screenshots/, taken from a running demo (rich data).

    citybrain demo --no-sim --port 8169 --data-dir /tmp/demo &
    python -m tests.web.screenshots http://127.0.0.1:8169

Uses Debian's Chromium (/usr/bin/chromium) through Playwright; never downloads a browser.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

PASSWORD = "CityBrain@2026"

# (file, role, path, viewport, wait-for selector or JS condition, mobile)
SHOTS = [
    ("login", None, "/login", (1440, 900), "#username", False),
    ("ioc", "leader", "/ioc", (1920, 1080), "js:document.body.dataset.ready === '1'", False),
    ("map", "operator", "/map", (1600, 1000), "js:document.getElementById('count-cases').dataset.count !== ''", False),
    ("workbench", "operator", "/work/desk", (1440, 900), "#queue table", False),
    ("inbox", "handler", "/work/inbox", (1440, 900), "#queue table, #queue p", False),
    ("grid-report", "gridworker", "/m/grid", (412, 860), "#report-form", True),
    ("devices", "operator", "/devices", (1440, 900), "#dev-list table", False),
    ("cockpit", "leader", "/cockpit", (1600, 1000), "#ck-rank-dept table", False),
    ("citizen-report", None, "/citizen", (412, 860), "#report-form", True),
    ("citizen-track", None, "/citizen/track", (412, 860), "#track-form", True),
    ("ioc-en", "leader", "/ioc", (1920, 1080), "js:document.body.dataset.ready === '1'", False),
]


def main(base: str) -> None:
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for name, role, path, (w, h), wait, mobile in SHOTS:
            ctx = browser.new_context(viewport={"width": w, "height": h}, is_mobile=mobile, has_touch=mobile,
                                      timezone_id="Asia/Shanghai", locale="zh-CN")
            if name.endswith("-en"):
                ctx.add_cookies([{"name": "lang", "value": "en", "url": base}])
            page = ctx.new_page()
            if role:
                page.goto(base + "/login")
                page.fill("#username", role)
                page.fill("#password", PASSWORD)
                page.press("#password", "Enter")
                page.wait_for_url(lambda u: "/login" not in u)
            page.goto(base + path)
            if wait.startswith("js:"):
                page.wait_for_function("() => " + wait[3:], timeout=60000)
            else:
                page.locator(wait).first.wait_for(timeout=60000)
            if name == "workbench":
                page.locator("#queue tbody tr").first.click()
                page.locator("#detail form.action").first.wait_for()
            if name == "inbox" and page.locator("#queue tbody tr").count():
                page.locator("#queue tbody tr").first.click()
                page.locator("#detail h2").first.wait_for()
            if name == "devices":
                page.locator("#dev-list tbody tr").first.click()
                page.locator("#dev-detail h2").wait_for()
            page.wait_for_timeout(1200)  # charts animate in
            out = Path(SCREENSHOTS) / f"{name}.png"
            page.screenshot(path=str(out))
            print(out)
            ctx.close()
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8169")
