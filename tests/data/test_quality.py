import contextlib
import io

import openpyxl
import pytest
from sqlalchemy import select, text

from citybrain import codes
from citybrain.context import SYSTEM
from citybrain.data import demo, service
from citybrain.data.models import Population
from tests.data.conftest import LIC, LOWINCOME, POP


def _people(n, start):
    return list(demo.population_rows(n, seed=5, start=start))


def test_quality_rules_report_and_rejects(client, hub, dept_user):
    rows = _people(12, 50_000)
    rows[0]["id_number"] = rows[0]["id_number"][:17] + ("1" if rows[0]["id_number"][17] != "1" else "2")
    rows[1]["birth_date"] = "2099-02-01"
    rows[2]["gender"] = "未知"
    rows[3]["phone"] = "12345"
    rows[4]["name"] = ""
    rows[5]["birth_date"] = "1990-01-01" if rows[5]["id_number"][6:14] != "19900101" else "1991-01-01"
    rows[6]["area_code"] = "990000"
    rows[7] = dict(rows[8])  # duplicate key in one load
    h = dept_user("D-GAJ")
    r = client.post(f"/api/v1/data/resources/{POP}/records", json=rows, headers=h)
    assert r.status_code == 201, r.text
    load = r.json()
    assert (load["total"], load["inserted"], load["rejected"]) == (12, 4, 8)
    fails = {f["rule"]: f for f in load["report"]["failures"]}
    assert set(fails) == {"id_number", "date", "codes", "phone", "required", "consistency", "area_code", "unique"}
    # samples never show a full ID number
    assert all("*" in s["value"] for s in fails["id_number"]["samples"])
    rej = client.get(f"/api/v1/data/loads/{load['id']}/rejects", headers=h).json()
    assert len(rej) == 8
    assert rej[0]["reasons"] == [{"field": "id_number", "rule": "id_number"}]
    assert {x["row"] for x in rej} == {1, 2, 3, 4, 5, 6, 7, 9}


def test_upsert_is_incremental(client, hub, dept_user):
    h = dept_user("D-GAJ")
    rows = _people(5, 60_000)
    assert client.post(f"/api/v1/data/resources/{POP}/records", json=rows, headers=h).json()["inserted"] == 5
    rows[0]["phone"] = "13900000000"
    r = client.post(f"/api/v1/data/resources/{POP}/records", json={"records": rows[:2]}, headers=h).json()
    assert (r["inserted"], r["updated"], r["rejected"]) == (0, 2, 0)
    mixed = _people(8, 70_000)[:3] + rows[2:4]  # new and known keys in one batch
    r = client.post(f"/api/v1/data/resources/{POP}/records", json=mixed, headers=h).json()
    assert (r["inserted"], r["updated"], r["rejected"]) == (3, 2, 0)


def test_csv_with_chinese_headers_and_xlsx(client, hub, dept_user):
    h = dept_user("D-MZJ")
    p = _people(3, 70_000)
    csv_text = "身份证号,姓名,保障人数,月保障金额(元),镇街\n" + "\n".join(
        f"{x['id_number']},{x['name']},2,1240,南沙街道" for x in p) + "\n110105194912310021,坏数据,x,1,火星\n"
    r = client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                    files={"file": ("低保.csv", csv_text.encode("gb18030"), "text/csv")})
    assert r.status_code == 201, r.text
    assert (r.json()["inserted"], r.json()["rejected"]) == (3, 1)
    rules = {f["rule"] for f in r.json()["report"]["failures"]}
    assert rules == {"id_number", "type", "codes"}
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["id_number", "name", "persons", "amount", "town"])
    ws.append([p[0]["id_number"], p[0]["name"], 3, 1360, "珠江街道"])
    buf = io.BytesIO()
    wb.save(buf)
    r = client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                    files={"file": ("低保.xlsx", buf.getvalue(), "application/octet-stream")})
    assert r.status_code == 201 and r.json()["updated"] == 1
    # only the provider department may load
    r = client.post(f"/api/v1/data/resources/{POP}/records", json=[], headers=h)
    assert r.status_code == 403
    r = client.post(f"/api/v1/data/resources/{LOWINCOME}/upload", headers=h,
                    files={"file": ("x.json", b"{not json", "application/json")})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")


