"""Schemathesis over the whole OpenAPI document, as several roles: no 5xx, no response that breaks its schema."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import DEMO_PASSWORD

ROLES = ("sysadmin", "secadmin", "auditor", "handler", None)  # None: no credential
MAX_EXAMPLES = 12
# "No 5xx and no response that breaks its schema". Not positive_data_acceptance (business rules such as the
# password policy rightly refuse some schema-valid requests with a 422) nor negative_data_rejection (a query
# parameter given twice is read once, as every framework does).
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
SKIP = {("GET", "/api/v1/live")}  # an endless stream; tests/core/test_live.py covers it


class Credentials:
    """One token per role, logged in again only when an operation ended its session (Argon2 is slow on purpose)."""

    def __init__(self, client):
        self.client, self.tokens = client, {}

    def headers(self) -> list[dict[str, str]]:
        out = []
        for role in ROLES:
            if role is None:
                out.append({})
                continue
            h = self.tokens.get(role)
            if h is None or self.client.get("/api/v1/me", headers=h).status_code != 200:
                r = self.client.post("/api/v1/auth/token", data={"username": role, "password": DEMO_PASSWORD})
                self.client.cookies.clear()
                # an earlier operation may have changed this account's password or roles: go on without it
                h = {"Authorization": f"Bearer {r.json()['access_token']}"} if r.status_code == 200 else None
                self.tokens[role] = h
            if h is not None:
                out.append(h)
        return out


@pytest.mark.slow
def test_openapi_fuzz(client):
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    operations = 0
    creds = Credentials(client)
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) in SKIP:
            continue
        operations += 1
        headers = creds.headers()
        strategy = st.one_of(op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                             op.as_strategy(generation_mode=GenerationMode.NEGATIVE))

        @given(case=strategy, who=st.sampled_from(headers))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def check(case, who):
            case.call_and_validate(headers={**(case.headers or {}), **who}, checks=CHECKS)

        try:
            check()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's first failure
            failures.append(f"{op.method.upper()} {op.path}: {str(exc)[:1500]}")
    assert operations >= 25
    assert not failures, "\n\n".join(failures)
