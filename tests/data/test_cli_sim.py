import threading
import time

import httpx
from sqlalchemy import func, select
from typer.testing import CliRunner

from citybrain.cli import app
from citybrain.data import demo
from citybrain.data.models import ExchangeLog, Load
from citybrain.sim import exchange as sim
from tests.data.conftest import POP
from tests.data.test_open import server  # noqa: F401 - fixture


def test_cli_load_prints_the_quality_report(hub, tmp_path):
    rows = list(demo.population_rows(30, seed=3, start=90_000))
    rows[2]["id_number"] = "110105194912310021"
    path = tmp_path / "people.csv"
    header = list(rows[0])
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(str(r[h]) for h in header) for r in rows) + "\n",
                    encoding="utf-8")
    res = CliRunner().invoke(app, ["data", "load", POP, str(path)])
    assert res.exit_code == 0, res.output
    assert "共 30 行" in res.output and "新增 29" in res.output and "身份证号校验失败" in res.output
    with hub.read() as s:
        assert s.scalar(select(Load.rejected).order_by(Load.id.desc()).limit(1)) == 1
    res = CliRunner().invoke(app, ["data", "load", "no-such-resource", str(path)])
    assert res.exit_code == 1 and "不存在" in res.output


def test_exchange_simulator_calls_the_api_with_its_key(server, hub):  # noqa: F811
    with hub.read() as s:
        before = s.scalar(select(func.count()).select_from(ExchangeLog))
    hub.dispose()
    stop = threading.Event()
    t = threading.Thread(target=sim.run, args=(server, stop), kwargs={"interval": 0.05}, daemon=True)
    t.start()
    time.sleep(2.5)
    stop.set()
    t.join(10)
    with hub.read() as s:
        after = s.scalar(select(func.count()).select_from(ExchangeLog))
        actors = set(s.scalars(select(ExchangeLog.actor).where(ExchangeLog.id > before)))
    assert after - before >= 5
    assert actors == {"apikey:城市运行管理中心-交换前置机"}
    assert httpx.get(f"{server}/healthz").status_code == 200
