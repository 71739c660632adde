"""Browser-test fixtures: a real `citybrain` server on 127.0.0.1 (a port the system picks) with a demo data folder,
and Debian's Chromium driven by Playwright (never a downloaded browser).

Every page opened through `pages` records its requests; a test fails if any request leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from citybrain import served
from tests.conftest import DEMO_PASSWORD, IN_CI, TEST_SECRET

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def need_chromium() -> None:
    """Skip (fail under CI=true) when Debian's Chromium or the playwright package is missing."""
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"Chromium is not installed at {CHROMIUM}"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing = "the playwright package is not installed (needed to drive Chromium)"
    if missing:
        if IN_CI:
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)


class Server:
    def __init__(self, base: str, data_dir: Path, proc: subprocess.Popen, log: Path):
        self.base = base
        self.data_dir = data_dir
        self.proc = proc
        self.log = log

    def api(self, role: str | None = None) -> httpx.Client:
        """An HTTP client on the server, logged in as a demo role if given."""
        headers = {}
        if role:
            r = httpx.post(self.base + "/api/v1/auth/token", data={"username": role, "password": DEMO_PASSWORD},
                           trust_env=False, timeout=30)
            r.raise_for_status()
            headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        return httpx.Client(base_url=self.base, timeout=30, trust_env=False, headers=headers)


def seed(data_dir: str) -> None:
    """Seed a server's data folder: demo organisations and users, the map, case configuration, demo devices.

    No case history: the browser tests watch the counters move from a known start.
    """
    from citybrain import modules
    from citybrain.app import startup
    from citybrain.config import get_settings
    from citybrain.db import get_db

    assert str(get_settings().data_dir) == data_dir
    db = get_db()
    startup(db)
    for name, fn in (("identity", "seed"), ("geo", "seed"), ("cases", "seed_config"), ("iot", "seed")):
        mod = modules.part(name, "demo")
        if mod is not None and hasattr(mod, fn):
            getattr(mod, fn)(db)
    db.dispose()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[Server]:
    """`citybrain serve` on a free port with its own seeded data folder (SQLite)."""
    need_chromium()
    data_dir = tmp_path_factory.mktemp("web-server")
    port = served.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYBRAIN_")}
    env.update(CITYBRAIN_SECRET_KEY=TEST_SECRET, CITYBRAIN_DEMO_PASSWORD=DEMO_PASSWORD,
               CITYBRAIN_DATA_DIR=str(data_dir), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", f"from tests.web.conftest import seed; seed({str(data_dir)!r})"],
                   cwd=root, env=env, check=True, timeout=300)
    log = data_dir / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from citybrain.cli import main; main()", "serve",
             "--host", "127.0.0.1", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-3000:]}")
            try:
                if httpx.get(base + "/healthz", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Server(base, data_dir, proc, log)
    finally:
        served.terminate(proc, 10)


@pytest.fixture(scope="session")
def chromium(server: Server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class Pages:
    """Opens browser contexts on the server and checks that no request leaves 127.0.0.1."""

    def __init__(self, browser, server: Server):
        self.browser = browser
        self.server = server
        self.requests: list[str] = []
        self.contexts = []
        self.csp_violations: list[str] = []  # console reports of the pages' Content-Security-Policy

    def new(self, role: str | None = None, *, lang: str | None = None, mobile: bool = False,
            viewport: tuple[int, int] = (1440, 900)):
        """A new page (own cookies); logged in through the login form when `role` is given."""
        opts = {"viewport": {"width": viewport[0], "height": viewport[1]}, "locale": "zh-CN",
                "timezone_id": "Asia/Shanghai"}
        if mobile:
            opts.update(viewport={"width": 412, "height": 860}, is_mobile=True, has_touch=True,
                        geolocation={"latitude": 22.7712, "longitude": 113.5412}, permissions=["geolocation"])
        ctx = self.browser.new_context(**opts)
        ctx.set_default_timeout(15000)
        self.contexts.append(ctx)
        ctx.on("request", lambda req: self.requests.append(req.url))

        def _route(route):
            host = urlparse(route.request.url).hostname
            if host not in (None, "127.0.0.1") and not route.request.url.startswith(("data:", "blob:")):
                route.abort()
            else:
                route.continue_()

        ctx.route("**/*", _route)
        if lang:
            ctx.add_cookies([{"name": "lang", "value": lang, "url": self.server.base}])
        page = ctx.new_page()
        page.on("console", lambda msg: self.csp_violations.append(msg.text)
                if "Content Security Policy" in msg.text else None)
        if role:
            self.login(page, role)
        return page

    def login(self, page, role: str, password: str = DEMO_PASSWORD, next_path: str = "/") -> None:
        page.goto(f"{self.server.base}/login?next={next_path}")
        page.get_by_label(re.compile("用户名|Username")).fill(role)
        page.get_by_label(re.compile("密码|Password")).fill(password)
        page.get_by_label(re.compile("密码|Password")).press("Enter")
        page.wait_for_url(lambda url: "/login" not in url)

    def url(self, path: str) -> str:
        return self.server.base + path

    def external(self) -> list[str]:
        """Requests that went (or tried to go) anywhere but 127.0.0.1."""
        bad = []
        for u in self.requests:
            p = urlparse(u)
            if p.scheme in ("data", "blob", "about"):
                continue
            if p.hostname != "127.0.0.1":
                bad.append(u)
        return bad

    def close(self) -> None:
        for ctx in self.contexts:
            ctx.close()


@pytest.fixture
def pages(chromium, server: Server) -> Iterator[Pages]:
    """Browser pages on the test server; asserts after the test that no request left 127.0.0.1."""
    p = Pages(chromium, server)
    yield p
    p.close()
    assert p.requests, "no request was recorded"
    assert p.external() == [], f"requests left 127.0.0.1: {p.external()[:5]}"
    assert p.csp_violations == [], f"the pages broke their Content-Security-Policy: {p.csp_violations[:3]}"


def screenshot(page, name: str) -> None:
    """Screenshot a main page: into docs/screenshots/ when CITYBRAIN_SCREENSHOTS=1, else a temporary folder."""
    import tempfile

    folder = SCREENSHOTS if os.environ.get("CITYBRAIN_SCREENSHOTS") == "1" else \
        Path(tempfile.gettempdir()) / "citybrain-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))
