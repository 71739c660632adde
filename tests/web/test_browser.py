"""Browser tests: Playwright drives Debian's Chromium against a real `citybrain demo --no-sim` server.

Every test also asserts (in the `pages` fixture) that no request left 127.0.0.1.
"""

from __future__ import annotations

import re

import pytest

from tests.web.conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


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
