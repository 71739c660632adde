"""Pages and the IOC summary through the HTTP API (both database backends)."""

from __future__ import annotations

import re
from pathlib import Path

from citybrain import modules
from tests.conftest import DEMO_PASSWORD

STATIC = Path(modules.PACKAGE_DIR) / "web" / "static"


def _login_cookie(client, role: str) -> None:
    r = client.post("/api/v1/auth/token", data={"username": role, "password": DEMO_PASSWORD})
    assert r.status_code == 200
    assert client.cookies.get("cb_session")


def test_pages_send_anonymous_users_to_login(client):
    for path in ("/ioc", "/map", "/work/desk", "/work/inbox", "/m/grid", "/devices", "/cockpit", "/"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/login"), path


def test_citizen_pages_need_no_login(client):
    for path in ("/citizen", "/citizen/track"):
        r = client.get(path)
        assert r.status_code == 200
        assert 'lang="zh-CN"' in r.text


def test_stale_cookie_counts_as_logged_out(client):
    client.cookies.set("cb_session", "cbt_not-a-real-token")
    r = client.get("/ioc", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/ioc"


def test_role_without_right_cannot_open_workbench(client):
    _login_cookie(client, "gridworker")
    r = client.get("/work/desk")
    assert r.status_code == 403
    assert "case.accept" in r.text and "没有权限" in r.text
    # the menu does not offer it either, but does offer the grid worker's own page
    assert 'href="/work/desk"' not in r.text
    assert 'href="/m/grid"' in r.text
    assert client.get("/m/grid").status_code == 200


def test_denied_page_is_audited(client, as_role):
    _login_cookie(client, "citizen")
    assert client.get("/ioc").status_code == 403
    client.cookies.clear()
    rows = client.get("/api/v1/audit", params={"action": "ioc.view"}, headers=as_role("auditor")).json()
    items = rows["items"] if isinstance(rows, dict) else rows
    assert any(r.get("outcome") == "denied" for r in items)


def test_navigation_follows_permissions(client):
    _login_cookie(client, "operator")
    html = client.get("/work/desk").text
    nav = re.search(r"<nav.*?</nav>", html, re.S).group(0)
    for href in ("/ioc", "/map", "/work/desk", "/devices", "/cockpit"):
        assert f'href="{href}"' in nav
    assert 'href="/work/inbox"' not in nav  # operators do not handle cases
    client.cookies.clear()
    _login_cookie(client, "handler")
    nav = re.search(r"<nav.*?</nav>", client.get("/work/inbox").text, re.S).group(0)
    assert 'href="/work/inbox"' in nav and 'href="/work/desk"' not in nav and 'href="/ioc"' not in nav


def test_home_sends_each_role_to_its_page(client):
    expected = {"operator": "/work/desk", "handler": "/work/inbox", "gridworker": "/m/grid", "leader": "/ioc",
                "citizen": "/citizen"}
    for role, target in expected.items():
        client.cookies.clear()
        _login_cookie(client, role)
        r = client.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == target, role


def test_language_switch_persists_in_cookie(client):
    _login_cookie(client, "operator")
    assert "受理派遣工作台" in client.get("/work/desk").text
    r = client.get("/lang/en", params={"next": "/work/desk"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/work/desk"
    assert client.cookies.get("lang") == "en"
    html = client.get("/work/desk").text
    assert 'lang="en"' in html and "Intake and dispatch workbench" in html
    # API errors follow the same choice
    assert client.get("/api/v1/no-such").json()["title"] == "Resource not found"
    client.get("/lang/zh-CN")
    assert 'lang="zh-CN"' in client.get("/work/desk").text


def test_language_switch_refuses_foreign_redirects(client):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil"):
        r = client.get("/lang/en", params={"next": target}, follow_redirects=False)
        assert r.headers["location"] == "/", target
    r = client.get("/login", params={"next": "//evil.example"})
    assert 'data-next="/"' in r.text


def test_logout_form_revokes_the_session(client):
    _login_cookie(client, "operator")
    token = client.cookies.get("cb_session")
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    client.cookies.clear()
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401


def test_ioc_summary_needs_permission(client, as_role):
    assert client.get("/api/v1/ioc/summary").status_code == 401
    r = client.get("/api/v1/ioc/summary", headers=as_role("gridworker"))
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")


def test_ioc_summary_marks_missing_modules_not_connected(client, as_role):
    body = client.get("/api/v1/ioc/summary", headers=as_role("leader")).json()
    for part in ("cases", "iot", "data"):
        installed = modules.part(part, "service") is not None and hasattr(modules.part(part, "service"), "ioc_summary")
        assert body[part]["connected"] is installed, part
        if not installed:
            assert set(body[part]) == {"connected"}  # no invented numbers


def test_login_form_fields_have_labels(client):
    html = client.get("/login").text
    for field in ("username", "password"):
        assert re.search(rf'<label for="{field}">', html)
        assert re.search(rf'<input[^>]+id="{field}"[^>]+required', html)


def test_pages_use_only_vendored_assets(client):
    _login_cookie(client, "operator")
    for path in ("/ioc", "/map", "/work/desk", "/devices", "/cockpit", "/citizen", "/login"):
        html = client.get(path).text
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not re.match(r"(https?:)?//", url), (path, url)
            if url.startswith("/static/"):
                assert client.get(url).status_code == 200, url


def test_pages_send_a_content_security_policy_and_no_inline_script(client):
    _login_cookie(client, "operator")
    for path in ("/ioc", "/map", "/work/desk", "/work/inbox", "/devices", "/cockpit", "/m/grid", "/citizen",
                 "/citizen/track", "/login"):
        r = client.get(path)
        csp = r.headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "script-src 'self';" in csp, path
        assert "img-src 'self' data: blob:" in csp and "object-src 'none'" in csp, path
        # every script is a file of this server (the page settings are a JSON data block, not a script)
        for tag in re.findall(r"<script\b[^>]*>", r.text):
            assert 'src="/static/' in tag or 'type="application/json"' in tag, (path, tag)
        assert not re.search(r"\son[a-z]+=", r.text), path  # no inline event handlers


def test_csp_admits_the_configured_tile_server():
    from citybrain.web.api import content_security_policy

    csp = content_security_policy("https://t{s}.tianditu.gov.cn/DataServer?T=vec_w&x={x}&y={y}&l={z}")
    assert "img-src 'self' data: blob: https://*.tianditu.gov.cn;" in csp
    assert "img-src 'self' data: blob: http://10.1.2.3:8080;" in content_security_policy("http://10.1.2.3:8080/{z}/{x}/{y}.png")


def test_vendored_libraries_carry_their_licences():
    vendor = STATIC / "vendor"
    for lib in ("echarts", "leaflet", "swagger-ui"):
        assert (vendor / lib / "LICENSE").stat().st_size > 500, lib


def test_ioc_page_weighs_under_3_mb(client):
    _login_cookie(client, "leader")
    html = client.get("/ioc").text
    total = len(html.encode())
    for url in set(re.findall(r'(?:src|href)="(/static/[^"]+)"', html)):
        total += len(client.get(url).content)
    assert total < 3 * 1024 * 1024, total
