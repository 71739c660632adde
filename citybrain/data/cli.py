"""`citybrain data ...`: load files into the hub with a progress bar, read quality reports, expire grants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from citybrain import context
from citybrain.cli_common import DataDirOpt, open_db
from citybrain.context import Principal
from citybrain.errors import Problem

data_app = typer.Typer(help="数据共享交换 data hub", no_args_is_help=True)
COMMANDS = {"data": data_app}
CLI = Principal(kind="system", id=None, name="cli", org_scope=None)


def _run(fn):
    context.set_principal(CLI)
    try:
        return fn()
    except Problem as p:
        typer.echo(f"错误 error: {p.detail_zh} / {p.detail_en}", err=True)
        for e in p.errors[:20]:
            typer.echo(f"  - {e.get('field')}: {e.get('message')}", err=True)
        raise typer.Exit(1) from None


def _count_lines(path: Path) -> int | None:
    if path.suffix.lower() != ".csv":
        return None
    with path.open("rb") as f:
        return max(0, sum(1 for _ in f) - 1)


@data_app.command("load")
def load(
    resource: Annotated[str, typer.Argument(help="Resource code 信息资源代码")],
    file: Annotated[Path, typer.Argument(help="CSV (UTF-8/GB18030), JSON or XLSX file", exists=True, dir_okay=False)],
    batch: Annotated[int, typer.Option(help="Rows per batch (commits group batches: ~1 s or 100,000 rows)")] = 5000,
    data_dir: DataDirOpt = None,
) -> None:
    """Load a file into a resource (upsert by key) and print its quality report."""
    from citybrain.data import service

    db = open_db(data_dir)
    total = _count_lines(file)

    def go():
        content = file.read_bytes()
        rows = service.read_upload(file.name, content)
        with typer.progressbar(length=total or 0, label=f"归集 {resource}", show_pos=True) as bar:
            last = [0]

            def progress(n: int) -> None:
                if total:
                    bar.update(n - last[0])
                else:
                    typer.echo(f"  {n} rows", err=True)
                last[0] = n

            with db.write() as s:
                ld = service.load_records(s, principal=CLI, code=resource, rows=rows, source=f"file:{file.name}",
                                          batch_size=batch, progress=progress)
        rep = ld.report
        typer.echo(f"批次 load #{ld.id}: 共 {ld.total} 行, 新增 {ld.inserted}, 更新 {ld.updated}, "
                   f"问题数据 {ld.rejected} (通过率 {rep.get('pass_rate', 0):.2%}, {rep.get('seconds')} s)")
        for f in rep.get("failures", []):
            typer.echo(f"  - {f['label_zh']} ({f['rule']}): {f['count']}  字段 {f['fields']}")
        if ld.rejected:
            typer.echo(f"问题数据已留存，查看: GET /api/v1/data/loads/{ld.id}/rejects")

    _run(go)


@data_app.command("report")
def report(load_id: int, data_dir: DataDirOpt = None) -> None:
    """Print a load's quality report as JSON."""
    from citybrain.data import service

    db = open_db(data_dir)

    def go():
        with db.read() as s:
            ld = service.get_load(s, principal=CLI, load_id=load_id)
            typer.echo(json.dumps(service.load_dict(ld), ensure_ascii=False, default=str, indent=2))

    _run(go)


@data_app.command("expire-grants")
def expire(data_dir: DataDirOpt = None) -> None:
    """Mark grants past their end date as expired (the exchange refuses them either way)."""
    from citybrain.data import service

    db = open_db(data_dir)

    def go():
        with db.write() as s:
            typer.echo(f"{service.expire_grants(s)} grants expired")

    _run(go)


@data_app.command("stats")
def stats(days: int = 7, data_dir: DataDirOpt = None) -> None:
    """Print catalogue and exchange statistics as JSON."""
    from citybrain.data import service

    db = open_db(data_dir)

    def go():
        with db.read() as s:
            out = {"catalog": service.catalog_stats(s), "exchange": service.exchange_stats(s, principal=CLI, days=days)}
        typer.echo(json.dumps(out, ensure_ascii=False, default=str, indent=2))

    _run(go)
