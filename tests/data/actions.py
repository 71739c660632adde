"""Data hub protected actions for the role x action matrix (tests/identity/test_matrix.py)."""

from __future__ import annotations

from tests.core.actions import Action

ACTIONS = [
    Action("GET", "/api/v1/data/resources", "data.catalog.read"),
    Action("GET", "/api/v1/data/catalog/stats", "data.catalog.read"),
    Action("GET", "/api/v1/data/requests", "data.catalog.read"),
    Action("GET", "/api/v1/data/grants", "data.catalog.read"),
    Action("GET", "/api/v1/data/stats/exchange", "data.stats"),
    Action("GET", "/api/v1/data/exchange-log", "data.stats"),
    Action("GET", "/api/v1/data/ioc", "ioc.view"),
    Action("POST", "/api/v1/data/resources", "data.catalog.manage", ok=201,
           body=lambda c: {"code": f"T-{c.uid()}", "name": "测试资源", "classification": "department",
                           "category": "3-测试", "key_field": "k", "items": [{"name": "k", "label": "键"}],
                           "share_type": "unconditional", "open_type": "closed"}),
]
