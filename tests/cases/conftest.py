"""Fixtures of the cases tests: the demo's department mapping and matrix, a frozen clock, principals."""

from __future__ import annotations

import datetime as dt

import pytest

from citybrain import clock
from citybrain.cases import demo
from citybrain.identity import service as identity
from citybrain.workcal import CST

# Monday 2026-11-16 09:00 China time: a plain working week
MONDAY = dt.datetime(2026, 11, 16, 9, 0, tzinfo=CST)


@pytest.fixture
def cdb(db):
    """The test database with the cases demo configuration (default departments, matrix), clock frozen."""
    demo.seed_config(db)
    clock.freeze(MONDAY.astimezone(dt.UTC))
    yield db
    clock.reset()


@pytest.fixture
def who(cdb):
    """`who("operator")` -> the Principal of that demo account."""
    cache = {}

    def _get(username: str):
        if username not in cache:
            with cdb.write() as s:
                user = identity.user_by_username(s, username=username)
                assert user is not None, username
                cache[username] = identity.principal_for_user(s, user=user)
        return cache[username]

    return _get


@pytest.fixture
def org(cdb):
    """`org("D-CGJ")` -> organisation id by code."""

    def _get(code: str) -> int:
        with cdb.read() as s:
            o = identity.org_by_code(s, code=code)
            assert o is not None, code
            return o.id

    return _get
