"""`citybrain cases ...`: run the deadline sweep, list dictionaries, compute a deadline, export an evaluation."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from citybrain.cli_common import DataDirOpt, open_db

cases_app = typer.Typer(help="一网统管 事件中心 cases", no_args_is_help=True)


@cases_app.command("sweep")
def sweep(data_dir: DataDirOpt = None) -> None:
    """Run the deadline sweep once (warnings, overdue, supervision, hotspots)."""
    from citybrain import context
    from citybrain.cases import service

    context.set_principal(context.SYSTEM)
    db = open_db(data_dir)
    with db.write() as s:
        typer.echo(service.sweep(s))


@cases_app.command("dictionaries")
def dictionaries(data_dir: DataDirOpt = None) -> None:
    """List the classification dictionaries and which one is active."""
    from citybrain.cases import service

    db = open_db(data_dir)
    with db.read() as s:
        for d in service.list_dictionaries(s):
            typer.echo(f"{'*' if d['active'] else ' '} {d['code']:18} {d['entries']:4} {d['standard_ref']}  {d['name']}")


@cases_app.command("deadline")
def deadline(start: Annotated[str, typer.Argument(help="ISO time with offset, e.g. 2026-09-30T16:00+08:00")],
             value: float, unit: Annotated[str, typer.Argument(help="work_hours | work_days | hours")],
             data_dir: DataDirOpt = None) -> None:
    """Compute a deadline with the deployment's calendar (holidays, 调休, office hours)."""
    from citybrain.cases import service
    from citybrain.workcal import CST, UNITS

    if unit not in UNITS:
        raise typer.BadParameter(f"unit must be one of {', '.join(UNITS)}")
    t = dt.datetime.fromisoformat(start)
    if t.tzinfo is None:
        t = t.replace(tzinfo=CST)
    db = open_db(data_dir)
    with db.read() as s:
        typer.echo(service.calendar(s).add(t, value, unit).astimezone(CST).isoformat())


@cases_app.command("evaluate")
def evaluate(group_by: Annotated[str, typer.Option(help="dept|town|community|grid|gridworker|all")] = "dept",
             days: Annotated[int, typer.Option(help="the last N days")] = 30, data_dir: DataDirOpt = None) -> None:
    """Print the evaluation of the last N days as CSV."""
    from citybrain import clock, context
    from citybrain.cases import analytics

    db = open_db(data_dir)
    end = clock.now()
    with db.read() as s:
        res = analytics.evaluate(s, principal=context.SYSTEM, group_by=group_by, start=end - dt.timedelta(days=days),
                                 end=end)
    typer.echo(analytics.evaluation_csv(res).lstrip("\ufeff"), nl=False)


COMMANDS = {"cases": cases_app}