def test_cross_source_check_for_licences(hub):
    with hub.write() as s:
        person = service.exchange  # noqa: F841 - keep import use obvious
        known = next(demo.population_rows(1, seed=7))["id_number"]
        stranger = codes.make_id_number("440115", __import__("datetime").date(1980, 1, 2), 777)
        rows = [{"licence_no": f"T{i}", "licence_type": "居住证", "holder_name": "某某", "holder_id": h,
                 "issuer": "公安", "issued_on": "2024-01-01", "valid_from": "2024-01-01", "valid_to": "2029-01-01",
                 "status": "有效"} for i, h in enumerate([known, stranger, "not-a-code"])]
        load = service.load_records(s, principal=SYSTEM, code=LIC, rows=rows)
    rules = {f["rule"]: f["count"] for f in load.report["failures"]}
    assert load.inserted == 1 and rules == {"cross_source": 1, "consistency": 1}


def test_batches_written_behind_validation_keep_every_reject_and_count(hub):
    """Batches are written by a second thread while the next is validated: rejects of later batches still
    reach the report and the rejects table, uniqueness holds across batches, progress sees every batch."""
    rows = _people(23, 80_000)
    rows[7]["phone"] = "12345"  # second batch
    rows[16]["gender"] = "未知"  # fourth batch
    rows[21] = dict(rows[2])  # a key of the first batch again, in the last batch
    seen: list[int] = []
    with hub.write() as s:
        load = service.load_records(s, principal=SYSTEM, code=POP, rows=iter(rows), batch_size=5, commit_rows=5,
                                    progress=seen.append)
        load_id = load.id
    assert (load.status, load.total, load.inserted, load.updated, load.rejected) == ("done", 23, 20, 0, 3)
    assert {f["rule"]: f["count"] for f in load.report["failures"]} == {"phone": 1, "codes": 1, "unique": 1}
    assert seen[:3] == [5, 11, 16] and set(seen[3:]) == {23}  # after each batch, as when written in line
    with hub.read() as s:
        rej = service.load_rejects(s, principal=SYSTEM, load_id=load_id)
    assert [(x["row"], x["reasons"]) for x in rej] == [
        (8, [{"field": "phone", "rule": "phone"}]), (17, [{"field": "gender", "rule": "codes"}]),
        (22, [{"field": "id_number", "rule": "unique"}])]


def _fail_on_insert(db, id_number: str) -> None:
    """A trigger refusing one ID number: a database error in the middle of a load."""
    with db.write() as s:
        if db.is_sqlite:
            s.execute(text(f"CREATE TRIGGER boom BEFORE INSERT ON data_population WHEN NEW.id_number = "
                           f"'{id_number}' BEGIN SELECT RAISE(ABORT, 'boom'); END"))
        else:
            s.execute(text(f"CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN IF NEW.id_number = '{id_number}' "
                           f"THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"))
            s.execute(text("CREATE TRIGGER boom BEFORE INSERT ON data_population FOR EACH ROW "
                           "EXECUTE FUNCTION boom()"))
        s.commit()


@pytest.mark.parametrize(("commit_rows", "kept"), [(5, 17), (10, 11)])
def test_a_batch_failing_in_the_database_fails_the_load_and_keeps_the_groups_before(hub, commit_rows, kept):
    """Batches of 5 clean rows committed alone or in groups of >= 10 rows read: the failing batch's whole group
    is rolled back (its rejects too), the groups before stay, and the load's counts are what it kept."""
    rows = _people(27, 90_000)
    rows[3]["phone"] = "12345"  # a reject in the first group
    rows[11]["phone"] = "12345"  # a reject in the group that fails when groups are of 10
    _fail_on_insert(hub, rows[17]["id_number"])  # fourth batch of five
    with hub.write() as s, pytest.raises(Exception, match="boom"):
        service.load_records(s, principal=SYSTEM, code=POP, rows=rows, batch_size=5, commit_rows=commit_rows,
                             commit_seconds=3600)
    with hub.read() as s:
        load = service.list_loads(s, principal=SYSTEM, code=POP, limit=1)[0]
        stored = {x for (x,) in s.execute(select(Population.id_number).where(
            Population.id_number.in_([r["id_number"] for r in rows])))}
        rejects = service.load_rejects(s, principal=SYSTEM, load_id=load["id"])
    rejected = 2 if kept == 17 else 1
    assert (load["status"], load["inserted"], load["rejected"]) == ("failed", kept - rejected, rejected)
    assert stored == {r["id_number"] for r in rows[:kept]} - {rows[3]["id_number"], rows[11]["id_number"]}
    assert [x["row"] for x in rejects] == [4, 12][:rejected]


