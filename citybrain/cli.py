"""The `citybrain` command: serve, demo, migrate, bench, and each module's own commands."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from citybrain import modules
from citybrain.cli_common import DataDirOpt
from citybrain.config import Settings, configure, get_settings

app = typer.Typer(help="CityBrain 城市大脑 — city operations platform", no_args_is_help=True, add_completion=False,
                  rich_markup_mode=None,  # plain help: the rich one shows flags as taking a <bool> value
                  pretty_exceptions_enable=False)

DataDir = DataDirOpt


def use_data_dir(data_dir: Path | None) -> Settings:
    """Apply --data-dir on top of the environment's settings."""
    if data_dir is not None:
        configure(get_settings().model_copy(update={"data_dir": data_dir}))
    return get_settings()


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply database migrations (also done on every start)."""
    use_data_dir(data_dir)
    from citybrain.app import startup
    from citybrain.db import get_db

    startup(get_db())
    typer.echo("数据库已是最新 database is up to date")


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Bind address (CITYBRAIN_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (CITYBRAIN_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (CITYBRAIN_WORKERS)", min=1, max=64)] = None,
) -> None:
    """Run the server."""
    import os

    import uvicorn

    settings = use_data_dir(data_dir)
    _logging()
    from citybrain.app import create_app

    n = workers or settings.workers
    if n > 1:  # several processes: migrate once here; each worker builds the app from the environment
        from citybrain.db import get_db, migrate

        migrate(get_db())
        get_db().dispose()
        os.environ.update(CITYBRAIN_DATA_DIR=str(settings.data_dir), CITYBRAIN_WORKERS=str(n))
        from citybrain import workers as worker_procs

        # the parent accepts and hands the connections to the workers in turn (citybrain/workers.py);
        # no WebSocket routes: an upgrade request is answered as plain HTTP
        worker_procs.serve(uvicorn.Config("citybrain.app:create_app", factory=True, workers=n, ws="none",
                                          http=worker_procs.HttpProtocol, host=host or settings.host,
                                          port=port or settings.port, log_level="info", access_log=False))
        return
    from citybrain.workers import HttpProtocol

    uvicorn.run(create_app(), host=host or settings.host, port=port or settings.port, log_level="info",
                access_log=False, http=HttpProtocol)


@app.command()
def demo(
    data_dir: DataDir = None,
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    no_sim: Annotated[bool, typer.Option("--no-sim", help="Do not start the simulated devices and reporters")] = False,
) -> None:
    """Build a demo district (Nansha, Guangzhou) with one account per role, then serve it."""
    import uvicorn

    settings = use_data_dir(data_dir)
    _logging()
    from citybrain.app import create_app, startup
    from citybrain.db import get_db

    db = get_db()
    startup(db)
    t0 = time.monotonic()
    for name, mod in modules.parts("demo"):
        mod.seed(db)
        typer.echo(f"  demo data: {name} ready ({time.monotonic() - t0:.1f}s)")
    base = f"http://{host}:{port}"
    typer.echo(f"CityBrain demo on {base}  (accounts: sysadmin, secadmin, auditor, leader, operator, handler, "
               f"gridworker, analyst, citizen; password {settings.demo_password!r})")
    if not no_sim:
        sim = modules.part("sim", "runner")
        if sim is not None:
            threading.Thread(target=sim.run, args=(base.replace("0.0.0.0", "127.0.0.1"),), name="citybrain-sim",
                             daemon=True).start()
    uvicorn.run(create_app(), host=host, port=port, log_level="info", access_log=False)


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="Benchmark name (see --list)")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Small sizes: a smoke test under 60 s")] = False,
    list_: Annotated[bool, typer.Option("--list", help="List the benchmarks")] = False,
) -> None:
    """Run a benchmark in its own temporary data folder."""
    registry = {}
    for _module, mod in modules.parts("bench"):
        registry.update(mod.BENCHES)
    if list_ or not name:
        for key, fn in sorted(registry.items()):
            typer.echo(f"{key:12} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return
    if name not in registry:
        typer.echo(f"unknown benchmark {name!r}; known: {', '.join(sorted(registry))}", err=True)
        raise typer.Exit(2)
    logging.disable(logging.WARNING)
    result = registry[name](quick=quick)
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    else:
        for k, v in result.items():
            typer.echo(f"{k:28} {v}")


def _register_module_commands() -> None:
    for _module, mod in modules.parts("cli"):
        for cmd_name, sub in mod.COMMANDS.items():
            app.add_typer(sub, name=cmd_name)


_register_module_commands()


def main() -> None:
    """Console entry point."""
    app()


db_app = typer.Typer(help="数据库 database (developers)", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("revision")
def db_revision(
    module: Annotated[str, typer.Argument(help="Module whose tables changed (its tables are named <module>_*)")],
    message: Annotated[str, typer.Option("-m", "--message")],
) -> None:
    """Autogenerate the next migration of one module's branch (core tables: module 'core', prefix bus_)."""
    import tempfile

    from alembic import command
    from alembic.script import ScriptDirectory

    from citybrain.db import MIGRATIONS_DIR, Database, alembic_config, migrate

    if module != "core":
        (modules.PACKAGE_DIR / module / "migrations").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(Settings(data_dir=Path(tmp)))
        migrate(db)
        cfg = alembic_config(db)
        cfg.attributes["table_prefix"] = "bus_" if module == "core" else f"{module}_"
        script = ScriptDirectory.from_config(cfg)
        existing = [r.revision for r in script.walk_revisions() if r.revision.startswith(f"{module}_")]
        n = 1 + max((int(r.rsplit("_", 1)[1]) for r in existing), default=0)
        rev_id = f"{module}_{n:04d}"
        if existing:
            command.revision(cfg, message, autogenerate=True, head=f"{module}@head", rev_id=rev_id)
        else:
            path = MIGRATIONS_DIR / "versions" if module == "core" else modules.PACKAGE_DIR / module / "migrations"
            deps = None if module == "core" else ["core_0001"]
            command.revision(cfg, message, autogenerate=True, head="base", branch_label=module,
                             version_path=str(path), rev_id=rev_id, depends_on=deps)
        db.dispose()
    typer.echo(f"wrote revision {rev_id}")
