"""`citybrain geo ...` — import and export areas and unit grids, look up a point (audited as system:cli)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from citybrain import context
from citybrain.cli_common import DataDirOpt, open_db
from citybrain.context import Principal
from citybrain.errors import Problem

geo_app = typer.Typer(help="区划与网格 areas and unit grids (GeoJSON)", no_args_is_help=True)
CLI = Principal(kind="system", id=None, name="cli", org_scope=None)

KindOpt = Annotated[str, typer.Option("--kind", help="area (行政区划) | grid (单元网格)")]


def _fail(p: Problem) -> None:
    typer.echo(f"错误 error: {p.detail_zh} / {p.detail_en}", err=True)
    for e in p.errors:
        typer.echo(f"  - {e.get('field')}: {e.get('message')}", err=True)
    raise typer.Exit(1)


@geo_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="GeoJSON FeatureCollection (WGS84 lon/lat)", exists=True,
                                         dir_okay=False, readable=True)],
    kind: KindOpt,
    data_dir: DataDirOpt = None,
) -> None:
    """Import areas or grids; exit 0 if every feature was stored, 2 if some were rejected, 1 on a bad file."""
    from citybrain.geo import service

    db = open_db(data_dir)
    context.set_principal(CLI)
    try:
        with db.write() as s:
            report = service.import_geojson(s, kind=kind, data=file.read_bytes(), source=str(file))
    except Problem as p:
        _fail(p)
        return
    typer.echo(f"导入 import #{report['import_id']} ({kind}): {report['total']} 个要素 features, "
               f"新增 created {report['created']}, 更新 updated {report['updated']}, 拒绝 rejected {report['rejected']}")
    for r in report["rejects"]:
        typer.echo(f"  ✗ #{r['index']} {r['code'] or '-'}: {r['reason_zh']} / {r['reason_en']}")
    if report["rejected"] > len(report["rejects"]):
        typer.echo(f"  … 共 {report['rejected']} 个被拒要素，见 all kept: citybrain geo rejects {report['import_id']}")
    raise typer.Exit(2 if report["rejected"] else 0)


@geo_app.command("export")
def export(
    kind: KindOpt,
    level: Annotated[str | None, typer.Option(help="Areas only: district | town | community")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export areas or grids as a GeoJSON FeatureCollection (stdout by default)."""
    from citybrain.geo import service

    db = open_db(data_dir)
    try:
        with db.read() as s:
            doc = service.export_geojson(s, kind=kind, level=level)
    except Problem as p:
        _fail(p)
        return
    text = json.dumps(doc, ensure_ascii=False)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        typer.echo(f"{len(doc['features'])} features -> {out}", err=True)
    else:
        sys.stdout.write(text + "\n")


@geo_app.command("locate")
def locate(lon: float, lat: float, data_dir: DataDirOpt = None) -> None:
    """Which unit grid covers a WGS84 point (exit 1 if none)."""
    from citybrain.geo import service

    db = open_db(data_dir)
    with db.read() as s:
        hit = service.locate(s, lon=lon, lat=lat)
    typer.echo(json.dumps(hit, ensure_ascii=False))
    raise typer.Exit(0 if hit else 1)


@geo_app.command("rejects")
def rejects(import_id: int, data_dir: DataDirOpt = None) -> None:
    """The features an import rejected, with reasons and the original feature (JSON lines)."""
    from citybrain.geo import service

    db = open_db(data_dir)
    try:
        with db.read() as s:
            rows = service.import_rejects(s, import_id=import_id)
    except Problem as p:
        _fail(p)
        return
    for r in rows:
        sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")


COMMANDS = {"geo": geo_app}
