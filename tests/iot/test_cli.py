"""`citybrain iot ...` commands."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from citybrain.cli import app


def test_cli_import_gateway_key_check_and_purge(db, tmp_path):
    runner = CliRunner()
    csv = tmp_path / "d.csv"
    csv.write_text("name,model,org,lon,lat\n水位A,water_level,D-SWJ,113.55,22.78\n水位B,kettle,D-SWJ,,\n",
                   encoding="utf-8")
    r = runner.invoke(app, ["iot", "import", str(csv)])
    assert r.exit_code == 1  # one row failed
    report = json.loads(r.output)
    assert report["created"] == 1 and report["report"][1]["errors"][0]["field"] == "model"
    r = runner.invoke(app, ["iot", "gateway-key", "gw-a", "--org", "D-SWJ"])
    assert r.exit_code == 0 and r.output.startswith("cbk_")
    assert runner.invoke(app, ["iot", "gateway-key", "gw-b", "--org", "NOPE"]).exit_code == 2
    r = runner.invoke(app, ["iot", "check"])
    assert r.exit_code == 0 and json.loads(r.output) == {"offline": 0, "nodata_alarms": 0}
    r = runner.invoke(app, ["iot", "purge", "--days", "30"])
    assert r.exit_code == 0 and json.loads(r.output)["readings"] == 0
