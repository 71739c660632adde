"""The web module's protected API actions for the role x action matrix (see tests/core/actions.py)."""

from __future__ import annotations

from citybrain import context, modules
from tests.core.actions import Action, Ctx

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")


def _attachment(ctx: Ctx) -> dict:
    from citybrain.web import service

    with ctx.db.write() as s:
        return {"key": service.store_attachment(s, data=PNG + ctx.uid().encode(), filename="a.png",
                                                principal=context.SYSTEM)["key"]}


def _case(ctx: Ctx) -> dict:
    svc = modules.part("cases", "service")
    if svc is None:
        return {"case_id": 1}
    context.set_principal(context.SYSTEM)
    with ctx.db.write() as s:
        case = svc.report(s, principal=context.SYSTEM, source="patrol", title="暴露垃圾", category_code="06010",
                          lon=113.5035, lat=22.8435)
        return {"case_id": case.id}


ACTIONS = [
    Action("GET", "/api/v1/ioc/summary", "ioc.view"),
    Action("GET", "/api/v1/attachments/{key}", "case.read", prepare=_attachment),
    Action("GET", "/api/v1/web/dispatch-suggestion/{case_id}", "case.dispatch", prepare=_case,
           ok=200 if modules.part("cases", "service") is not None else 0,
           note="without the cases module the route answers 404 not_connected"),
]
