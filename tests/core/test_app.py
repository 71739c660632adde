from tests.conftest import login


def test_healthz_checks_database(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_unknown_route_is_problem_json_in_chinese_by_default(client):
    r = client.get("/api/v1/no-such-thing")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == 404 and body["title"] == "未找到该资源"
    assert body["message_en"] and body["message_zh"]


def test_problem_language_follows_accept_language(client):
    r = client.get("/api/v1/me", headers={"Accept-Language": "en-US"})
    assert r.status_code == 401
    assert r.json()["detail"] == "Authentication required"


def test_validation_error_names_fields(client, as_role):
    r = client.post("/api/v1/orgs", json={"code": "", "type": "department"}, headers=as_role("sysadmin"))
    assert r.status_code == 422
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"code", "name"} <= fields


def test_docs_served_from_vendored_assets(client):
    r = client.get("/docs")
    assert r.status_code == 200
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in r.text
    assert "cdn" not in r.text.lower()
    assert client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/vendor/swagger-ui/swagger-ui.css").status_code == 200


def test_docs_page_sends_the_pages_content_security_policy(client):
    """/docs sends the pages' CSP (scripts from this server only, no inline scripts) and works within it: Swagger
    UI is started by a script file, not an inline script, and asks no other site (the validator badge is off)."""
    import re

    from citybrain.web.api import content_security_policy

    r = client.get("/docs")
    csp = r.headers.get("content-security-policy", "")
    assert csp == content_security_policy(None)
    script_src = re.search(r"script-src ([^;]*)", csp)
    assert script_src and script_src.group(1).split() == ["'self'"]
    assert r.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts), scripts
    init = client.get("/static/web/swagger-init.js")
    assert init.status_code == 200 and "javascript" in init.headers["content-type"]
    assert "SwaggerUIBundle(" in init.text and "validatorUrl: null" in init.text
    assert client.get("/redoc").status_code == 404  # no ReDoc page (it would need a CDN script)


def test_metrics_exposed(client):
    client.get("/healthz")
    r = client.get("/metrics")
    assert r.status_code == 200
    assert "citybrain_http_requests_total" in r.text


def test_metrics_token_when_set(client):
    from citybrain.config import configure, get_settings

    configure(get_settings().model_copy(update={"metrics_token": "scrape-me"}))
    r = client.get("/metrics")
    assert r.status_code == 401 and r.json()["code"] == "metrics_token_required"
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert r.status_code == 200 and "citybrain_http_requests_total" in r.text


def test_fast_paths_count_in_the_metrics(client):
    """Requests a pure ASGI fast path answers (telemetry here) are counted by route and status like the rest."""
    import re

    line = re.compile(r'citybrain_http_requests_total\{method="POST",route="/api/v1/iot/telemetry",status="401"\} (\S+)')

    def count() -> float:
        m = line.search(client.get("/metrics").text)
        return float(m.group(1)) if m else 0.0

    before = count()
    for _ in range(2):
        assert client.post("/api/v1/iot/telemetry", json={"ts": 0, "values": {}}).status_code == 401
    assert count() == before + 2


def test_login_and_me(client):
    h = login(client, "operator")
    me = client.get("/api/v1/me", headers=h).json()
    assert me["username"] == "operator" and "case.dispatch" in me["permissions"] and me["city_wide"]


def test_background_work_runs_only_while_served_with_it(db):
    """Module workers (IoT status checker and MQTT subscriber, case deadline sweep) follow the served app's
    background flag, whichever bus backend it uses; CLI jobs and `background=False` apps leave them inert."""
    from fastapi.testclient import TestClient

    from citybrain import bus
    from citybrain.app import create_app

    assert not bus.background_on()
    with TestClient(create_app(background=False)):
        assert not bus.background_on()
    with TestClient(create_app(background=True)) as c:
        assert c.get("/healthz").status_code == 200
        assert bus.background_on()
    assert not bus.background_on()
