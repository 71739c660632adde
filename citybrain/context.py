"""Who is acting and on which request: the principal and request facts carried through a call.

The API layer sets them (identity's dependencies); services read them for permission checks, data scope
and the audit trail. Background work acts as `SYSTEM`.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Principal:
    """An authenticated actor: a user, a machine key, the system itself, or an anonymous citizen."""

    kind: str  # "user" | "apikey" | "system" | "anonymous"
    id: int | None
    name: str
    org_id: int | None = None
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()
    # organisation ids the actor may see; None means city-wide
    org_scope: frozenset[int] | None = frozenset()
    session_id: int | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def can(self, permission: str) -> bool:
        """True if the actor holds this permission."""
        return permission in self.permissions

    def sees_org(self, org_id: int | None) -> bool:
        """True if the organisation lies in the actor's data scope."""
        return self.org_scope is None or (org_id is not None and org_id in self.org_scope)

    @property
    def label(self) -> str:
        """How the audit trail names the actor, e.g. `user:operator`."""
        return f"{self.kind}:{self.name}"


SYSTEM = Principal(kind="system", id=None, name="system", org_scope=None)
ANONYMOUS = Principal(kind="anonymous", id=None, name="anonymous")


@dataclass
class RequestInfo:
    """Facts about the request being served."""

    request_id: str | None = None
    ip: str | None = None
    principal: Principal | None = None


_request: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar("citybrain_request", default=None)


def current() -> RequestInfo:
    """The request being served (an empty one outside requests)."""
    info = _request.get()
    if info is None:
        info = RequestInfo()
        _request.set(info)
    return info


def begin(request_id: str | None, ip: str | None) -> contextvars.Token:
    """Start a request's context."""
    return _request.set(RequestInfo(request_id=request_id, ip=ip))


def end(token: contextvars.Token) -> None:
    """End a request's context."""
    _request.reset(token)


def set_principal(principal: Principal) -> None:
    """Record who is acting on this request."""
    current().principal = principal


def actor() -> Principal:
    """Who is acting now: the request's principal, else the system."""
    return current().principal or SYSTEM