def test_a_failing_source_fails_the_load_and_keeps_the_written_batches(hub):
    """A source breaking off mid-group: the whole batches written before it are committed and counted."""
    rows = _people(12, 95_000)

    def source():
        yield from rows
        raise OSError("the file went away")

    with hub.write() as s, pytest.raises(OSError):
        service.load_records(s, principal=SYSTEM, code=POP, rows=source(), batch_size=5)
    with hub.read() as s:
        load = service.list_loads(s, principal=SYSTEM, code=POP, limit=1)[0]
        stored = {x for (x,) in s.execute(select(Population.id_number).where(
            Population.id_number.in_([r["id_number"] for r in rows])))}
    assert (load["status"], load["total"], load["inserted"]) == ("failed", 12, 10)
    assert stored == {r["id_number"] for r in rows[:10]}


def test_commit_groups_give_the_report_and_rows_of_batch_commits_and_a_reload_upserts(hub):
    """A load larger than its commit group, with failures in every group, reports and keeps exactly what
    committing each batch does; loading the rows again (some changed) updates them with new change numbers."""
    rows = _people(64, 70_000)
    for i in (2, 19, 33, 47, 60):
        rows[i]["phone"] = "12345"
    rows[25]["gender"] = "未知"
    rows[50] = dict(rows[8])  # a key again, two groups later
    results = []
    for commit_rows in (7, 20, 1000):  # each batch alone, groups of 3 batches, one group
        changed = [dict(r) for r in rows]
        for r in changed[::9]:
            r["residence_address"] = f"南沙区测试路{commit_rows}号"
        with hub.write() as s:
            load = service.load_records(s, principal=SYSTEM, code=POP, rows=changed, batch_size=7,
                                        commit_rows=commit_rows, commit_seconds=3600)
            load_id = load.id
        with hub.read() as s:
            stored = {r.id_number: (r.residence_address, r.seq, r.load_id) for r in s.scalars(
                select(Population).where(Population.id_number.in_([r["id_number"] for r in rows])))}
            rej = [(x["row"], x["reasons"]) for x in service.load_rejects(s, principal=SYSTEM, load_id=load_id)]
        results.append((load, stored, rej))
    (first, stored1, rej1), *later = results
    assert (first.status, first.total, first.inserted, first.updated, first.rejected) == ("done", 64, 57, 0, 7)
    for load, stored, rej in later:
        assert (load.status, load.total, load.inserted, load.updated, load.rejected) == ("done", 64, 0, 57, 7)
        assert load.report["failures"] == first.report["failures"]
        assert rej == rej1
        assert set(stored) == set(stored1)
        assert all(stored[k][2] == load.id and stored[k][1] > stored1[k][1] for k in stored)
    final = results[-1][1]
    assert {final[r["id_number"]][0] for r in rows[::9] if r["id_number"] in final} == {"南沙区测试路1000号"}
    assert len({v[1] for v in final.values()}) == 57  # one change number per row


def test_a_load_gives_the_collector_back_its_thresholds(hub):
    """The young-generation threshold is raised while a load runs and restored after it, also after a failure."""
    import gc

    before = gc.get_threshold()
    during = []

    def source(fail):
        for r in _people(12, 60_000 + 100 * fail):
            during.append(gc.get_threshold())
            yield r
        if fail:
            raise OSError("the file went away")

    for fail in (False, True):
        with hub.write() as s, (pytest.raises(OSError) if fail else contextlib.nullcontext()):
            service.load_records(s, principal=SYSTEM, code=POP, rows=source(fail), batch_size=500)
        assert gc.get_threshold() == before
    assert {t[0] for t in during} == {max(2 * service.COMMIT_ROWS, before[0])} != {before[0]} and {t[1:] for t in during} == {before[1:]}


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-Infinity", float("nan")])
def test_a_number_that_is_not_a_quantity_is_refused(raw):
    """NaN compares false with every bound, so it would pass min/max; it and infinities fail the type rule."""
    import datetime as dt

    from citybrain.data import quality

    lat = quality.compile_field({"name": "lat", "type": "number", "min": 3.0, "max": 54.0}, dt.date(2026, 1, 1))
    plain = quality.compile_field({"name": "value", "type": "number"}, dt.date(2026, 1, 1))
    for check in (lat, plain):
        with pytest.raises(quality.RuleFailed) as err:
            check(raw)
        assert err.value.args[0] == "type"
    assert lat(" 22.5 ") == 22.5 and plain("1e3") == 1000.0
