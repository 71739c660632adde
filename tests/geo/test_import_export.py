"""GeoJSON import (per-feature errors kept aside, audited) and export, through the service and the CLI."""

from __future__ import annotations

import json

import orjson
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from citybrain import demo_district as dd
from citybrain.audit.models import AuditRecord
from citybrain.cli import app as cli_app
from citybrain.errors import Invalid
from citybrain.geo import service
from citybrain.geo.models import Rejected

COMM = dd.COMMUNITIES[0].code  # 440115001001


def square(x: float, y: float, d: float = 0.001) -> dict:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + d, y], [x + d, y + d], [x, y + d], [x, y]]]}


def feature(props: dict, geometry: dict | None) -> dict:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def fc(*features) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def _audits(db, action: str) -> list[AuditRecord]:
    with db.read() as s:
        return list(s.scalars(select(AuditRecord).where(AuditRecord.action == action)))


def test_export_then_import_round_trip(db):
    with db.read() as s:
        doc = service.export_geojson(s, kind="grid")
        some = doc["features"][5]["properties"]
        probe = doc["features"][5]["geometry"]["coordinates"][0][0]
        before = service.locate(s, lon=probe[0], lat=probe[1])
    assert len(doc["features"]) >= 1000 and some["parent_code"] == some["code"][:12]
    with db.write() as s:
        report = service.import_geojson(s, kind="grid", data=orjson.dumps(doc), source="roundtrip.geojson")
    assert (report["total"], report["created"], report["updated"], report["rejected"]) == (len(doc["features"]), 0,
                                                                                            len(doc["features"]), 0)
    with db.read() as s:
        assert service.export_geojson(s, kind="grid") == doc
        assert service.locate(s, lon=probe[0], lat=probe[1]) == before
    audit = _audits(db, "geo.import")
    assert len(audit) == 1 and audit[0].target_id == str(report["import_id"])
    assert audit[0].summary["after"]["updated"] == len(doc["features"])


def test_bad_features_are_counted_and_kept_with_reasons(db):
    bowtie = {"type": "Polygon", "coordinates": [[[100, 10], [100.01, 10.01], [100.01, 10], [100, 10.01], [100, 10]]]}
    with db.read() as s:
        existing = service.get_grid(s, code=f"{COMM}001")
    doc = fc(
        feature({"code": "44011500100199", "name": "新增旧编码网格"}, square(100.0, 10.0)),  # 0 ok (legacy code)
        feature({"code": "4401150010010", "name": "短"}, square(100.1, 10.0)),  # 1 bad code
        feature({"code": f"{COMM}101", "name": "自相交"}, bowtie),  # 2 invalid geometry
        feature({"code": f"{COMM}102", "name": "点"}, {"type": "Point", "coordinates": [100, 10]}),  # 3 not a polygon
        feature({"code": f"{COMM}103", "name": "经纬颠倒"}, square(22.78, 113.55)),  # 4 lat/lon swapped
        feature({"code": "44011500100199", "name": "重复"}, square(100.2, 10.0)),  # 5 duplicate in file
        feature({"code": f"{COMM}104", "name": "重叠"}, existing["geometry"]),  # 6 overlaps an existing grid
        feature({"code": f"{COMM}105", "parent_code": "440115002001"}, square(100.3, 10.0)),  # 7 wrong parent
        {"type": "Nonsense"},  # 8 not a feature
        feature({"code": f"{COMM}106"}, None),  # 9 no geometry
        feature({"code": f"{COMM}107", "name": "好的"}, square(100.4, 10.0)),  # 10 ok
    )
    with db.write() as s:
        report = service.import_geojson(s, kind="grid", data=doc, source="mixed.geojson")
    assert (report["total"], report["created"], report["updated"], report["rejected"]) == (11, 2, 0, 9)
    assert [r["index"] for r in report["rejects"]] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    reasons = {r["index"]: r["reason_en"] for r in report["rejects"]}
    assert "15 digits" in reasons[1] and "Self-intersection" in reasons[2] and "Polygon" in reasons[3]
    assert "lon/lat" in reasons[4] and "twice" in reasons[5] and f"overlaps {COMM}001" in reasons[6]
    assert "440115002001" in reasons[7] and "Feature" in reasons[8]
    assert all(r["reason_zh"] for r in report["rejects"])
    with db.read() as s:
        kept = service.import_rejects(s, import_id=report["import_id"])
        assert len(kept) == 9 and kept[0]["feature"] == doc["features"][1]  # the original, untouched
        assert s.query(Rejected).count() == 9
        assert service.locate(s, lon=100.0005, lat=10.0005)["grid_code"] == "440115001001099"
        assert service.locate(s, lon=100.4005, lat=10.0005)["grid_code"] == f"{COMM}107"
        assert service.get_grid(s, code=f"{COMM}104") is None
        assert service.list_imports(s)[0]["rejected"] == 9
    assert _audits(db, "geo.import")[0].summary["after"]["rejected"] == 9


