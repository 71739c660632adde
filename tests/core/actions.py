"""The registry of protected actions for the role x action matrix (tests/identity/test_matrix.py).

Each module's tests may hold `tests/<module>/actions.py` with `ACTIONS: list[Action]`: one entry per protected
endpoint, with a request that succeeds for a role holding the permission (`ok` is the status it answers).
The matrix runs every built-in role (demo account = role name) against every action and asserts `ok` when the
role holds one of the route's permissions and 403 `permission_denied` otherwise. Protected routes without an
entry are still covered, with an empty request: allowed must not answer 401/403-permission_denied, denied
must answer 403. Identity, audit and core routes must all be registered (test_registry_is_complete).

    from tests.core.actions import Action

    ACTIONS = [
        Action("POST", "/api/v1/cases/{case_id}/dispatch", "case.dispatch",
               prepare=lambda ctx: {"case_id": make_case(ctx.db)}, body={"dept_org_id": 5}, ok=200),
    ]
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from citybrain import context, modules
from citybrain.db import Database

_ids = itertools.count(1)


@dataclass
class Ctx:
    """What an action's `prepare`/`body` callables get: the database and the acting role."""

    db: Database
    role: str

    def uid(self) -> str:
        """A short unique suffix for codes and names."""
        return f"{next(_ids):05d}"

    def org_id(self, code: str) -> int:
        from citybrain.identity.models import Org

        with self.db.read() as s:
            return s.scalar(select(Org.id).where(Org.code == code))

    def user_id(self, username: str) -> int:
        from citybrain.identity.models import User

        with self.db.read() as s:
            return s.scalar(select(User.id).where(User.username == username))

    def new_user(self, *, org_code: str = "D-CGJ", roles: tuple[str, ...] = ()) -> int:
        """A fresh user created on the console (as the system)."""
        from citybrain.identity import service

        context.set_principal(context.SYSTEM)
        with self.db.write() as s:
            u = service.create_user(s, username=f"tmp{self.uid()}", real_name="临时用户", password="Temp#Pass2026",
                                    org_id=self.org_id(org_code), roles=roles)
            return u.id

    def new_api_key(self, scopes: tuple[str, ...] = ("iot.ingest",)) -> int:
        from citybrain.identity import service

        context.set_principal(context.SYSTEM)
        with self.db.write() as s:
            _key, row = service.create_api_key(s, name=f"key{self.uid()}", scopes=scopes)
            return row.id


Value = dict[str, Any] | Callable[[Ctx], dict[str, Any]] | None


@dataclass(frozen=True)
class Action:
    """One protected endpoint and a request that succeeds for a role allowed to call it."""

    method: str
    path: str  # the route template, e.g. /api/v1/users/{user_id}/roles
    permission: str | tuple[str, ...]  # the route's permission(s): any one admits
    body: Value = None  # JSON body
    form: Value = None  # form body (instead of JSON)
    params: Value = None  # query string
    prepare: Callable[[Ctx], dict[str, Any]] | None = None  # -> values for the path template
    ok: int = 200
    note: str = field(default="", compare=False)

    @property
    def permissions(self) -> tuple[str, ...]:
        return (self.permission,) if isinstance(self.permission, str) else tuple(self.permission)

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)

    def request(self, ctx: Ctx) -> dict[str, Any]:
        """Keyword arguments for `client.request`."""
        def val(v: Value) -> Any:
            return v(ctx) if callable(v) else v

        path_vars = self.prepare(ctx) if self.prepare else {}
        kw: dict[str, Any] = {"method": self.method, "url": self.path.format(**path_vars)}
        if self.body is not None:
            kw["json"] = val(self.body)
        if self.form is not None:
            kw["data"] = val(self.form)
        if self.params is not None:
            kw["params"] = val(self.params)
        return kw


def collect() -> dict[tuple[str, str], Action]:
    """Every registered action of the installed modules (and core), by (method, path)."""
    out: dict[tuple[str, str], Action] = {}
    for name in ("core", *modules.installed()):
        try:
            mod = importlib.import_module(f"tests.{name}.actions")
        except ModuleNotFoundError as exc:
            if exc.name not in (f"tests.{name}", f"tests.{name}.actions"):
                raise
            continue
        for a in getattr(mod, "ACTIONS", []):
            if a.key in out:
                raise AssertionError(f"action {a.key} registered twice")
            out[a.key] = a
    return out


def fallback(method: str, path: str, permissions: tuple[str, ...]) -> Action:
    """An empty request to a protected route nobody registered (ids 1, body {})."""
    import re

    names = re.findall(r"{(\w+)(?::\w+)?}", path)
    template = re.sub(r"{(\w+):\w+}", r"{\1}", path)
    return Action(method, template, permissions, body={} if method in ("POST", "PUT", "PATCH") else None,
                  prepare=lambda _ctx: dict.fromkeys(names, "1"), ok=-1, note="unregistered")


ACTIONS: list[Action] = []  # core has no protected routes of its own (GET /api/v1/live needs only a login)
