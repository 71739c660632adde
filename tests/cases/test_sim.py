"""The demo's case simulator drives the real API as its own accounts and leaves a share of the work to people."""

import random

import pytest
from sqlalchemy import func, select

from citybrain import demo_district as dd
from citybrain.cases import demo
from citybrain.cases.models import Case, CaseEvent
from citybrain.sim import cases as sim


def test_simulator_works_as_its_own_accounts_and_leaves_a_share_for_people(client, cdb, monkeypatch):
    if not cdb.is_sqlite:
        pytest.skip("the simulator only talks HTTP; one backend is enough (keeps the suite fast)")
    demo.sim_users(cdb)
    demo._users(cdb)
    calls: list[tuple[str, str, str, int]] = []
    real_call = sim.Actor.call

    def call(self, method, path, **kw):
        r = real_call(self, method, path, **kw)
        calls.append((self.username, method, path, r.status_code))
        return r

    monkeypatch.setattr(sim.Actor, "call", call)
    actors = {name: sim.Actor(client, name) for name in ("sim-operator", "sim-leader")}
    assert all(a.login() for a in actors.values())
    handlers = [a for a in (sim.Actor(client, f"handler-{d.code[2:].lower()}") for d in dd.DEPARTMENTS[1:]) if a.login()]
    gridworkers = {c.code: sim.Actor(client, f"grid-{c.code}") for c in
                   (next(c for c in dd.COMMUNITIES if c.town_code == t.code) for t in dd.TOWNS)}
    assert len(handlers) == len(dd.DEPARTMENTS) - 1 and all(a.login() for a in gridworkers.values())
    monkeypatch.setattr(sim, "PHOTOS", [])
    sim._upload_photos(client)
    assert len(sim.PHOTOS) == 2
    rnd, citizens, desk = random.Random(3), [], sim.Desk()
    for _ in range(30):
        sim.step(rnd, client, actors, handlers, gridworkers, citizens, desk)
    # every call the simulator made was answered as it expected (no 404 for a case out of scope, no 403)
    assert [c for c in calls if c[3] >= 400] == []
    with cdb.read() as s:
        cases = s.execute(select(Case.id, Case.status, Case.source)).all()
        sources = {c.source for c in cases}
        actors_seen = {a for (a,) in s.execute(select(CaseEvent.actor).distinct())}
        by_status = dict(s.execute(select(Case.status, func.count()).group_by(Case.status)).all())
    assert len(cases) >= 10 and {"patrol", "hotline"} <= sources
    assert by_status.get("closed", 0) >= 1
    # never the README's accounts
    assert not {"user:operator", "user:handler", "user:gridworker", "user:leader"} & actors_seen, actors_seen
    # the people's share waits: reports not filed by a machine stay in 待受理 for the operator
    people = [c for c in cases if c.id % sim.HUMAN_SHARE == 0 and c.source in ("patrol", "web")]
    assert people and all(c.status == "reported" for c in people)
    # once it has waited long enough, the simulator's colleagues take it
    monkeypatch.setattr(sim, "HUMAN_WAIT_S", 0)
    for _ in range(6):
        sim.step(rnd, client, actors, handlers, gridworkers, citizens, desk)
    with cdb.read() as s:
        statuses = dict(s.execute(select(Case.id, Case.status).where(Case.id.in_([c.id for c in people]))).all())
    assert any(st != "reported" for st in statuses.values())
