"""Every built-in role against every protected action: allowed roles get the action's status, the rest 403."""

from __future__ import annotations

import pytest

from citybrain.deps import api_routes, route_needs_login, route_permissions
from citybrain.identity.permissions import ROLES
from tests.conftest import login
from tests.core.actions import Ctx, collect, fallback

STRICT_PREFIXES = ("/api/v1/auth", "/api/v1/me", "/api/v1/orgs", "/api/v1/users", "/api/v1/roles",
                   "/api/v1/permissions", "/api/v1/apikeys", "/api/v1/audit", "/api/v1/live")


def protected_routes(app) -> dict[tuple[str, str], tuple[str, ...]]:
    return {(m, p): perms for m, p, r in api_routes(app) if (perms := route_permissions(r))}


def actions_for(app):
    registered = collect()
    out = []
    for key, perms in sorted(protected_routes(app).items()):
        out.append(registered.get(key) or fallback(key[0], key[1], perms))
    return out


def test_registry_is_complete_and_truthful(client):
    routes = protected_routes(client.app)
    registered = collect()
    stale = sorted(k for k in registered if k not in routes)
    assert not stale, f"registered actions with no protected route: {stale}"
    wrong = {k: (a.permissions, routes[k]) for k, a in registered.items() if set(a.permissions) != set(routes[k])}
    assert not wrong, f"registered permission differs from the route's: {wrong}"
    missing = sorted(k for k in routes if k not in registered and k[1].startswith(STRICT_PREFIXES))
    assert not missing, f"identity/audit/core routes without an entry in tests/*/actions.py: {missing}"
    assert len(routes) >= 16  # the identity and audit APIs are all there


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_against_every_protected_action(client, db, role):
    headers = login(client, role)
    held = ROLES[role].permissions
    ctx = Ctx(db=db, role=role)
    failures = []
    actions = actions_for(client.app)
    for action in actions:
        allowed = bool(held & set(action.permissions))
        r = client.request(**action.request(ctx), headers=headers)
        body = r.json() if r.headers.get("content-type", "").startswith("application/") and r.content else {}
        if allowed and action.ok > 0:
            good = r.status_code == action.ok
        elif allowed:  # an unregistered route: only "not refused for want of the permission"
            good = r.status_code != 401 and not (r.status_code == 403 and body.get("code") == "permission_denied")
        else:
            good = r.status_code == 403 and body.get("code") == "permission_denied" and \
                r.headers["content-type"].startswith("application/problem+json")
        if not good:
            failures.append(f"{action.method} {action.path}: {'allowed' if allowed else 'denied'} but "
                            f"{r.status_code} {r.text[:200]}")
    assert not failures, f"role {role}:\n" + "\n".join(failures)
    # sanity: every role is allowed something or denied something (the matrix is not vacuous)
    assert any(held & set(a.permissions) for a in actions) or role in ("citizen", "analyst")


def test_anonymous_gets_401_on_every_route_that_needs_a_login(client):
    for method, path, route in api_routes(client.app):
        if not route_needs_login(route) or path == "/api/v1/live":
            continue
        url = path.replace("{org_id}", "1").replace("{user_id}", "1").replace("{key_id}", "1").replace("{code}", "x")
        url = __import__("re").sub(r"{\w+(:\w+)?}", "1", url)
        r = client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.headers.get("www-authenticate") == "Bearer"
    assert client.get("/api/v1/live").status_code == 401


def test_every_denial_is_audited(client, as_role, db):
    from citybrain.audit import service as audit

    r = client.post("/api/v1/orgs", json={"code": "X", "name": "x", "type": "department"},
                    headers={**as_role("operator"), "X-Request-ID": "deny-1"})
    assert r.status_code == 403
    with db.read() as s:
        total, rows = audit.search(s, request_id="deny-1")
    assert total == 1
    rec = rows[0]
    assert (rec.actor, rec.action, rec.outcome, rec.target_id) == ("user:operator", "org.manage", "denied",
                                                                    "org.manage")
    assert rec.ip == "testclient" and rec.org_id is not None
