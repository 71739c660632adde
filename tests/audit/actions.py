"""Audit's protected actions for the role x action matrix (see tests/core/actions.py)."""

from __future__ import annotations

from tests.core.actions import Action

ACTIONS = [
    Action("GET", "/api/v1/audit", "audit.read", params={"action": "auth.*", "limit": 5}),
    Action("GET", "/api/v1/audit/verify", "audit.read"),
]