def test_area_import_checks_codes_levels_and_parents(db):
    doc = fc(
        feature({"code": "440115001011", "name": "新社区", "level": "community"}, square(100, 10)),  # ok
        feature({"code": "440115001012", "name": "级别错", "level": "town"}, square(100.1, 10)),
        feature({"code": "440115001013", "name": "上级错", "parent_code": "440115002"}, square(100.2, 10)),
        feature({"code": "4401150", "name": "代码错"}, square(100.3, 10)),
        feature({"code": "440115001014"}, square(100.4, 10)),  # no name
    )
    with db.write() as s:
        report = service.import_geojson(s, kind="area", data=doc)
    assert (report["created"], report["rejected"]) == (1, 4)
    with db.read() as s:
        a = service.get_area(s, code="440115001011")
        assert a["parent_code"] == "440115001" and a["level"] == "community" and a["area_m2"] > 10_000
        assert "440115001011" in [f["id"] for f in service.areas_geojson(s, level="community")["features"]]


def test_whole_file_errors_store_nothing(db):
    for bad in (b"not json", b'{"type": "Feature"}', {"type": "FeatureCollection", "features": "x"}):
        with db.write() as s, pytest.raises(Invalid):
            service.import_geojson(s, kind="grid", data=bad)
    with db.write() as s, pytest.raises(Invalid):
        service.import_geojson(s, kind="building", data=fc())
    assert _audits(db, "geo.import") == []


def test_cli_import_export(db, tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli_app, ["geo", "export", "--kind", "area", "--level", "town"])
    assert r.exit_code == 0, r.output
    towns = json.loads(r.stdout)
    assert sorted(f["properties"]["code"] for f in towns["features"]) == sorted(t.code for t in dd.TOWNS)
    path = tmp_path / "grids.geojson"
    path.write_text(json.dumps(fc(feature({"code": f"{COMM}201", "name": "网格甲"}, square(101, 11)),
                                  feature({"code": "bad"}, square(101.1, 11)))), encoding="utf-8")
    r = runner.invoke(cli_app, ["geo", "import", str(path), "--kind", "grid"])
    assert r.exit_code == 2, r.output  # some rejected
    assert "rejected 1" in r.output and "bad" in r.output
    r = runner.invoke(cli_app, ["geo", "locate", "101.0005", "11.0005"])
    assert r.exit_code == 0 and json.loads(r.stdout)["grid_code"] == f"{COMM}201"
    r = runner.invoke(cli_app, ["geo", "locate", "0", "0"])
    assert r.exit_code == 1
    r = runner.invoke(cli_app, ["geo", "rejects", "1"])
    assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[0])["feature"]["properties"]["code"] == "bad"
    bad = tmp_path / "bad.geojson"
    bad.write_text("{", encoding="utf-8")
    r = runner.invoke(cli_app, ["geo", "import", str(bad), "--kind", "grid"])
    assert r.exit_code == 1 and "JSON" in r.output
    assert _audits(db, "geo.import")[0].actor == "system:cli"


def test_odd_json_values_are_kept_not_crashing(db):
    huge = 2**80
    doc = fc(feature({"code": huge, "name": "大数"}, square(100, 10)),
             feature({"code": f"{COMM}401", "name": "属性大数", "note": huge, "tags": [huge, "x"]}, square(100.5, 10)),
             feature({"code": f"{COMM}402", "name": "坐标大数"},
                     {"type": "Polygon", "coordinates": [[[huge, 0], [1, 0], [1, 1], [huge, 0]]]}))
    with db.write() as s:
        report = service.import_geojson(s, kind="grid", data=doc)
    assert (report["created"], report["rejected"]) == (1, 2)
    with db.read() as s:
        assert service.get_grid(s, code=f"{COMM}401")["note"] == str(huge)
        assert service.import_rejects(s, import_id=report["import_id"])[0]["feature"]["properties"]["code"] == huge


def test_control_characters_and_surrogates(db):
    doc = fc(feature({"code": f"{COMM}501", "name": "名\x00称"}, square(100, 10)),
             feature({"code": f"{COMM}50\x00", "name": "x"}, square(100.1, 10)),
             feature({"code": f"{COMM}502", "name": "ok", "note": "a\x00b\ud800", "\x00k": 1}, square(100.2, 10)),
             feature({"code": "\ud800", "name": "y"}, square(100.3, 10)))
    with db.write() as s:
        report = service.import_geojson(s, kind="grid", data=doc, source="src\x00.geojson")
    assert (report["created"], report["rejected"]) == (1, 3)
    assert "control" in report["rejects"][0]["reason_en"]
    with db.read() as s:
        g = service.get_grid(s, code=f"{COMM}502")
        assert g["note"] == "ab?" and g["k"] == 1
        assert service.list_imports(s)[0]["source"] == "src.geojson"
        assert len(service.import_rejects(s, import_id=report["import_id"])) == 3
