"""`citybrain audit ...`"""

from __future__ import annotations

import typer

from citybrain.cli_common import DataDirOpt, open_db

audit_app = typer.Typer(help="安全审计 audit trail", no_args_is_help=True)


@audit_app.command("verify")
def verify(data_dir: DataDirOpt = None) -> None:
    """Check the hash chain; exit 0 if intact, 1 naming the first bad record."""
    from citybrain.audit import service

    db = open_db(data_dir)
    result = service.verify(db)
    if result["ok"]:
        typer.echo(f"审计链完整 audit chain intact: {result['checked']} records")
        raise typer.Exit(0)
    typer.echo(f"审计链被篡改 audit chain BROKEN at record seq={result['first_bad_seq']}: {result['reason']} "
               f"({result['checked']} records verified before it)", err=True)
    raise typer.Exit(1)


COMMANDS = {"audit": audit_app}
