"""`citybrain iot ...`: device import, gateway keys, status check, retention purge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from citybrain.cli_common import DataDirOpt, open_db

iot_app = typer.Typer(help="物联感知 IoT devices and telemetry", no_args_is_help=True)


@iot_app.command("import")
def import_devices(csv_file: Annotated[Path, typer.Argument(help="CSV: code,name,model,org,lon,lat,address,installed_at")],
                   data_dir: DataDirOpt = None,
                   dry_run: Annotated[bool, typer.Option("--dry-run", help="Check only")] = False) -> None:
    """Register devices from a CSV file; prints the per-row report (with each new device's secret) as JSON."""
    from citybrain import context
    from citybrain.iot import service

    db = open_db(data_dir)
    context.set_principal(context.SYSTEM)
    with db.write() as s:
        report = service.import_csv(s, data=csv_file.read_bytes(), principal=context.SYSTEM, dry_run=dry_run)
    typer.echo(json.dumps(report, ensure_ascii=False, default=str, indent=1))
    raise typer.Exit(1 if report["errors"] else 0)


@iot_app.command("gateway-key")
def gateway_key(name: str, org: Annotated[str, typer.Option(help="Organisation code, e.g. D-SWJ")],
                data_dir: DataDirOpt = None) -> None:
    """Issue a gateway key (scope iot.ingest) for one organisation's devices; shown once."""
    from citybrain import context
    from citybrain.identity import service as identity
    from citybrain.iot import service

    db = open_db(data_dir)
    context.set_principal(context.SYSTEM)
    with db.write() as s:
        o = identity.org_by_code(s, code=org)
        if o is None:
            typer.echo(f"单位不存在 unknown organisation {org}", err=True)
            raise typer.Exit(2)
        key, _ = service.create_gateway_key(s, name=name, org_id=o.id, principal=context.SYSTEM)
    typer.echo(key)


@iot_app.command("check")
def check(data_dir: DataDirOpt = None) -> None:
    """Mark silent devices offline and raise no-data alarms now (the server does this every 5 s)."""
    from citybrain.iot import service

    db = open_db(data_dir)
    with db.write() as s:
        typer.echo(json.dumps(service.check_status(s)))


@iot_app.command("purge")
def purge(data_dir: DataDirOpt = None,
          days: Annotated[int | None, typer.Option(help="Keep this many days (CITYBRAIN_TELEMETRY_RETENTION_DAYS)")]
          = None) -> None:
    """Delete readings and dead letters older than the retention period."""
    from citybrain.iot import service

    db = open_db(data_dir)
    with db.write() as s:
        typer.echo(json.dumps(service.purge(s, days=days)))


COMMANDS = {"iot": iot_app}
