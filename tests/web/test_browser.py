"""Browser tests: Playwright drives Debian's Chromium against a real `citybrain demo --no-sim` server.

Every test also asserts (in the `pages` fixture) that no request left 127.0.0.1.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.web.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def needs(module: str):
    """Skip a test whose pages need a module this build does not include (merged progressively)."""
    from citybrain import modules

    return pytest.mark.skipif(modules.part(module, "service") is None,
                              reason=f"needs the {module} module, not installed in this build")


def test_login_form_and_keyboard_only_login(pages):
    page = pages.new()
    page.goto(pages.url("/ioc"))
    assert "/login" in page.url  # not logged in: sent to the login form, which returns here
    page.keyboard.press("Tab")  # skip link
    page.locator("#username").focus()
    page.keyboard.type("leader")
    page.keyboard.press("Tab")
    page.keyboard.type("wrong-password")
    page.keyboard.press("Enter")
    err = page.locator("#login-error")
    err.wait_for(state="visible")
    assert "登录失败" in err.inner_text()
    page.get_by_label("密码").fill("CityBrain@2026")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/ioc$"))
    screenshot_login = pages.new()
    screenshot_login.goto(pages.url("/login"))
    screenshot(screenshot_login, "login")


def test_role_without_right_cannot_open_workbench(pages):
    page = pages.new("gridworker")
    assert page.url.endswith("/m/grid")
    nav = page.get_by_role("navigation")
    assert nav.get_by_role("link", name="受理派遣").count() == 0
    resp = page.goto(pages.url("/work/desk"))
    assert resp.status == 403
    assert "没有权限" in page.locator("#forbidden").inner_text()


def test_language_switch_persists(pages):
    page = pages.new("operator")
    page.goto(pages.url("/map"))
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.locator("h1").inner_text() == "城市运行一张图"
    page.locator("#lang-switch").click()
    page.wait_for_load_state()
    assert page.url.endswith("/map")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("h1").inner_text() == "One map"
    page.goto(pages.url("/work/desk"))  # other pages and later visits keep English
    assert page.locator("h1").inner_text() == "Intake and dispatch workbench"
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login"))
    assert page.get_by_label("Username").count() == 1
    page.locator("#lang-switch").click()
    page.wait_for_load_state()
    assert page.get_by_label("用户名").count() == 1


def test_case_photos_show_only_this_servers_files(pages):
    page = pages.new("operator")
    assert page.url.endswith("/work/desk")
    shown = page.evaluate("""() => {
        const box = CB.photoList(["//203.0.113.7/track.png", "/\\\\203.0.113.7/x.png", "http://203.0.113.7/a.png",
                                  "/api/v1/attachments/" + "0".repeat(64)]);
        return {imgs: Array.from(box.querySelectorAll("img")).map(i => i.getAttribute("src")),
                text: box.querySelectorAll("span.muted").length};
    }""")
    assert shown == {"imgs": ["/api/v1/attachments/" + "0" * 64], "text": 3}


def test_alarm_severity_colours_follow_the_national_convention(pages):
    page = pages.new("operator")
    page.goto(pages.url("/map"))
    legend = page.locator("#map-legend")
    colours = {}
    for name in ("特别严重", "严重", "较重", "一般"):
        swatch = legend.locator("span", has_text=re.compile(f"活动告警 {name}$")).locator("i")
        colours[name] = swatch.evaluate("e => getComputedStyle(e).backgroundColor")
    # 特别严重 red, 严重 orange, 较重 yellow, 一般 blue (docs/iot.md: 4 特别严重 … 1 一般)
    assert colours == {"特别严重": "rgb(215, 38, 61)", "严重": "rgb(245, 124, 0)", "较重": "rgb(242, 195, 0)",
                       "一般": "rgb(31, 111, 209)"}


# --- the closed loop: grid worker -> operator -> handler -> grid worker -> operator, watched on the IOC -----------

def _png(width: int = 240, height: int = 160) -> bytes:
    """A small PNG photo stand-in (a street-coloured gradient)."""
    import struct
    import zlib

    rows = b"".join(b"\x00" + b"".join(bytes((min(255, 60 + x // 2), min(255, 90 + y), 80)) for x in range(width))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _get(server, role: str, path: str, **params):
    """GET a JSON API as a demo role (outside the browser)."""
    with server.api(role) as c:
        r = c.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


def _community_point(server, code: str) -> tuple[float, float]:
    """A point inside a community (so the case falls in that community's grid worker's area)."""
    from shapely.geometry import shape

    feat = _get(server, "operator", f"/api/v1/geo/areas/{code}")
    p = shape(feat["geometry"]).representative_point()
    return p.x, p.y


def _kpi(page, name: str) -> int:
    v = page.locator(f"#kpi-{name} .v")
    v.wait_for()
    page.wait_for_function(f"() => document.querySelector('#kpi-{name} .v').dataset.value !== ''")
    return int(float(v.get_attribute("data-value")))


def _ioc_state(pages) -> tuple[int, int, int, object]:
    page = pages.new("leader", viewport=(1920, 1080))
    page.goto(pages.url("/ioc"))
    page.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30000)
    today, open_, = _kpi(page, "cases_today"), _kpi(page, "cases_open")
    cases_on_map = int(page.locator("#ioc-legend [data-layer=cases]").get_attribute("data-count"))
    return today, open_, cases_on_map, page


def _open_case(page, tab: str, ticket: str):
    page.locator(f"#tab-{tab}").click()
    row = page.locator(f"#queue tr[data-ticket='{ticket}']")
    row.wait_for()
    row.focus()
    page.keyboard.press("Enter")  # rows are keyboard-selectable
    page.locator("#detail form.action").first.wait_for()


@needs("cases")
def test_closed_loop_from_grid_report_to_closure(pages, server, tmp_path):
    from tests.web.conftest import screenshot

    photo = tmp_path / "scene.png"
    photo.write_bytes(_png())
    lon, lat = _community_point(server, "440115001001")
    today0, open0, map0, screen = _ioc_state(pages)  # a big screen left open through the whole loop

    # 1. the grid worker reports with category, photo and GPS (phone-sized browser)
    grid = pages.new("gridworker", mobile=True)
    grid.context.set_geolocation({"latitude": lat, "longitude": lon})
    assert grid.url.endswith("/m/grid")
    grid.get_by_label("问题类别").select_option("06010")
    grid.get_by_label("问题描述").fill("金洲社区路口暴露垃圾一堆，需清运")
    grid.get_by_label("现场照片").set_input_files(str(photo))
    grid.get_by_label("地址").fill("金洲社区金岭北路口")
    grid.get_by_role("button", name="使用当前位置").click()
    grid.wait_for_function("() => document.getElementById('r-lat').value !== ''")
    screenshot(grid, "grid-report")
    grid.get_by_role("button", name="上报问题").click()
    ticket = grid.locator("#r-ticket").inner_text(timeout=15000)
    assert re.fullmatch(r"\d{10,}", ticket), ticket
    # the open big screen hears of it over the live feed (SSE) without reloading
    screen.locator("#feed li[data-topic='cases.case.created']", has_text=ticket).wait_for(timeout=20000)
    screen.wait_for_function(f"() => Number(document.querySelector('#kpi-cases_today .v').dataset.value) === {today0 + 1}",
                             timeout=20000)
    today1, open1, map1, ioc = _ioc_state(pages)
    assert (today1, open1, map1) == (today0 + 1, open0 + 1, map0 + 1)  # counted and on the map
    screenshot(ioc, "ioc")

    # 2. the operator files it and dispatches it to the suggested department
    desk = pages.new("operator")
    assert desk.url.endswith("/work/desk")
    _open_case(desk, "new", ticket)
    detail = desk.locator("#detail")
    assert detail.locator(".photos img").count() >= 1  # the grid worker's photo is shown
    desk.wait_for_function("() => { const i = document.querySelector('#detail .photos img'); return i.complete && i.naturalWidth > 0; }")
    file_form = detail.locator("form[data-action=file]")
    file_form.wait_for()
    desk.wait_for_function("() => document.querySelector('form[data-action=file]').dataset.suggested !== undefined")
    suggested = file_form.get_attribute("data-suggested")
    assert suggested, "no department suggested for 暴露垃圾"
    file_form.get_by_label("责任部门").select_option(suggested)
    file_form.get_by_label(re.compile("说明")).fill("属实，立案并派城管")
    screenshot(desk, "workbench")
    file_form.get_by_role("button", name="立案").click()
    desk.locator("#detail").get_by_text("暂无数据").wait_for()
    case = _get(server, "operator", "/api/v1/cases", q=ticket)["items"][0]
    assert case["status"] == "dispatched" and case["dept_org_id"] == int(suggested)

    # 3. the department handler signs for it and reports it handled with a photo
    inbox = pages.new("handler")
    assert inbox.url.endswith("/work/inbox")
    _open_case(inbox, "todo", ticket)
    inbox.locator("form[data-action=accept]").get_by_role("button", name="签收").click()
    inbox.locator("#detail").get_by_text("暂无数据").wait_for()
    _open_case(inbox, "doing", ticket)
    handle = inbox.locator("form[data-action=handle]")
    handle.get_by_label("现场照片").set_input_files(str(photo))
    handle.get_by_label("说明").fill("已清运完毕，现场恢复整洁")
    screenshot(inbox, "inbox")
    handle.get_by_role("button", name="处置反馈").click()
    inbox.locator("#detail").get_by_text("暂无数据").wait_for()

    # 4. the grid worker verifies on site
    grid.locator("#tab-verify").click()
    row = grid.locator(f"#verify-list tr[data-ticket='{ticket}']")
    row.click()
    verify = grid.locator("form[data-action=verify]")
    verify.get_by_label("现场照片").set_input_files(str(photo))
    verify.get_by_role("button", name="核查通过").click()
    grid.locator(f"#verify-list tr[data-ticket='{ticket}']").wait_for(state="detached")

    # 5. the operator closes it
    _open_case(desk, "close", ticket)
    desk.locator("form[data-action=close]").get_by_role("button", name="结案").click()
    desk.locator("#detail").get_by_text("暂无数据").wait_for()
    full = _get(server, "operator", f"/api/v1/cases/{case['id']}")
    assert full["status"] == "closed"
    actions = [e["action"] for e in full["events"]]
    assert actions[:1] == ["report"] and {"file", "dispatch", "accept", "handle", "verify", "close"} <= set(actions)
    handled = next(e for e in full["events"] if e["action"] == "handle")
    assert handled["attachments"] and handled["attachments"][0].startswith("/api/v1/attachments/")

    # 6. closed: still counted today, no longer open, gone from the open-case map layer
    today2, open2, map2, _ = _ioc_state(pages)
    assert (today2, open2, map2) == (today0 + 1, open0, map0)


@needs("cases")
def test_citizen_reports_tracks_and_rates_without_login(pages, server):
    from tests.web.conftest import screenshot

    page = pages.new(mobile=True)
    page.goto(pages.url("/citizen"))
    assert page.get_by_role("button", name="退出").count() == 0
    # the district and its six towns are drawn from the public outline (no login)
    page.wait_for_function("() => Number(document.getElementById('r-map').dataset.outline || 0) === 7")
    assert page.locator("#r-map path.leaflet-interactive, #r-map canvas").count() >= 1
    page.get_by_label("问题类别").select_option("06010")
    page.get_by_label("问题描述").fill("小区门口垃圾桶满溢多日无人清运")
    page.get_by_label("地址").fill("南沙街道金洲社区金沙路12号")
    page.get_by_label("联系电话").fill("13912345678")
    page.locator("#r-map").click()  # tap the map to place the report
    page.wait_for_function("() => document.getElementById('r-lon').value !== ''")
    screenshot(page, "citizen-report")
    page.get_by_role("button", name="上报问题").focus()
    page.keyboard.press("Enter")  # the form works from the keyboard
    ticket = page.locator("#r-ticket").inner_text(timeout=15000)
    page.get_by_role("link", name="查询进度").click()
    page.wait_for_url(re.compile(r"/citizen/track\?ticket="))
    assert page.get_by_label("工单号").input_value() == ticket

    # a wrong phone number reveals nothing
    page.get_by_label("联系电话").fill("13900000000")
    page.get_by_label("联系电话").press("Enter")
    page.locator("#t-error").wait_for(state="visible")
    assert page.locator("#t-result").is_hidden()

    page.get_by_label("联系电话").fill("13912345678")
    page.get_by_label("联系电话").press("Enter")
    result = page.locator("#t-result")
    result.get_by_text("待受理").first.wait_for()
    assert page.locator("#rate-form").is_hidden()  # not closed yet: nothing to rate

    # the centre answers it directly; the citizen sees the reply and rates it
    case = _get(server, "operator", "/api/v1/cases", q=ticket)["items"][0]
    with server.api("operator") as c:
        r = c.post(f"/api/v1/cases/{case['id']}/actions/answer",
                   json={"comment": "已安排环卫清运", "public_reply": "已安排环卫清运，感谢反映"})
        assert r.status_code == 200, r.text
    page.get_by_role("button", name="查询进度").click()
    result.get_by_text("感谢反映").wait_for()
    page.locator("#rate-form").wait_for(state="visible")
    page.get_by_label("满意", exact=True).check()
    page.get_by_label("评价意见").fill("处理很快")
    screenshot(page, "citizen-track")
    page.get_by_role("button", name="评价处理结果").click()
    page.locator("#t-rated").wait_for()
    assert _get(server, "operator", f"/api/v1/cases/{case['id']}")["rating"] == "satisfied"


@needs("iot")
def test_device_console_readings_alarm_ack_and_live_feed(pages, server):
    import json

    from tests.web.conftest import screenshot

    creds = json.loads((server.data_dir / "iot-demo-credentials.json").read_text())
    dev = next(d for d in creds["devices"] if d["model"] == "water_level")
    ioc = pages.new("operator", viewport=(1920, 1080))
    ioc.goto(pages.url("/ioc"))
    ioc.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30000)
    ioc.wait_for_function("() => document.getElementById('live-state').dataset.live === '1'")
    alarms0 = _kpi(ioc, "alarms")

    headers = {"X-Device-Code": dev["code"], "X-Device-Secret": dev["secret"]}
    with server.api() as c:
        now = time.time()
        for i, level in enumerate((1.2, 1.5, 2.6)):
            r = c.post("/api/v1/iot/telemetry", headers=headers,
                       json={"ts": round(now - 2 + i * 0.5, 3), "values": {"water_level": level, "battery": 88}})
            assert r.status_code == 200, r.text

    # the IOC's live feed shows the alarm as it is raised (SSE), and the counter follows
    ioc.locator("#feed li[data-topic='iot.alarm.raised']").first.wait_for(timeout=20000)
    ioc.wait_for_function(f"() => Number(document.querySelector('#kpi-alarms .v').dataset.value) > {alarms0}",
                          timeout=20000)

    page = pages.new("operator")
    page.goto(pages.url(f"/devices?code={dev['code']}"))
    detail = page.locator("#dev-detail")
    detail.get_by_text(dev["code"]).first.wait_for()
    page.wait_for_function("() => Number((document.getElementById('dev-chart') || {dataset: {}}).dataset.points || 0) >= 3")
    row = detail.locator("tr[data-status=active]").first
    row.wait_for()
    screenshot(page, "devices")
    row.get_by_role("button", name="确认告警").click()
    detail.locator("tr[data-status=acknowledged]").first.wait_for()
    alarms = _get(server, "operator", "/api/v1/iot/alarms", device_code=dev["code"])["items"]
    assert alarms and alarms[0]["status"] == "acknowledged" and alarms[0]["acked_by"]


@needs("cases")
def test_one_map_filters_on_the_server_and_shows_clustered_hotspots(pages, server):
    """Three 暴露垃圾 cases within ~100 m and a 井盖 case; the sweep's clustering flags a hotspot. The one map
    and the IOC draw it; picking a category on the one map asks the server (category_code=...) and shows
    exactly what the server answered for that filter."""
    from urllib.parse import parse_qs, urlparse

    with server.api("operator") as c:
        for i, (code, title) in enumerate([("06010", "暴露垃圾")] * 3 + [("01002", "井盖破损")]):
            r = c.post("/api/v1/cases", json={"source": "superior", "title": title, "category_code": code,
                                              "lon": 113.6010 + i * 0.0004, "lat": 22.8310 + (i % 2) * 0.0003})
            assert r.status_code == 201, r.text
        assert c.post("/api/v1/cases/sweep").status_code == 200
        flagged = c.get("/api/v1/cases/hotspots.geojson").json()["features"]
    assert any(f["properties"]["category_code"] == "06010" and f["properties"]["count"] >= 3 for f in flagged)

    page = pages.new("operator", viewport=(1600, 1000))
    page.goto(pages.url("/map"))
    page.wait_for_function("() => document.getElementById('count-cases').dataset.count !== ''"
                           " && document.getElementById('count-hotspots').dataset.count !== ''")
    assert int(page.locator("#count-hotspots").get_attribute("data-count")) >= 1

    def filtered(category: str) -> tuple[int, dict]:
        n_before = len(pages.requests)
        with page.expect_response(lambda r: "/api/v1/cases.geojson" in r.url
                                  and parse_qs(urlparse(r.url).query).get("category_code") == [category]) as resp:
            page.select_option("#f-category", category)
        query = {k: v[0] for k, v in parse_qs(urlparse(resp.value.url).query).items()}
        page.wait_for_function(f"() => document.getElementById('count-cases').dataset.count === "
                               f"String({len(resp.value.json()['features'])})")
        assert len(pages.requests) > n_before
        return int(page.locator("#count-cases").get_attribute("data-count")), query

    shown, query = filtered("01002")
    assert query["status"] == "open" and "bbox" in query
    with server.api("operator") as c:
        answer = c.get("/api/v1/cases.geojson", params=query).json()["features"]
    assert shown == len(answer) >= 1 and {f["properties"]["category_code"] for f in answer} == {"01002"}
    # hotspots follow the category filter too (no 井盖 cluster here)
    page.wait_for_function("() => document.getElementById('count-hotspots').dataset.count === '0'")

    ioc = pages.new("leader", lang="en", viewport=(1920, 1080))
    ioc.goto(pages.url("/ioc"))
    ioc.wait_for_function("() => document.body.dataset.ready === '1'", timeout=30000)
    assert int(ioc.locator("#ioc-legend [data-layer=hotspots]").get_attribute("data-count")) >= 1
    # the rankings name departments and towns in English under the English switch
    for table in ("#rank-dept", "#rank-town"):
        text = ioc.locator(f"{table} tbody").inner_text()
        assert text.strip() and not re.search(r"[\u4e00-\u9fff]", text), text
    assert "Urban Management" in ioc.locator("#rank-dept tbody").inner_text()


def test_screenshots_of_map_and_cockpit(pages):
    from tests.web.conftest import screenshot

    page = pages.new("operator", viewport=(1600, 1000))
    page.goto(pages.url("/map"))
    page.wait_for_function("() => document.getElementById('count-district').dataset.count !== ''")
    screenshot(page, "map")
    leader = pages.new("leader", viewport=(1600, 1000))
    leader.goto(pages.url("/cockpit"))
    leader.locator("#ck-rank-dept table, #ck-rank-dept p").first.wait_for()
    screenshot(leader, "cockpit")


def test_api_docs_render_within_the_content_security_policy(pages):
    """/docs (Swagger UI, vendored) lists the operations with the pages' CSP in force: no inline script, nothing
    from another site (the `pages` fixture fails the test on a CSP report in the console or an outside request)."""
    page = pages.new()
    resp = page.goto(pages.url("/docs"))
    assert "script-src 'self';" in resp.headers["content-security-policy"]
    page.locator(".opblock").first.wait_for()
    assert page.locator(".opblock").count() > 20
    token = page.locator(".opblock-summary-path[data-path='/api/v1/auth/token']")
    assert token.count() == 1 and token.is_visible()
    assert page.locator(".swagger-ui .info .title").inner_text().startswith("CityBrain")

