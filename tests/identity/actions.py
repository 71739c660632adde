"""Identity's protected actions for the role x action matrix (see tests/core/actions.py)."""

from __future__ import annotations

from tests.core.actions import Action, Ctx

STRONG = "Strong#Pass2026"


def _self(ctx: Ctx) -> dict:
    return {"user_id": ctx.user_id(ctx.role)}


ACTIONS = [
    Action("POST", "/api/v1/orgs", "org.manage", ok=201,
           body=lambda c: {"code": f"D-T{c.uid()}", "name": "测试局", "type": "department",
                           "parent_id": c.org_id("440115000000")}),
    Action("PATCH", "/api/v1/orgs/{org_id}", "org.manage", prepare=lambda c: {"org_id": c.org_id("D-SWJ")},
           body={"name_en": "Water Authority"}),
    Action("GET", "/api/v1/users", ("user.read", "user.directory")),
    Action("GET", "/api/v1/users/{user_id}", ("user.read", "user.directory"), prepare=_self),
    Action("POST", "/api/v1/users", "user.manage", ok=201,
           body=lambda c: {"username": f"new{c.uid()}", "real_name": "新用户", "password": STRONG,
                           "org_id": c.org_id("D-CGJ"), "phone": "13912345678"}),
    Action("PATCH", "/api/v1/users/{user_id}", "user.manage", prepare=lambda c: {"user_id": c.new_user()},
           body={"real_name": "改名"}),
    Action("POST", "/api/v1/users/{user_id}/unlock", "user.manage", prepare=lambda c: {"user_id": c.new_user()}),
    Action("POST", "/api/v1/users/{user_id}/password", "user.manage", ok=204,
           prepare=lambda c: {"user_id": c.new_user()}, body={"password": STRONG}),
    Action("PUT", "/api/v1/users/{user_id}/roles", "role.assign", prepare=lambda c: {"user_id": c.new_user()},
           body={"roles": ["handler"]}),
    Action("POST", "/api/v1/roles", "role.manage", ok=201,
           body=lambda c: {"code": f"inspector{c.uid()}", "name": "巡查员", "name_en": "Inspector",
                           "permissions": ["case.read", "geo.read"]}),
    Action("PUT", "/api/v1/roles/{code}/permissions", "role.manage", prepare=lambda c: {"code": "citizen"},
           body={"permissions": ["case.report"]}),
    Action("GET", "/api/v1/apikeys", "apikey.manage"),
    Action("POST", "/api/v1/apikeys", "apikey.manage", ok=201,
           body=lambda c: {"name": f"gateway {c.uid()}", "kind": "gateway", "scopes": ["iot.ingest"]}),
    Action("DELETE", "/api/v1/apikeys/{key_id}", "apikey.manage", ok=204,
           prepare=lambda c: {"key_id": c.new_api_key()}),
]
