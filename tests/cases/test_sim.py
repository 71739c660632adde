"""The demo's case simulator drives the real API and moves cases through the workflow."""

import random

from sqlalchemy import func, select

from citybrain.cases.models import Case
from citybrain.sim import cases as sim


def test_simulator_reports_files_handles_and_closes(client, cdb):
    actors = {name: sim.Actor(client, name) for name in ("gridworker", "operator", "leader", "handler")}
    assert all(a.login() for a in actors.values())
    rnd, citizens = random.Random(3), []
    for _ in range(25):
        sim.step(rnd, client, actors, [actors["handler"]], citizens)
    with cdb.read() as s:
        by_status = dict(s.execute(select(Case.status, func.count()).group_by(Case.status)).all())
        sources = {r for (r,) in s.execute(select(Case.source).distinct())}
    assert sum(by_status.values()) >= 10
    assert {"patrol", "hotline"} <= sources
    assert by_status.get("closed", 0) >= 1 and by_status.get("reported", 0) < sum(by_status.values())
