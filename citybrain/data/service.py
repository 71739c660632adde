"""The data hub: catalogue (目录), base databases and collection (归集), sharing (共享), exchange (交换),
open data (开放) and statistics. Public functions take keyword arguments after the session."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gc
import hashlib
import hmac
import io
import operator
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from typing import Any, NamedTuple

import orjson
from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from citybrain import bus, clock, context, masking
from citybrain.audit import service as audit
from citybrain.context import Principal
from citybrain.data import exchangelog
from citybrain.data.models import (
    Counter,
    ExchangeDaily,
    ExchangeLog,
    Grant,
    Load,
    OpenApplication,
    Record,
    Reject,
    Resource,
    ResourceVersion,
    ShareRequest,
    Tombstone,
)
from citybrain.data.quality import BASE_TABLES, CHECKS, GRADES, MASKS, TYPES, Validator
from citybrain.db import get_db, upsert_insert, utcnow
from citybrain.errors import Conflict, Forbidden, Invalid, NotFound
from citybrain.identity import service as identity
from citybrain.workcal import WorkCalendar

CLASSIFICATIONS = {"base": ("基础信息资源", "Base"), "theme": ("主题信息资源", "Theme"),
                   "department": ("部门信息资源", "Department")}
SHARE_TYPES = {"unconditional": ("无条件共享", "Unconditional"), "conditional": ("有条件共享", "Conditional"),
               "none": ("不予共享", "Not shared")}
OPEN_TYPES = {"open": ("开放", "Open"), "conditional": ("有条件开放", "Conditionally open"),
              "closed": ("不开放", "Not open")}
SHARE_METHODS = ("api", "file", "subscription")
UPDATE_CYCLES = ("realtime", "daily", "weekly", "monthly", "quarterly", "yearly", "irregular")
ANSWER_WORKDAYS = 10  # STANDARDS.md §6.2: conditional requests are answered within 10 working days
MAX_GRANT_DAYS = 366 * 3
MAX_PAGE = 1000
LOAD_CACHE_KIB = 262144  # SQLite page cache of a loading connection (256 MiB)
# a load writes and commits its checked batches in groups: every COMMIT_ROWS rows read or COMMIT_SECONDS,
# whichever comes first (each commit writes the pages its group dirtied — with a random key, most of the
# unique index — once; a group sorted by key sweeps that index once)
COMMIT_ROWS = 50_000
COMMIT_SECONDS = 1.0
CODE_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z\-_.]{2,59}$")


def _today() -> dt.date:
    return exchangelog.local_day(utcnow())


def _authorize(session: Session, principal: Principal, permission: str, org_id: int | None = None) -> None:
    if principal.kind == "system":
        return
    if principal.can(permission) and (org_id is None or principal.sees_org(org_id)):
        return
    # release this session's (write) transaction before the denial is recorded in its own transaction
    session.rollback()
    identity.authorize(principal, permission, org_id=org_id)


def _org_names(session: Session) -> dict[int, Any]:
    return {o.id: o for o in identity.list_orgs(session)}


# --- catalogue ---------------------------------------------------------------------------------------------------------


def _resource(session: Session, code: str) -> Resource:
    r = session.scalar(select(Resource).where(Resource.code == code))
    if r is None:
        raise NotFound(f"信息资源 {code} 不存在", f"Resource {code} does not exist", code="resource_not_found")
    return r


def item_definitions(resource: Resource) -> list[dict[str, Any]]:
    """The resource's data items with their full quality rules (base-table rules cannot be weakened) and their
    sensitivity grade, `internal` where none was given (as the catalogue's validation reads it)."""
    if resource.base_table:
        base = {f["name"]: f for f in BASE_TABLES[resource.base_table].fields}
        out = []
        for it in resource.items:
            d = dict(base[it["name"]])
            for k in ("label", "grade", "mask", "filterable"):
                if it.get(k) is not None:
                    d[k] = it[k]
            d["grade"] = d.get("grade") or "internal"
            out.append(d)
        return out
    return [{**it, "grade": it.get("grade") or "internal"} for it in resource.items]


def resource_dict(r: Resource, orgs: dict[int, Any] | None = None) -> dict[str, Any]:
    """A resource's metadata as a plain dict."""
    org = (orgs or {}).get(r.provider_org_id)
    return {
        "id": r.id, "code": r.code, "name": r.name, "name_en": r.name_en, "classification": r.classification,
        "classification_label": CLASSIFICATIONS.get(r.classification, ("", ""))[0], "category": r.category,
        "provider_org_id": r.provider_org_id, "provider_code": r.provider_code,
        "provider_name": org.name if org else None, "summary": r.summary, "format": r.format,
        "items": item_definitions(r), "key_field": r.key_field, "update_cycle": r.update_cycle,
        "share_type": r.share_type, "share_type_label": SHARE_TYPES[r.share_type][0],
        "share_condition": r.share_condition, "legal_basis": r.legal_basis, "share_methods": r.share_methods,
        "open_type": r.open_type, "open_type_label": OPEN_TYPES[r.open_type][0], "base_table": r.base_table,
        "related_codes": r.related_codes or [], "tags": r.tags or [], "secret": r.secret, "status": r.status,
        "version": r.version, "published_at": r.published_at, "created_at": r.created_at,
        "updated_at": r.updated_at,
    }


def _validate_resource(data: dict[str, Any]) -> None:
    errs: list[dict[str, str]] = []

    def bad(field: str, zh: str) -> None:
        errs.append({"field": field, "message": zh})

    if not CODE_RE.match(data.get("code") or ""):
        bad("code", "资源代码须为 3-60 位字母、数字、-、_ 或 .")
    if not (data.get("name") or "").strip():
        bad("name", "资源名称必填")
    if data.get("classification") not in CLASSIFICATIONS:
        bad("classification", "分类须为 base / theme / department")
    share, open_ = data.get("share_type"), data.get("open_type")
    if share not in SHARE_TYPES:
        bad("share_type", "共享类型须为 unconditional / conditional / none")
    if open_ not in OPEN_TYPES:
        bad("open_type", "开放属性须为 open / conditional / closed")
    if share in ("conditional", "none") and not (data.get("legal_basis") or "").strip():
        bad("legal_basis", "有条件共享或不予共享须注明法律、行政法规或政策依据")
    if share == "conditional" and not (data.get("share_condition") or "").strip():
        bad("share_condition", "有条件共享须写明共享条件")
    if data.get("secret") and (share != "none" or open_ != "closed"):
        bad("secret", "涉密资源不得共享或开放")
    if share == "none" and open_ != "closed":
        bad("open_type", "不予共享的资源不得开放")
    methods = data.get("share_methods") or []
    if share != "none" and not methods:
        bad("share_methods", "须至少选择一种共享方式")
    for mth in methods:
        if mth not in SHARE_METHODS:
            bad("share_methods", f"未知共享方式 {mth}")
    if data.get("update_cycle") not in UPDATE_CYCLES:
        bad("update_cycle", f"更新周期须为 {' / '.join(UPDATE_CYCLES)}")
    base = data.get("base_table")
    if base is not None and base not in BASE_TABLES:
        bad("base_table", f"未知基础库 {base}")
    items = data.get("items") or []
    if not items:
        bad("items", "须至少有一个信息项")
    names = [it.get("name") for it in items]
    if len(set(names)) != len(names):
        bad("items", "信息项名称重复")
    base_fields = {f["name"]: f for f in BASE_TABLES[base].fields} if base in BASE_TABLES else None
    for i, it in enumerate(items):
        name = it.get("name") or ""
        if not re.match(r"^[a-z][a-z0-9_]{0,59}$", name):
            bad(f"items.{i}.name", "信息项名称须为小写字母开头的字母、数字或下划线")
            continue
        if base_fields is not None and name not in base_fields:
            bad(f"items.{i}.name", f"基础库 {base} 没有信息项 {name}")
        if base_fields is None and it.get("type", "string") not in TYPES:
            bad(f"items.{i}.type", f"数据类型须为 {' / '.join(TYPES)}")
        grade = it.get("grade") or (base_fields or {}).get(name, {}).get("grade") or "internal"
        if grade not in GRADES:
            bad(f"items.{i}.grade", "敏感级别须为 public / internal / sensitive")
        if it.get("mask") and it["mask"] not in MASKS:
            bad(f"items.{i}.mask", f"脱敏规则须为 {' / '.join(MASKS)}")
        if it.get("check") and it["check"] not in CHECKS:
            bad(f"items.{i}.check", f"校验规则须为 {' / '.join(CHECKS)}")
        if it.get("pattern"):
            try:
                re.compile(it["pattern"])
            except re.error:
                bad(f"items.{i}.pattern", "正则表达式无效")
    key = data.get("key_field")
    if base_fields is not None:
        if key and key != BASE_TABLES[base].key:
            bad("key_field", f"基础库 {base} 的主键是 {BASE_TABLES[base].key}")
        if BASE_TABLES[base].key not in names:
            bad("items", f"须包含主键信息项 {BASE_TABLES[base].key}")
    elif key not in names:
        bad("key_field", "主键须是一个信息项")
    if errs:
        raise Invalid("信息资源元数据校验未通过：" + "；".join(e["message"] for e in errs[:3]),
                      "Catalogue metadata is invalid: " + ", ".join(e["field"] for e in errs[:5]), errors=errs)


def _search_text(data: dict[str, Any], provider_name: str) -> str:
    parts = [data.get("code"), data.get("name"), data.get("name_en"), data.get("summary"), data.get("category"),
             provider_name, " ".join(data.get("tags") or [])]
    parts += [it.get("label") or it.get("name") for it in data.get("items") or []]
    return " ".join(p for p in parts if p).lower()


_RESOURCE_FIELDS = ("code", "name", "name_en", "classification", "category", "summary", "format", "items",
                    "key_field", "update_cycle", "share_type", "share_condition", "legal_basis", "share_methods",
                    "open_type", "base_table", "related_codes", "tags", "secret")


def create_resource(session: Session, *, principal: Principal, data: dict[str, Any],
                    provider_code: str | None = None, publish: bool = True) -> Resource:
    """Register a catalogue resource (编目); 不予共享/有条件共享 without a legal basis is refused (422)."""
    data = {k: data.get(k) for k in _RESOURCE_FIELDS}
    data["share_methods"] = data.get("share_methods") or (["api"] if data.get("share_type") != "none" else [])
    data["update_cycle"] = data.get("update_cycle") or "daily"
    data["format"] = data.get("format") or "database"
    if data.get("base_table") and not data.get("key_field"):
        data["key_field"] = BASE_TABLES[data["base_table"]].key if data["base_table"] in BASE_TABLES else None
    _validate_resource(data)
    if provider_code:
        org = identity.org_by_code(session, code=provider_code)
        if org is None:
            raise Invalid(f"提供部门 {provider_code} 不存在", f"Provider {provider_code} does not exist",
                          errors=[{"field": "provider_code", "message": "unknown organisation"}])
    elif principal.org_id:
        org = identity.get_org(session, org_id=principal.org_id)
    else:
        raise Invalid("须指定提供部门", "A provider department is required",
                      errors=[{"field": "provider_code", "message": "required"}])
    _authorize(session, principal, "data.catalog.manage", org.id)
    if session.scalar(select(Resource.id).where(Resource.code == data["code"])):
        raise Conflict(f"资源代码 {data['code']} 已存在", f"Resource code {data['code']} exists",
                       code="resource_exists")
    now = utcnow()
    data.update(related_codes=data.get("related_codes") or [], tags=data.get("tags") or [],
                secret=bool(data.get("secret")), summary=data.get("summary") or "")
    r = Resource(**data, provider_org_id=org.id, provider_code=org.code,
                 status="published" if publish else "draft", search_text=_search_text(data, org.name),
                 published_at=now if publish else None, created_at=now, updated_at=now, version=1)
    session.add(r)
    session.flush()
    session.add(ResourceVersion(resource_id=r.id, version=1, snapshot=orjson.loads(orjson.dumps(
        resource_dict(r), default=str)), changed_by=principal.label, changed_at=now))
    _META.clear()
    audit.commit(session, action="data.resource.create", target_type="data_resource", target_id=r.code,
                 after={"code": r.code, "name": r.name, "share_type": r.share_type, "open_type": r.open_type,
                        "provider": org.code})
    return r


def update_resource(session: Session, *, principal: Principal, code: str, changes: dict[str, Any]) -> Resource:
    """Change a resource's metadata; the version grows and the old version is kept."""
    r = _resource(session, code)
    _authorize(session, principal, "data.catalog.manage", r.provider_org_id)
    before = resource_dict(r)
    data = {k: getattr(r, k) for k in _RESOURCE_FIELDS}
    for k, v in changes.items():
        if k in _RESOURCE_FIELDS and k != "code" and v is not None:
            data[k] = v
    if data.get("base_table") != r.base_table:
        raise Invalid("不能更改资源所在基础库", "The base database of a resource cannot change",
                      errors=[{"field": "base_table", "message": "immutable"}])
    _validate_resource(data)
    status = changes.get("status")
    if status is not None and status not in ("draft", "published", "retired"):
        raise Invalid("状态须为 draft / published / retired", "status must be draft, published or retired",
                      errors=[{"field": "status", "message": "invalid"}])
    for k, v in data.items():
        setattr(r, k, v)
    now = utcnow()
    if status:
        if status == "published" and r.published_at is None:
            r.published_at = now
        r.status = status
    r.version += 1
    r.updated_at = now
    org = identity.get_org(session, org_id=r.provider_org_id)
    r.search_text = _search_text(data, org.name)
    session.flush()
    after = resource_dict(r)
    session.add(ResourceVersion(resource_id=r.id, version=r.version,
                                snapshot=orjson.loads(orjson.dumps(after, default=str)),
                                changed_by=principal.label, changed_at=now))
    _META.clear()
    changed = {k: after[k] for k in after if k not in ("updated_at", "version") and after[k] != before.get(k)}
    audit.commit(session, action="data.resource.update", target_type="data_resource", target_id=r.code,
                 before={k: before.get(k) for k in changed}, after={**changed, "version": r.version})
    return r


def get_resource(session: Session, *, code: str) -> dict[str, Any]:
    """One resource's metadata."""
    return resource_dict(_resource(session, code), _org_names(session))


def resource_versions(session: Session, *, code: str) -> list[dict[str, Any]]:
    """Every version of a resource, newest first."""
    r = _resource(session, code)
    rows = session.scalars(select(ResourceVersion).where(ResourceVersion.resource_id == r.id)
                           .order_by(ResourceVersion.version.desc()))
    return [{"version": v.version, "changed_by": v.changed_by, "changed_at": v.changed_at, "snapshot": v.snapshot}
            for v in rows]


def list_resources(session: Session, *, q: str | None = None, classification: str | None = None,
                   share_type: str | None = None, open_types: Iterable[str] | None = None,
                   provider_code: str | None = None, status: str | None = "published",
                   base_table: str | None = None, limit: int = 20, offset: int = 0) -> tuple[int, list[dict]]:
    """Search the catalogue: Chinese substring search over names, summaries, items and tags, plus filters."""
    stmt = select(Resource)
    if status:
        stmt = stmt.where(Resource.status == status)
    if classification:
        stmt = stmt.where(Resource.classification == classification)
    if share_type:
        stmt = stmt.where(Resource.share_type == share_type)
    if open_types:
        stmt = stmt.where(Resource.open_type.in_(list(open_types)))
    if base_table:
        stmt = stmt.where(Resource.base_table == base_table)
    if provider_code:
        stmt = stmt.where(Resource.provider_code == provider_code)
    order = [Resource.code]
    if q and q.strip():
        terms = [t for t in re.split(r"\s+", q.strip().lower()) if t][:8]
        for t in terms:
            esc = t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(Resource.search_text.like(f"%{esc}%", escape="\\"))
        first = terms[0].replace("%", "")
        order = [func.coalesce(func.nullif(func.instr(Resource.name, first), 0), 999)
                 if session.get_bind().dialect.name == "sqlite"
                 else func.coalesce(func.nullif(func.strpos(Resource.name, first), 0), 999), Resource.code]
    limit = max(1, min(limit, 200))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(*order).limit(limit).offset(max(0, offset))).all()
    orgs = _org_names(session)
    return total, [resource_dict(r, orgs) for r in rows]


def catalog_stats(session: Session) -> dict[str, Any]:
    """Catalogue statistics: totals by classification, sharing and open attribute, the sharing rate."""
    rows = session.execute(select(Resource.classification, Resource.share_type, Resource.open_type,
                                  Resource.provider_org_id).where(Resource.status == "published")).all()
    total = len(rows)
    by_share = {k: 0 for k in SHARE_TYPES}
    by_open = {k: 0 for k in OPEN_TYPES}
    by_class = {k: 0 for k in CLASSIFICATIONS}
    by_provider: dict[int, int] = {}
    for c, s, o, p in rows:
        by_share[s] += 1
        by_open[o] += 1
        by_class[c] = by_class.get(c, 0) + 1
        by_provider[p] = by_provider.get(p, 0) + 1
    orgs = _org_names(session)
    shared = by_share["unconditional"] + by_share["conditional"]
    return {
        "resources_total": total, "by_share_type": by_share, "by_open_type": by_open,
        "by_classification": by_class,
        "by_provider": sorted(({"org_id": k, "name": orgs[k].name if k in orgs else str(k), "resources": v}
                               for k, v in by_provider.items()), key=lambda x: -x["resources"]),
        "sharing_rate": round(shared / total, 4) if total else 0.0,
        "open_rate": round((by_open["open"] + by_open["conditional"]) / total, 4) if total else 0.0,
        "providers": len(by_provider),
    }


# --- collection (归集) ----------------------------------------------------------------------------------------------


def _next_seq(conn, name: str, n: int) -> int:
    """Reserve `n` change numbers of a table; returns the first (the row lock serialises concurrent loads)."""
    res = conn.execute(update(Counter).where(Counter.name == name).values(value=Counter.value + n))
    if res.rowcount == 0:
        conn.execute(Counter.__table__.insert().values(name=name, value=n))
        return 1
    return conn.scalar(select(Counter.value).where(Counter.name == name)) - n + 1


def read_upload(filename: str, content: bytes) -> Iterator[dict[str, Any]]:
    """Rows of an uploaded CSV (UTF-8 or GB18030), JSON (array or JSON lines) or XLSX file."""
    name = (filename or "").lower()
    if name.endswith(".xlsx"):
        from openpyxl import load_workbook

        try:
            wb = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
        except Exception as exc:
            raise Invalid("无法读取 Excel 文件", "The XLSX file cannot be read", code="bad_file") from exc
        ws = wb.active
        it = ws.iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(it, [])]
        for row in it:
            if row is None or all(v is None for v in row):
                continue
            yield {h: v for h, v in zip(header, row, strict=False) if h}
        return
    if name.endswith(".json") or name.endswith(".jsonl") or content[:1] in (b"[", b"{"):
        try:
            doc = orjson.loads(content)
            rows = doc if isinstance(doc, list) else doc.get("records") or doc.get("rows") or [doc]
        except orjson.JSONDecodeError:
            try:
                rows = [orjson.loads(line) for line in content.splitlines() if line.strip()]
            except orjson.JSONDecodeError as exc:
                raise Invalid("JSON 文件格式错误", "The JSON file is malformed", code="bad_file") from exc
        for row in rows:
            yield row if isinstance(row, dict) else {"__invalid__": row}
        return
    for enc in ("utf-8-sig", "gb18030"):
        try:
            text = content.decode(enc)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise Invalid("文件编码无法识别（请使用 UTF-8 或 GB18030）", "Unknown file encoding (use UTF-8 or GB18030)",
                      code="bad_file")
    yield from csv.DictReader(io.StringIO(text))


def _upsert_stmt(conn, table, index_elements: list[str], update_cols: list[str]):
    ins = upsert_insert(conn, table)
    return ins.on_conflict_do_update(index_elements=index_elements,
                                     set_={c: getattr(ins.excluded, c) for c in update_cols})


CROSS_SOURCE = {"licence"}  # base tables whose rows are checked against other base tables


def _cross_source(conn, resource: Resource, batch: list[tuple[int, dict]],
                  validator: Validator) -> tuple[list[tuple[int, dict]], list[tuple[int, dict, list]]]:
    """多元校核 across base databases: a licence holder must exist in the population or legal-entity base."""
    if resource.base_table not in CROSS_SOURCE:
        return batch, []
    pop, ent = BASE_TABLES["population"].table, BASE_TABLES["legal_entity"].table
    ids = {r["holder_id"] for _, r in batch}
    known: set[str] = set()
    id_list = list(ids)
    for i in range(0, len(id_list), 900):
        chunk = id_list[i:i + 900]
        known.update(conn.scalars(select(pop.c.id_number).where(pop.c.id_number.in_(chunk))))
        known.update(conn.scalars(select(ent.c.credit_code).where(ent.c.credit_code.in_(chunk))))
    good, bad = [], []
    for row_no, r in batch:
        if r["holder_id"] in known:
            good.append((row_no, r))
        else:
            validator.fail_external(row_no, "holder_id", "cross_source", r["holder_id"])
            bad.append((row_no, r, [{"field": "holder_id", "rule": "cross_source"}]))
    return good, bad


class _Prepared(NamedTuple):
    """A group of clean rows made ready for the driver (in the reading thread), written by `_write_prepared`."""

    rows: list[dict]
    cols: list[str]
    payload: Any  # the rows as one JSON text (SQLite: arrays in `cols` order; PostgreSQL: objects)


def _prepare_batch(resource: Resource, rows: list[dict], sqlite: bool) -> _Prepared:
    """Sort a base-table group by key (B-tree inserts stay local) and lay its values out for the driver."""
    if not resource.base_table or not rows:
        return _Prepared(rows, [], None)
    bt = BASE_TABLES[resource.base_table]
    rows = sorted(rows, key=operator.itemgetter(bt.key))
    cols = [n for n in bt.columns if n in rows[0]]
    get = operator.itemgetter(*cols) if len(cols) > 1 else (lambda r: (r[cols[0]],))
    # one JSON text: arrays on SQLite (dates as ISO text, how SQLite keeps them), objects named by column
    # on PostgreSQL (`json_populate_recordset` types them by the table's columns)
    if sqlite:
        return _Prepared(rows, cols, orjson.dumps([get(r) for r in rows]))
    return _Prepared(rows, cols, orjson.dumps(rows).decode())  # clean rows: named by column


def _write_prepared(conn, resource: Resource, load_id: int, prep: _Prepared, now: dt.datetime) -> tuple[int, int]:
    """Upsert clean rows; returns (inserted, updated)."""
    batch = prep.rows
    if not batch:
        return 0, 0
    if resource.base_table:
        bt = BASE_TABLES[resource.base_table]
        table, key, cols = bt.table, bt.key, prep.cols
        all_cols = cols + ["seq", "load_id", "updated_at"]
        upsert = f"ON CONFLICT ({key}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in all_cols if c != key)
        if conn.dialect.name == "sqlite":
            # few statements, each run by SQLite without the GIL (the loading thread validates the next batch
            # meanwhile): the change numbers and the highest rowid in one, then the whole batch read from its
            # JSON text in one. Inserted rows take rowids above that maximum (this transaction holds the write
            # lock), so the rowid growth counts them.
            got = conn.exec_driver_sql(
                f"UPDATE {Counter.__tablename__} SET value = value + ? WHERE name = ? "
                f"RETURNING value, (SELECT coalesce(max(id), 0) FROM {table.name})",
                (len(batch), resource.base_table)).first()
            if got is None:
                first = _next_seq(conn, resource.base_table, len(batch))
                top = conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {table.name}").scalar()
            else:
                first, top = got[0] - len(batch) + 1, got[1]
            stamp = now.astimezone(dt.UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
            values = ", ".join(f"value ->> {i}" for i in range(len(cols)))
            conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(all_cols)}) SELECT {values}, ? + key, ?, ? "
                                 f"FROM json_each(?) WHERE true {upsert}", (first, load_id, stamp, prep.payload))
            inserted = conn.exec_driver_sql(f"SELECT coalesce(max(id), 0) FROM {table.name}").scalar() - top
            return inserted, len(batch) - inserted
        # PostgreSQL: one upsert reading the batch from its JSON text (typed by the table's row type), which
        # also counts the inserts
        first = _next_seq(conn, resource.base_table, len(batch))
        col_list = ", ".join(all_cols)
        inserted = conn.exec_driver_sql(
            f"WITH up AS (INSERT INTO {table.name} ({col_list}) SELECT {', '.join(f'r.{c}' for c in cols)}, "
            f"%s + r.ordinality - 1, %s, %s FROM json_populate_recordset(NULL::{table.name}, %s::json) "
            f"WITH ORDINALITY AS r {upsert} RETURNING (xmax = 0) AS new) SELECT count(*) FILTER (WHERE new) FROM up",
            (first, load_id, now, prep.payload)).scalar()
        return inserted, len(batch) - inserted
    first = _next_seq(conn, "record", len(batch))
    table = Record.__table__
    key = resource.key_field
    keys = [str(r[key]) for r in batch]
    existing = set()
    for i in range(0, len(keys), 900):
        existing.update(conn.scalars(select(table.c.record_key).where(
            table.c.resource_id == resource.id, table.c.record_key.in_(keys[i:i + 900]))))
    rows = [{"resource_id": resource.id, "record_key": str(r[key]),
             "data": orjson.loads(orjson.dumps(r, default=str)), "seq": first + i, "load_id": load_id,
             "updated_at": now} for i, r in enumerate(batch)]
    conn.execute(_upsert_stmt(conn, table, ["resource_id", "record_key"], ["data", "seq", "load_id", "updated_at"]),
                 rows)
    return sum(1 for k in keys if k not in existing), sum(1 for k in keys if k in existing)


class _Writer:
    """Writes a load's groups of rows in one background thread, one at a time and in order, while the loading
    thread validates the next group (the database steps without the GIL). `submit` first waits for the group
    before, so at most one is in flight; `wait` returns the counts of the group finished since the last call
    and re-raises a failed group's error."""

    def __init__(self, write: Callable[..., tuple[int, int, int]]):
        self._write = write
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="data-load")
        self._pending: tuple[Future, int] | None = None
        self.failed = False  # a group failed in the database

    def wait(self) -> list[tuple[int, int, int, int]]:
        """[(inserted, updated, rejected, rows read when the group was cut)] of the finished group, if any."""
        if self._pending is None:
            return []
        fut, read = self._pending
        self._pending = None
        self.failed = fut.exception() is not None
        return [(*fut.result(), read)]

    def submit(self, read: int, *args: Any) -> list[tuple[int, int, int, int]]:
        done = self.wait()
        self._pending = (self._pool.submit(self._write, *args), read)
        return done

    def close(self) -> list[tuple[int, int, int, int]]:
        """Wait for the group in flight and stop the thread; the group's counts if it was committed."""
        done = []
        if self._pending is not None:
            fut = self._pending[0]
            futures_wait([fut])
            if fut.exception() is None:
                done = self.wait()
            else:
                self.failed = True
        self._pool.shutdown(wait=True)
        return done


_GC_LOCK = threading.Lock()
_GC_LOADS: list[Any] = [0, None]  # loads running in the process, the collector's thresholds before the first


@contextlib.contextmanager
def _fewer_gc_passes(young: int) -> Iterator[None]:
    """Raise the collector's young-generation threshold to `young` while loads run (the last one to end
    restores it). A batch allocates thousands of tuples that die with it; at the default threshold (700)
    they set off a collection every ~300 rows and, through the older generations, a full pass over the
    process's heap every ~30,000 rows. Nearly all of these objects are freed by reference counting, so the
    collector still runs when real garbage builds up."""
    with _GC_LOCK:
        if _GC_LOADS[0] == 0:
            _GC_LOADS[1] = gc.get_threshold()
            gc.set_threshold(max(young, _GC_LOADS[1][0]), *_GC_LOADS[1][1:])
        _GC_LOADS[0] += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _GC_LOADS[0] -= 1
            if _GC_LOADS[0] == 0:
                gc.set_threshold(*_GC_LOADS[1])


def load_records(session: Session, *, principal: Principal, code: str, rows: Iterable[dict[str, Any]],
                 source: str = "api", batch_size: int = 5000, commit_rows: int | None = None,
                 commit_seconds: float | None = None, progress: Callable[[int], None] | None = None) -> Load:
    """Collect rows into a resource (upsert by key, incremental) under its quality rules; failing rows are
    kept aside with their reasons and the load's quality report counts failures by rule with samples."""
    commit_rows = max(commit_rows or COMMIT_ROWS, batch_size)
    commit_seconds = COMMIT_SECONDS if commit_seconds is None else commit_seconds
    resource = _resource(session, code)
    _authorize(session, principal, "data.load", resource.provider_org_id)
    if resource.status == "retired":
        raise Conflict("资源已停用，不能归集", "The resource is retired", code="resource_retired")
    fields = item_definitions(resource)
    consistency = BASE_TABLES[resource.base_table].consistency if resource.base_table else None
    validator = Validator(fields, resource.key_field, consistency, today=_today())
    load = Load(resource_id=resource.id, provider_org_id=resource.provider_org_id, source=source[:200],
                status="running", actor=principal.label, started_at=utcnow())
    session.add(load)
    session.commit()
    # the rows are checked in batches and written in groups of batches (every `commit_rows` rows read or
    # `commit_seconds`), each group sorted by key in one transaction on a connection of its own, by a second
    # thread while the next group is checked: a failure rolls back the group being written only
    conn = session.get_bind().connect()
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:  # a large page cache for random-key index inserts (the connection's own is restored at the end)
        cache_size = conn.exec_driver_sql("PRAGMA cache_size").scalar()
        conn.exec_driver_sql(f"PRAGMA cache_size=-{LOAD_CACHE_KIB}")
        conn.commit()
    load_id = load.id
    rej_table = Reject.__table__
    total = inserted = updated = rejected = 0
    t0 = time.perf_counter()
    batch: list[tuple[int, dict]] = []
    rejects: list[dict[str, Any]] = []

    def write(prep: _Prepared, rejects: list[dict[str, Any]], now: dt.datetime) -> tuple[int, int, int]:
        i, u = _write_prepared(conn, resource, load_id, prep, now)
        if rejects:  # one statement (no GIL hand-over per row while the next batch is checked)
            doc = orjson.dumps([(r["row_no"], r["record"], r["reasons"]) for r in rejects])
            if sqlite:
                conn.exec_driver_sql(f"INSERT INTO {rej_table.name} (load_id, row_no, record, reasons) "
                                     f"SELECT ?, value ->> 0, value -> 1, value -> 2 FROM json_each(?)", (load_id, doc))
            else:
                conn.exec_driver_sql(f"INSERT INTO {rej_table.name} (load_id, row_no, record, reasons) "
                                     f"SELECT %s, (e ->> 0)::int, e -> 1, e -> 2 FROM json_array_elements(%s::json) "
                                     f"WITH ORDINALITY AS x(e, i) ORDER BY i", (load_id, doc.decode()))
        conn.commit()
        return i, u, len(rejects)

    writer = _Writer(write)

    group: list[dict] = []  # clean rows of the batches checked since the last group was cut (dicts of plain
    # values are not tracked by the garbage collector; tuples holding them would be, 50,000 at a time)
    group_rejects: list[dict[str, Any]] = []
    group_start = time.monotonic()

    def count(done: list[tuple[int, int, int, int]]) -> None:
        nonlocal inserted, updated, rejected
        for i, u, r, read in done:
            inserted += i
            updated += u
            rejected += r
            if progress:
                progress(read)

    def cut() -> None:
        """Hand the open group to the writer (sorted by key: its index inserts sweep the B-tree once)."""
        nonlocal group, group_rejects, group_start
        if group or group_rejects:
            count(writer.submit(total, _prepare_batch(resource, group, sqlite), group_rejects, utcnow()))
        group, group_rejects, group_start = [], [], time.monotonic()

    def flush(last: bool = False) -> None:
        nonlocal batch, rejects
        if resource.base_table in CROSS_SOURCE:  # reads on the load's connection: the group before must be done
            count(writer.wait())
        good, bad = _cross_source(conn, resource, batch, validator)
        for row_no, r, reasons in bad:
            rejects.append({"load_id": load_id, "row_no": row_no,
                            "record": orjson.loads(orjson.dumps(r, default=str)), "reasons": reasons})
        group.extend([r for _, r in good])
        group_rejects.extend(rejects)
        batch, rejects = [], []
        if last or len(group) + len(group_rejects) >= commit_rows or time.monotonic() - group_start >= commit_seconds:
            cut()

    check, normalise = validator.check, validator.normalise_keys
    try:
        try:
            with _fewer_gc_passes(2 * commit_rows):  # a group's rows laid out as tuples for its JSON, once
                for raw in rows:
                    total += 1
                    if not isinstance(raw, dict) or "__invalid__" in raw:
                        rejects.append({"load_id": load_id, "row_no": total, "record": {"value": str(raw)[:500]},
                                        "reasons": [{"field": "", "rule": "type"}]})
                        validator.fail_external(total, "", "type", None)
                        continue
                    clean, errs = check(total, normalise(raw))
                    if clean is None:
                        rejects.append({"load_id": load_id, "row_no": total,
                                        "record": orjson.loads(orjson.dumps(raw, default=str)), "reasons": errs})
                    else:
                        batch.append((total, clean))
                    if len(batch) >= batch_size or len(rejects) >= batch_size:
                        flush()
                flush(last=True)
        except Exception:
            if not writer.failed:  # the source or a check broke off: the whole batches checked before it are kept
                with contextlib.suppress(Exception):
                    cut()
            raise
        finally:
            # the group in flight ends (committed or not) before the connection is used again
            count(writer.close())
    except Exception:
        conn.rollback()
        session.rollback()
        audit.reset_session_head(session)
        load = session.get(Load, load_id)
        load.status, load.finished_at = "failed", utcnow()
        load.total, load.inserted, load.updated, load.rejected = total, inserted, updated, rejected
        audit.commit(session, action="data.load", target_type="data_resource", target_id=code, outcome="failure",
                     after={"load_id": load_id, "total": total})
        raise
    finally:
        if sqlite:
            conn.exec_driver_sql(f"PRAGMA cache_size={int(cache_size)}")
            conn.commit()
        conn.close()
    elapsed = time.perf_counter() - t0
    load = session.get(Load, load_id)
    load.status, load.finished_at = "done", utcnow()
    load.total, load.inserted, load.updated, load.rejected = total, inserted, updated, rejected
    load.report = {"total": total, "accepted": inserted + updated, "inserted": inserted, "updated": updated,
                   "rejected": rejected, "pass_rate": round((inserted + updated) / total, 4) if total else 1.0,
                   "seconds": round(elapsed, 3), "failures": validator.report()}
    audit.commit(session, action="data.load", target_type="data_resource", target_id=code,
                 after={"load_id": load_id, "source": source, "total": total, "inserted": inserted,
                        "updated": updated, "rejected": rejected})
    return load


MAX_DELETE = 10_000


def delete_records(session: Session, *, principal: Principal, code: str, keys: list[str], reason: str) -> dict:
    """Delete records by key (provider department, with a reason); each deletion gets a change number and
    a tombstone, so consumers pulling changes since a cursor see it. Unknown keys are returned, not errors."""
    resource = _resource(session, code)
    _authorize(session, principal, "data.load", resource.provider_org_id)
    reason = (reason or "").strip()
    keys = list(dict.fromkeys(str(k).strip() for k in keys if str(k).strip()))
    problems = []
    if not reason:
        problems.append({"field": "reason", "message": "删除须说明理由 a reason is required"})
    if not keys or len(keys) > MAX_DELETE:
        problems.append({"field": "keys", "message": f"1-{MAX_DELETE} keys"})
    if problems:
        raise Invalid("删除请求不完整", "The deletion needs keys and a reason", errors=problems)
    if resource.base_table:
        bt = BASE_TABLES[resource.base_table]
        table, col, feed, scope = bt.table, bt.table.c[bt.key], resource.base_table, ()
    else:
        table, feed = Record.__table__, "record"
        col, scope = table.c.record_key, (table.c.resource_id == resource.id,)
    found: list[str] = []
    for i in range(0, len(keys), 900):
        found += session.scalars(select(col).where(col.in_(keys[i:i + 900]), *scope))
    found = sorted(set(found))
    if found:
        first = _next_seq(session, feed, len(found))
        for i in range(0, len(found), 900):
            session.execute(delete(table).where(col.in_(found[i:i + 900]), *scope))
        now = utcnow()
        session.execute(insert(Tombstone), [
            {"feed": feed, "resource_id": resource.id, "key": k, "seq": first + i, "reason": reason[:2000],
             "actor": principal.label[:100], "deleted_at": now} for i, k in enumerate(found)])
    missing = sorted(set(keys) - set(found))
    audit.commit(session, action="data.records.delete", target_type="data_resource", target_id=code,
                 after={"deleted": len(found), "not_found": len(missing), "reason": reason,
                        "keys": [masking.mask_text(k) for k in found[:50]]})
    return {"deleted": len(found), "not_found": missing[:1000]}


_TOMB_STMTS = {base: select(Tombstone.seq, Tombstone.key).where(
    Tombstone.feed == bindparam("feed"), Tombstone.seq > bindparam("after"),
    *(() if base else (Tombstone.resource_id == bindparam("rid"),))).order_by(Tombstone.seq).limit(bindparam("lim"))
    for base in (True, False)}


def _tombstones(drv: _Driver, meta: dict[str, Any], after: int, limit: int) -> list[tuple[int, str]]:
    base = bool(meta["base_table"])
    params = {"feed": meta["base_table"] or "record", "after": after, "lim": limit}
    if not base:
        params["rid"] = meta["id"]
    return _execute_raw(drv, _TOMB_STMTS[base], ("tombstones", base), params)


def load_dict(load: Load) -> dict[str, Any]:
    """A load and its quality report as a plain dict."""
    return {"id": load.id, "resource_id": load.resource_id, "source": load.source, "status": load.status,
            "total": load.total, "inserted": load.inserted, "updated": load.updated, "rejected": load.rejected,
            "report": load.report, "actor": load.actor, "started_at": load.started_at,
            "finished_at": load.finished_at}


def get_load(session: Session, *, principal: Principal, load_id: int) -> Load:
    """One load with its quality report (provider department or city-wide viewers)."""
    load = session.get(Load, load_id)
    if load is None:
        raise NotFound(f"归集批次 {load_id} 不存在", f"Load {load_id} does not exist", code="load_not_found")
    _authorize(session, principal, "data.load", load.provider_org_id)
    return load


def list_loads(session: Session, *, principal: Principal, code: str, limit: int = 20) -> list[dict[str, Any]]:
    """Recent loads of a resource."""
    r = _resource(session, code)
    _authorize(session, principal, "data.load", r.provider_org_id)
    rows = session.scalars(select(Load).where(Load.resource_id == r.id).order_by(Load.id.desc()).limit(limit))
    return [load_dict(x) for x in rows]


def load_rejects(session: Session, *, principal: Principal, load_id: int, limit: int = 100,
                 offset: int = 0) -> list[dict[str, Any]]:
    """The rows a load refused, with their reasons (ID numbers and phones masked)."""
    get_load(session, principal=principal, load_id=load_id)
    rows = session.scalars(select(Reject).where(Reject.load_id == load_id).order_by(Reject.row_no)
                           .limit(min(limit, 1000)).offset(offset))
    return [{"row": x.row_no, "record": masking.scrub(x.record), "reasons": x.reasons} for x in rows]


# --- sharing (共享) -----------------------------------------------------------------------------------------------------


def request_dict(r: ShareRequest, orgs: dict[int, Any] | None = None, today: dt.date | None = None,
                 grant: Grant | None = None) -> dict[str, Any]:
    """A sharing request as a plain dict, with its overdue flag and, once approved, the grant as decided
    (the provider may narrow the fields in clear and the period; `fields`/`valid_to` are what was asked)."""
    today = today or _today()
    orgs = orgs or {}
    return {"grant": grant_dict(grant) if grant is not None else None, "id": r.id, "resource_id": r.resource_id, "resource_code": r.resource_code,
            "consumer_org_id": r.consumer_org_id,
            "consumer_name": orgs[r.consumer_org_id].name if r.consumer_org_id in orgs else None,
            "provider_org_id": r.provider_org_id,
            "provider_name": orgs[r.provider_org_id].name if r.provider_org_id in orgs else None,
            "fields": r.fields, "unmasked_fields": r.unmasked_fields or [], "purpose": r.purpose,
            "legal_basis": r.legal_basis, "valid_from": r.valid_from, "valid_to": r.valid_to, "status": r.status,
            "due_on": r.due_on, "overdue": r.status == "pending" and r.due_on is not None and today > r.due_on,
            "decision_reason": r.decision_reason, "decided_by": r.decided_by, "decided_at": r.decided_at,
            "requested_by": r.requested_by, "created_at": r.created_at}


def grant_dict(g: Grant) -> dict[str, Any]:
    """A grant as a plain dict."""
    return {"id": g.id, "request_id": g.request_id, "resource_id": g.resource_id,
            "consumer_org_id": g.consumer_org_id, "provider_org_id": g.provider_org_id, "fields": g.fields,
            "unmasked_fields": g.unmasked_fields or [], "valid_from": g.valid_from, "valid_to": g.valid_to,
            "status": g.status, "created_at": g.created_at, "ended_at": g.ended_at}


def _make_grant(session: Session, req: ShareRequest, fields: list[str], unmasked: list[str],
                valid_to: dt.date) -> Grant:
    g = Grant(request_id=req.id, resource_id=req.resource_id, consumer_org_id=req.consumer_org_id,
              provider_org_id=req.provider_org_id, fields=fields, unmasked_fields=unmasked,
              valid_from=req.valid_from, valid_to=valid_to, status="active", created_at=utcnow())
    session.add(g)
    session.flush()
    return g


def create_request(session: Session, *, principal: Principal, code: str, fields: list[str], purpose: str,
                   legal_basis: str | None = None, unmasked_fields: list[str] | None = None,
                   valid_from: dt.date | None = None, valid_to: dt.date | None = None) -> ShareRequest:
    """A consumer department asks for named fields of a resource; unconditional resources (without fields in
    clear) are granted at once, the rest go to the provider, who answers within 10 working days."""
    _authorize(session, principal, "data.request")
    if not principal.org_id:
        raise Forbidden("申请共享须以部门身份进行", "Requests are made on behalf of a department",
                        code="no_department")
    r = _resource(session, code)
    if r.status != "published":
        raise Conflict("该资源未发布", "The resource is not published", code="resource_not_published")
    if r.share_type == "none" or r.secret:
        raise Forbidden(f"该资源不予共享（依据：{r.legal_basis}）",
                        f"This resource is not shared (legal basis: {r.legal_basis})", code="not_shareable")
    if r.provider_org_id == principal.org_id:
        raise Conflict("不能申请本部门提供的资源", "A department cannot request its own resource",
                       code="own_resource")
    items = {it["name"]: it for it in item_definitions(r)}
    unmasked_fields = list(dict.fromkeys(unmasked_fields or []))
    fields = list(dict.fromkeys(fields or []))
    errs = []

    def err(field: str, zh: str, en: str) -> None:
        errs.append({"field": field, "message": zh, "message_en": en})

    if not fields:
        err("fields", "须至少申请一个信息项", "ask for at least one field")
    for f in fields:
        if f not in items:
            err("fields", f"资源没有信息项 {f}", f"the resource has no field {f}")
    for f in unmasked_fields:
        if f not in fields:
            err("unmasked_fields", f"{f} 不在申请的信息项中", f"{f} is not among the requested fields")
        if f in items and not items[f].get("mask"):
            err("unmasked_fields", f"{f} 本身不脱敏", f"{f} is not masked anyway")
    if not (purpose or "").strip():
        err("purpose", "须说明用途", "state the purpose")
    needs_review = r.share_type == "conditional" or bool(unmasked_fields)
    if needs_review and not (legal_basis or "").strip():
        err("legal_basis", "有条件共享或申请明文敏感信息须说明依据",
            "a conditional resource or fields in clear need a legal basis")
    today = _today()
    valid_from = valid_from or today
    valid_to = valid_to or (valid_from + dt.timedelta(days=365))
    if valid_to < valid_from or valid_to < today:
        err("valid_to", "有效期止须晚于起始日期和今天", "valid_to must not be before valid_from or today")
    if (valid_to - valid_from).days > MAX_GRANT_DAYS:
        err("valid_to", "有效期不能超过三年", "the period may not exceed three years")
    if errs:
        raise Invalid("共享申请校验未通过：" + "；".join(e["message"] for e in errs[:3]),
                      "The request is invalid: " + "; ".join(e["message_en"] for e in errs[:3]), errors=errs)
    req = ShareRequest(resource_id=r.id, resource_code=r.code, consumer_org_id=principal.org_id,
                       provider_org_id=r.provider_org_id, fields=fields, unmasked_fields=unmasked_fields,
                       purpose=purpose.strip(), legal_basis=(legal_basis or "").strip() or None,
                       valid_from=valid_from, valid_to=valid_to, requested_by=principal.label,
                       created_at=utcnow(), status="pending")
    session.add(req)
    session.flush()
    after = {"resource": r.code, "fields": fields, "unmasked_fields": unmasked_fields, "purpose": req.purpose,
             "valid_to": valid_to}
    if not needs_review:
        req.status, req.decided_by, req.decided_at = "approved", "system:无条件共享", utcnow()
        req.decision_reason = "无条件共享资源，自动授权"
        g = _make_grant(session, req, fields, [], valid_to)
        after.update(status="approved", grant_id=g.id)
    else:
        req.due_on = WorkCalendar().add_workdays(today, ANSWER_WORKDAYS)
        after.update(status="pending", due_on=req.due_on)
    bus.publish(session, "data.request.created", {
        "request_id": req.id, "resource_code": r.code, "status": req.status, "due_on": req.due_on,
        "org_ids": [req.consumer_org_id, req.provider_org_id], "at": req.created_at})
    audit.commit(session, action="data.request.create", target_type="data_request", target_id=req.id, after=after)
    return req


def _request(session: Session, request_id: int) -> ShareRequest:
    req = session.get(ShareRequest, request_id)
    if req is None:
        raise NotFound(f"共享申请 {request_id} 不存在", f"Request {request_id} does not exist",
                       code="request_not_found")
    return req


def _decision_reason(status: str, approve: bool, reason: str | None, *, what_en: str, code: str,
                     refusal_zh: str) -> str:
    """A pending request or application may be decided once; a refusal needs a reason (returned stripped)."""
    if status != "pending":
        raise Conflict(f"该申请已处理（{status}）", f"The {what_en} is already {status}", code=code)
    reason = (reason or "").strip()
    if not approve and not reason:
        raise Invalid(refusal_zh, "A refusal needs a reason", errors=[{"field": "reason", "message": "required"}])
    return reason


def decide_request(session: Session, *, principal: Principal, request_id: int, approve: bool,
                   reason: str | None = None, fields: list[str] | None = None,
                   unmasked_fields: list[str] | None = None, valid_to: dt.date | None = None) -> ShareRequest:
    """The provider department approves (possibly fewer fields or a shorter period) or refuses with a reason."""
    req = _request(session, request_id)
    _authorize(session, principal, "data.approve", req.provider_org_id)
    reason = _decision_reason(req.status, approve, reason, what_en="request", code="request_decided",
                              refusal_zh="不予共享须说明理由")
    before = {"status": req.status}
    now = utcnow()
    after: dict[str, Any] = {}
    if approve:
        fields = [f for f in (fields or req.fields)]
        unmasked = [f for f in (req.unmasked_fields if unmasked_fields is None else unmasked_fields)]
        bad = [f for f in fields if f not in req.fields] + [f for f in unmasked if f not in fields
                                                             or f not in (req.unmasked_fields or [])]
        vt = valid_to or req.valid_to
        if bad or vt > req.valid_to or vt < _today():
            raise Invalid("批准范围不能超出申请范围", "An approval cannot exceed what was requested",
                          errors=[{"field": "fields", "message": f} for f in bad]
                          or [{"field": "valid_to", "message": "outside the requested period"}])
        g = _make_grant(session, req, fields, unmasked, vt)
        req.status = "approved"
        after = {"status": "approved", "grant_id": g.id, "fields": fields, "unmasked_fields": unmasked,
                 "valid_to": vt}
    else:
        req.status = "refused"
        after = {"status": "refused", "reason": reason}
    req.decision_reason = reason or None
    req.decided_by, req.decided_at = principal.label, now
    after["overdue"] = req.due_on is not None and _today() > req.due_on
    bus.publish(session, "data.request.decided", {
        "request_id": req.id, "resource_code": req.resource_code, "status": req.status,
        "org_ids": [req.consumer_org_id, req.provider_org_id], "at": now})
    audit.commit(session, action="data.request.approve" if approve else "data.request.refuse",
                 target_type="data_request", target_id=req.id, before=before, after=after,
                 note=("批准明文字段 unmasked: " + ",".join(after.get("unmasked_fields", [])))
                 if approve and after.get("unmasked_fields") else None)
    return req


def withdraw_request(session: Session, *, principal: Principal, request_id: int) -> ShareRequest:
    """The requesting department withdraws a pending request."""
    req = _request(session, request_id)
    _authorize(session, principal, "data.request", req.consumer_org_id)
    if req.status != "pending":
        raise Conflict("只能撤回待审批的申请", "Only pending requests can be withdrawn", code="request_decided")
    req.status = "withdrawn"
    audit.commit(session, action="data.request.withdraw", target_type="data_request", target_id=req.id,
                 before={"status": "pending"}, after={"status": "withdrawn"})
    return req


def get_request(session: Session, *, principal: Principal, request_id: int) -> dict[str, Any]:
    """One request, visible to its consumer and provider departments and city-wide roles."""
    req = _request(session, request_id)
    if not (principal.kind == "system" or principal.sees_org(req.consumer_org_id)
            or principal.sees_org(req.provider_org_id)):
        raise Forbidden("该申请不在您的管辖范围内", "That request is outside your scope", code="out_of_scope")
    return request_dict(req, _org_names(session), grant=_grants_of(session, [req.id]).get(req.id))


def _grants_of(session: Session, request_ids: list[int]) -> dict[int, Grant]:
    """The grant made on each of these requests (the newest, should there be several)."""
    if not request_ids:
        return {}
    rows = session.scalars(select(Grant).where(Grant.request_id.in_(request_ids)).order_by(Grant.id))
    return {g.request_id: g for g in rows}


def list_requests(session: Session, *, principal: Principal, direction: str = "all", status: str | None = None,
                  overdue: bool | None = None, limit: int = 50, offset: int = 0) -> tuple[int, list[dict]]:
    """Requests the caller's departments sent (`outgoing`), received (`incoming`) or both."""
    stmt = select(ShareRequest)
    scope = principal.org_scope
    if principal.kind != "system" and scope is not None:
        ids = list(scope)
        conds = []
        if direction in ("incoming", "all"):
            conds.append(ShareRequest.provider_org_id.in_(ids))
        if direction in ("outgoing", "all"):
            conds.append(ShareRequest.consumer_org_id.in_(ids))
        stmt = stmt.where(or_(*conds))
    if status:
        stmt = stmt.where(ShareRequest.status == status)
    today = _today()
    if overdue:
        stmt = stmt.where(ShareRequest.status == "pending", ShareRequest.due_on < today)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(ShareRequest.id.desc()).limit(min(limit, 200)).offset(offset)).all()
    orgs = _org_names(session)
    grants = _grants_of(session, [r.id for r in rows])
    return total, [request_dict(r, orgs, today, grants.get(r.id)) for r in rows]


def list_grants(session: Session, *, principal: Principal, active_only: bool = True) -> list[dict[str, Any]]:
    """Grants the caller's departments hold or gave."""
    stmt = select(Grant)
    if principal.kind != "system" and principal.org_scope is not None:
        ids = list(principal.org_scope)
        stmt = stmt.where(or_(Grant.consumer_org_id.in_(ids), Grant.provider_org_id.in_(ids)))
    if active_only:
        stmt = stmt.where(Grant.status == "active", Grant.valid_to >= _today())
    return [grant_dict(g) for g in session.scalars(stmt.order_by(Grant.id.desc()).limit(500))]


def revoke_grant(session: Session, *, principal: Principal, grant_id: int, reason: str) -> Grant:
    """The provider ends a grant before its expiry (reason required)."""
    g = session.get(Grant, grant_id)
    if g is None:
        raise NotFound(f"授权 {grant_id} 不存在", f"Grant {grant_id} does not exist", code="grant_not_found")
    _authorize(session, principal, "data.approve", g.provider_org_id)
    if not (reason or "").strip():
        raise Invalid("撤销授权须说明理由", "A revocation needs a reason",
                      errors=[{"field": "reason", "message": "required"}])
    if g.status != "active":
        raise Conflict("授权已结束", "The grant has already ended", code="grant_ended")
    g.status, g.ended_at = "revoked", utcnow()
    audit.commit(session, action="data.grant.revoke", target_type="data_grant", target_id=g.id,
                 before={"status": "active"}, after={"status": "revoked", "reason": reason})
    return g


def expire_grants(session: Session) -> int:
    """Mark grants past their end date as expired (the exchange already refuses them); returns how many."""
    today = _today()
    ids = list(session.scalars(select(Grant.id).where(Grant.status == "active", Grant.valid_to < today)))
    if not ids:
        return 0
    session.execute(update(Grant).where(Grant.id.in_(ids)).values(status="expired", ended_at=utcnow()))
    audit.commit(session, action="data.grant.expire", target_type="data_grant", target_id=",".join(map(str, ids[:50])),
                 after={"expired": len(ids), "grant_ids": ids[:200]})
    return len(ids)


# --- exchange (交换) ----------------------------------------------------------------------------------------------------

_META: dict[tuple, tuple[float, dict[str, Any]]] = {}
_META_LOCK = threading.Lock()
META_TTL = 2.0


def _meta(session: Session, code: str) -> dict[str, Any]:
    """Exchange-relevant facts of a resource, cached briefly (cleared on every catalogue change here)."""
    k = (id(session.get_bind()), code)
    hit = _META.get(k)
    now = time.monotonic()
    if hit and now - hit[0] < META_TTL:
        return hit[1]
    r = _resource(session, code)
    items = item_definitions(r)
    bt = BASE_TABLES.get(r.base_table or "")
    filterable = set(bt.filterable) if bt else set()
    filterable |= {it["name"] for it in items if it.get("filterable")}
    filterable.add(r.key_field)
    meta = {"id": r.id, "code": r.code, "provider_org_id": r.provider_org_id, "status": r.status,
            "share_type": r.share_type, "open_type": r.open_type, "base_table": r.base_table,
            "key": r.key_field, "items": {it["name"]: it for it in items}, "order": [it["name"] for it in items],
            "masks": {it["name"]: MASKS[it["mask"]] for it in items if it.get("mask") in MASKS},
            "filterable": filterable, "public": [it["name"] for it in items if it.get("grade") == "public"],
            "table": bt.table if bt else Record.__table__}
    with _META_LOCK:
        _META[k] = (now, meta)
    return meta


_GRANT_STMT = select(Grant.fields, Grant.unmasked_fields).where(
    Grant.resource_id == bindparam("rid"), Grant.consumer_org_id == bindparam("org"), Grant.status == "active",
    Grant.valid_from <= bindparam("today", type_=Grant.valid_from.type),
    Grant.valid_to >= bindparam("today", type_=Grant.valid_to.type))


def _grant_for(drv: _Driver, meta: dict[str, Any], org_id: int) -> tuple[set[str], set[str]]:
    rows = _execute_raw(drv, _GRANT_STMT, ("grant",), {"rid": meta["id"], "org": org_id, "today": _today()})
    if not rows:
        raise Forbidden(f"本部门没有资源 {meta['code']} 的有效共享授权（请先申请）",
                        f"Your department holds no valid grant for {meta['code']} (request one first)",
                        code="no_grant")
    fields: set[str] = set()
    unmasked: set[str] = set()
    for f, u in rows:  # JSON lists (text as the SQLite driver gives them)
        fields.update((orjson.loads(f) if isinstance(f, str | bytes) else f) or [])
        unmasked.update((orjson.loads(u) if isinstance(u, str | bytes) else u) or [])
    return fields, unmasked


def _convert_filter(item: dict[str, Any], value: str) -> Any:
    t = item.get("type", "string")
    try:
        if t == "date":
            return dt.date.fromisoformat(value)
        if t == "number":
            return float(value)
        if t == "integer":
            return int(value)
    except ValueError:
        raise Invalid(f"筛选值 {item['name']} 类型不符", f"Filter {item['name']} has the wrong type",
                      errors=[{"field": item["name"], "message": f"expected {t}"}]) from None
    return value


def _columns(meta: dict[str, Any], fields: list[str], seq: bool = True):
    """The columns a call reads: the fields (or the JSON document), then `seq` where the call needs it."""
    t = meta["table"]
    cols = [t.c[f] for f in fields] if meta["base_table"] else [t.c.data]
    return cols + [t.c.seq] if seq else cols


_MAKERS: dict[tuple, Callable[[Any], dict]] = {}


def _row_maker(fields: tuple[str, ...], masked: dict[str, Callable]) -> Callable[[Any], dict]:
    """A function turning a driver row into the output record with the masks applied, generated once per
    shape (`v0 = r[0]; ...; return {"id_number": <mask of v0>, "gender": r[1], ...}`: no per-field loop and,
    for the masks with an inline form (`masking.INLINE`), no call per value on the hot path). Every mask
    passes None and "" through unchanged."""
    ck = (fields, tuple((f, id(fn)) for f, fn in sorted(masked.items())))
    fn = _MAKERS.get(ck)
    if fn is None:
        env: dict[str, Any] = dict(masking.INLINE_NAMES)
        lines, parts = [], []
        for i, f in enumerate(fields):
            if f not in masked:
                parts.append(f"{f!r}: r[{i}]")
                continue
            env[f"m{i}"] = masked[f]
            inline = masking.INLINE.get(masked[f])
            if inline is None:
                parts.append(f"{f!r}: m{i}(r[{i}])")
                continue
            guard, expr = (t.format(v=f"v{i}", m=f"g{i}") for t in inline)
            lines.append(f"    v{i} = r[{i}]")
            parts.append(f"{f!r}: ({expr} if {guard} else m{i}(v{i}))")
        src = "def row(r):\n" + "\n".join(lines) + "\n    return {" + ", ".join(parts) + "}\n"
        exec(src, env)  # noqa: S102 - field names are checked identifiers, the masks' forms are constants
        fn = env["row"]
        if len(_MAKERS) > 2000:
            _MAKERS.clear()
        _MAKERS[ck] = fn
    return fn


def _rows_out(meta: dict[str, Any], result, fields: list[str], masked: dict[str, Callable]) -> list[dict]:
    if meta["base_table"]:
        return list(map(_row_maker(tuple(fields), masked), result))
    out = []
    for row in result:
        data = row[0]
        if isinstance(data, str | bytes):  # JSON as text from the driver (SQLite)
            data = orjson.loads(data)
        d = {f: data.get(f) for f in fields}
        for f, fn in masked.items():
            if d[f] is not None:
                d[f] = fn(d[f])
        out.append(d)
    return out


_STMTS: dict[tuple, Any] = {}


def _statement(meta: dict[str, Any], want: tuple[str, ...], op: str, fkeys: tuple[str, ...]):
    """The exchange SELECT for this shape of call, built once and reused with bound parameters."""
    ck = (meta["code"], meta["table"].name, want, op, fkeys)  # op: get, query, query_after (keyset) or pull
    stmt = _STMTS.get(ck)
    if stmt is not None:
        return stmt
    t = meta["table"]
    stmt = select(*_columns(meta, list(want)))
    if not meta["base_table"]:
        stmt = stmt.where(t.c.resource_id == bindparam("rid"))

    def col(f: str):
        return t.c[f] if meta["base_table"] else t.c.data[f].as_string()

    if op == "get":
        stmt = stmt.where(col(meta["key"]) == bindparam("k")).limit(1)
    elif op in ("query", "query_after"):
        # the page's ids from the filter's index alone (OFFSET steps over index entries, not rows), then
        # those rows: ~10% less work per skipped entry than filtering and skipping rows
        ids = select(t.c.id)
        if not meta["base_table"]:
            ids = ids.where(t.c.resource_id == bindparam("rid"))
        for f in fkeys:
            ids = ids.where(col(f) == bindparam(f"f_{f}"))
        if op == "query_after":  # keyset paging: after the last row of the previous page
            ids = ids.where(t.c.id > bindparam("after"))
        ids = ids.order_by(t.c.id).limit(bindparam("lim")).offset(bindparam("off"))
        # no `seq` here: a page's rows are the fields, then the id (the next page's cursor)
        stmt = select(*_columns(meta, list(want), seq=False), t.c.id).where(t.c.id.in_(ids)).order_by(t.c.id)
    else:
        stmt = stmt.where(t.c.seq > bindparam("after")).order_by(t.c.seq).limit(bindparam("lim"))
    if len(_STMTS) > 2000:
        _STMTS.clear()
    _STMTS[ck] = stmt
    return stmt


_RAW: dict[tuple, tuple[str, list[str] | None, dict[str, Any]]] = {}


class _Driver:
    """The pooled driver connection an exchange call's cached statements run on, in one read transaction
    (on SQLite one snapshot: a change feed's records and tombstones agree), taken at the first statement and
    given back at the end. It bypasses the ORM session, whose transaction and result layers cost more than
    these statements; the session is used only to refresh the resource metadata."""

    __slots__ = ("engine", "raw")

    def __init__(self, session: Session):
        self.engine = session.get_bind()
        self.raw: Any = None

    def fetch(self, sql: str, args: Any) -> list[tuple]:
        if self.raw is None:
            self.raw = self.engine.raw_connection()
            if self.engine.dialect.name == "sqlite":  # the pool's SQLite connections run in autocommit mode
                self.raw.driver_connection.execute("BEGIN")
        cur = self.raw.cursor()
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            cur.execute(sql, args)
            return cur.fetchall()
        except dbapi_error as exc:  # as SQLAlchemy would raise it (a NUL in a key: 422, a busy database: 503)
            raise DBAPIError.instance(sql, args, exc, dbapi_error) from exc
        finally:
            cur.close()

    def __enter__(self) -> _Driver:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.raw is not None:
            self.raw.close()  # back to the pool, which rolls the read transaction back
            self.raw = None


def _execute_raw(drv: _Driver, stmt, ck: tuple, params: dict[str, Any]) -> list[tuple]:
    """Run a cached exchange SELECT through the driver (compiled once per dialect; no result processing:
    the hot path returns dates as the driver gives them, which serialise the same)."""
    dialect = drv.engine.dialect
    key = (dialect.name, ck)
    hit = _RAW.get(key)
    if hit is None:
        compiled = stmt.compile(dialect=dialect)
        defaults = {}
        for k, v in compiled.params.items():  # literal values (a JSON path): as the type binds them
            if v is not None:
                proc = compiled.binds[k].type.dialect_impl(dialect).bind_processor(dialect)
                defaults[k] = proc(v) if proc else v
        hit = (str(compiled), list(compiled.positiontup) if compiled.positional else None, defaults)
        if len(_RAW) > 2000:
            _RAW.clear()
        _RAW[key] = hit
    sql, order, defaults = hit
    params = {**defaults, **params}
    if dialect.name == "sqlite":
        params = {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in params.items()}
    args = tuple(params[n] for n in order) if order is not None else params
    return drv.fetch(sql, args)


def exchange(session: Session, *, principal: Principal, code: str, op: str = "query",
             key: str | None = None, filters: dict[str, str] | None = None, fields: list[str] | None = None,
             page: int = 1, page_size: int = 100, cursor: str | None = None, limit: int = 100,
             after: str | None = None, masked: bool = True, log: bool = True) -> dict[str, Any]:
    """A granted consumer's query: by key (`get`), by filter with paging (`query`) or changes since a
    cursor (`pull`). Fields outside the grant are refused, sensitive fields are masked unless the grant
    names them in clear, and the call is logged (consumer, resource, fields, records) before data leaves."""
    result, entry = exchange_call(session, principal=principal, code=code, op=op, key=key, filters=filters,
                                  fields=fields, page=page, page_size=page_size, cursor=cursor, limit=limit,
                                  after=after, masked=masked, log=log)
    if entry is not None:
        # end this read transaction first: an open SQLite snapshot would keep every log commit from
        # checkpointing the WAL (each commit then pays a partial checkpoint)
        session.commit()
        exchangelog.WRITER.submit(get_db(), entry)
    return result


def exchange_call(session: Session, *, principal: Principal, code: str, op: str = "query",
                  key: str | None = None, filters: dict[str, str] | None = None, fields: list[str] | None = None,
                  page: int = 1, page_size: int = 100, cursor: str | None = None, limit: int = 100,
                  after: str | None = None, masked: bool = True,
                  log: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """`exchange` without the wait for the log: the result and its log entry (None with `log=False`). The
    caller must have the entry committed (`exchangelog.WRITER.submit` or `submit_async`, which also charge
    the rate limit) before any of the result leaves."""
    subject = None
    if principal.kind != "system":
        _authorize(session, principal, "data.exchange")
        if log:  # the limit is charged with the log entry (shared by all processes); known refusals stop here
            subject = f"{principal.kind}:{principal.id}"
            exchangelog.LIMITER.check(subject, clock.now().timestamp())
    if not principal.org_id:
        raise Forbidden("交换接口须以部门身份调用", "Exchange calls are made on behalf of a department",
                        code="no_department")
    meta = _meta(session, code)
    if meta["status"] != "published" or meta["share_type"] == "none":
        raise Forbidden("该资源不可共享", "This resource is not shared", code="not_shareable")
    with _Driver(session) as drv:
        granted, clear = _grant_for(drv, meta, principal.org_id)
        want = [f for f in (fields or [f for f in meta["order"] if f in granted])]
        denied = [f for f in want if f not in granted]
        if denied:
            raise Forbidden(f"未获授权的信息项：{'、'.join(denied)}", f"Fields not granted: {', '.join(denied)}",
                            code="field_not_granted", fields=denied)
        unknown = [f for f in want if f not in meta["items"]]
        if unknown:
            raise Invalid(f"未知信息项：{'、'.join(unknown)}", f"Unknown fields: {', '.join(unknown)}",
                          errors=[{"field": f, "message": "unknown"} for f in unknown])
        masks = {f: meta["masks"][f] for f in want if f in meta["masks"] and f not in clear} if masked else {}
        result: dict[str, Any] = {"resource": code, "fields": want, "masked": sorted(masks)}
        params: dict[str, Any] = {}
        if op == "get":
            if not key:
                raise Invalid("须提供主键值", "A key is required", errors=[{"field": "key", "message": "required"}])
            params["k"] = key
            fkeys: tuple[str, ...] = ()
        elif op == "query":
            filters = filters or {}
            for f, v in filters.items():
                if f not in meta["items"] or f not in meta["filterable"]:
                    raise Invalid(f"不支持按 {f} 筛选", f"Cannot filter by {f}",
                                  errors=[{"field": f, "message": f"filterable: {sorted(meta['filterable'])}"}])
                if f not in granted:
                    raise Forbidden(f"未获授权的信息项：{f}", f"Field not granted: {f}", code="field_not_granted")
                params[f"f_{f}"] = _convert_filter(meta["items"][f], v) if meta["base_table"] else str(v)
            fkeys = tuple(sorted(filters))
            page_size = max(1, min(page_size, MAX_PAGE))
            page = max(1, page)
            params["lim"], params["off"] = page_size, (page - 1) * page_size
            result.update(page=page, page_size=page_size)
            if after is not None:
                if not (isinstance(after, str) and after.isascii() and after.isdigit() and len(after) <= 18):
                    raise Invalid("分页游标无效", "Invalid paging cursor",
                                  errors=[{"field": "after", "message": "the next_after of a previous page"}])
                params["after"] = int(after)
                result["after"] = after
        elif op == "pull":
            try:
                after = int(cursor or 0)
            except ValueError:
                raise Invalid("游标无效", "Invalid cursor", errors=[{"field": "cursor", "message": "invalid"}]) from None
            limit = max(1, min(limit, MAX_PAGE))
            params["after"], params["lim"] = after, limit
            fkeys = ()
        else:
            raise Invalid(f"未知操作 {op}", f"Unknown operation {op}", errors=[{"field": "op", "message": op}])
        shape = "query_after" if op == "query" and after is not None else op
        stmt = _statement(meta, tuple(want), shape, fkeys)
        if not meta["base_table"]:
            params["rid"] = meta["id"]
        rows = _execute_raw(drv, stmt, (meta["code"], meta["table"].name, tuple(want), shape, fkeys), params)
        records = _rows_out(meta, rows, want, masks)
        if op == "query":  # the cursor of the next page (keyset paging), when this one is full
            result["next_after"] = str(rows[-1][-1]) if len(rows) == page_size else None
        if op == "pull":
            # deletions (tombstones) are merged into the feed in change order
            tombs = _tombstones(drv, meta, after, limit)
            # the key as this consumer may see it: masked like its records, fully masked if not granted at all
            kf = meta["key"]
            kmask = (masking.mask_all if kf not in granted
                     else meta["masks"].get(kf) if masked and kf not in clear else None)
            feed = sorted([(row[-1], rec) for row, rec in zip(rows, records, strict=True)]
                          + [(seq, {meta["key"]: kmask(k) if kmask else k, "_deleted": True}) for seq, k in tombs],
                          key=lambda x: x[0])
            result["has_more"] = len(rows) == limit or len(tombs) == limit or len(feed) > limit
            feed = feed[:limit]
            records = [rec for _, rec in feed]
            result["next_cursor"] = str(feed[-1][0]) if feed else str(after)
        if op == "get" and not records:
            raise NotFound(f"没有主键为 {masking.mask_text(key)} 的记录", "No record with that key",
                           code="record_not_found")
        result["records"] = records
        result["count"] = len(records)
        if not log:
            return result, None
        return result, {
            "at": utcnow(), "consumer_org_id": principal.org_id, "provider_org_id": meta["provider_org_id"],
            "resource_id": meta["id"], "actor": principal.label[:100],
            "key_id": principal.id if principal.kind == "apikey" else None, "op": op, "fields": ",".join(want),
            "unmasked": ",".join(f for f in want if f in clear and f in meta["masks"]),
            "records": len(records), "request_id": context.current().request_id, "subject": subject}


def exchange_log(session: Session, *, principal: Principal, code: str | None = None, limit: int = 100,
                 offset: int = 0) -> list[dict[str, Any]]:
    """Recent exchange calls the caller's departments made or served."""
    _authorize(session, principal, "data.stats")
    stmt = select(ExchangeLog)
    if principal.kind != "system" and principal.org_scope is not None:
        ids = list(principal.org_scope)
        stmt = stmt.where(or_(ExchangeLog.consumer_org_id.in_(ids), ExchangeLog.provider_org_id.in_(ids)))
    if code:
        stmt = stmt.where(ExchangeLog.resource_id == _resource(session, code).id)
    rows = session.scalars(stmt.order_by(ExchangeLog.id.desc()).limit(min(limit, 1000)).offset(offset))
    return [{"id": x.id, "at": x.at, "consumer_org_id": x.consumer_org_id, "provider_org_id": x.provider_org_id,
             "resource_id": x.resource_id, "actor": x.actor, "op": x.op, "fields": x.fields.split(",") if x.fields
             else [], "unmasked": x.unmasked.split(",") if x.unmasked else [], "records": x.records,
             "request_id": x.request_id} for x in rows]


def exchange_stats(session: Session, *, principal: Principal, days: int = 7) -> dict[str, Any]:
    """Exchange statistics per day, department and resource over the last `days` days."""
    _authorize(session, principal, "data.stats")
    days = max(1, min(days, 366))
    today = _today()
    since = today - dt.timedelta(days=days - 1)
    stmt = select(ExchangeDaily).where(ExchangeDaily.day >= since)
    if principal.kind != "system" and principal.org_scope is not None:
        ids = list(principal.org_scope)
        stmt = stmt.where(or_(ExchangeDaily.consumer_org_id.in_(ids), ExchangeDaily.provider_org_id.in_(ids)))
    rows = session.scalars(stmt).all()
    orgs = _org_names(session)
    res = {r.id: r for r in session.scalars(select(Resource))}
    per_day = {since + dt.timedelta(days=i): [0, 0] for i in range(days)}
    by_consumer: dict[int, list[int]] = {}
    by_provider: dict[int, list[int]] = {}
    by_resource: dict[int, list[int]] = {}
    for r in rows:
        for bucket, k in ((per_day, r.day), (by_consumer, r.consumer_org_id), (by_provider, r.provider_org_id),
                          (by_resource, r.resource_id)):
            b = bucket.setdefault(k, [0, 0])
            b[0] += r.calls
            b[1] += r.records

    def org_rows(d: dict[int, list[int]]) -> list[dict[str, Any]]:
        return sorted(({"org_id": k, "name": orgs[k].name if k in orgs else ("公众" if k == 0 else str(k)),
                        "calls": v[0], "records": v[1]} for k, v in d.items()), key=lambda x: -x["records"])

    return {
        "days": [{"date": d, "calls": v[0], "records": v[1]} for d, v in sorted(per_day.items())],
        "by_consumer": org_rows(by_consumer), "by_provider": org_rows(by_provider),
        "by_resource": sorted(({"resource_id": k, "code": res[k].code if k in res else None,
                                "name": res[k].name if k in res else None, "calls": v[0], "records": v[1]}
                               for k, v in by_resource.items()), key=lambda x: -x["records"]),
        "total_calls": sum(v[0] for v in per_day.values()), "total_records": sum(v[1] for v in per_day.values()),
    }


def ioc_summary(session: Session) -> dict[str, Any]:
    """Exchange volume and catalogue facts for the operations centre (no permission check: the IOC page
    checks `ioc.view`)."""
    today = _today()
    since = today - dt.timedelta(days=6)
    per_day = {since + dt.timedelta(days=i): [0, 0] for i in range(7)}
    for day, calls, records in session.execute(
            select(ExchangeDaily.day, func.sum(ExchangeDaily.calls), func.sum(ExchangeDaily.records))
            .where(ExchangeDaily.day >= since).group_by(ExchangeDaily.day)):
        if day in per_day:
            per_day[day] = [int(calls or 0), int(records or 0)]
    stats = catalog_stats(session)
    pending = session.scalar(select(func.count()).select_from(ShareRequest)
                             .where(ShareRequest.status == "pending")) or 0
    overdue = session.scalar(select(func.count()).select_from(ShareRequest).where(
        ShareRequest.status == "pending", ShareRequest.due_on < today)) or 0
    return {
        "exchange_today": per_day[today][1], "exchange_calls_today": per_day[today][0],
        "exchange_7d": [{"date": d.isoformat(), "records": v[1], "calls": v[0]} for d, v in sorted(per_day.items())],
        "resources_total": stats["resources_total"], "sharing_rate": stats["sharing_rate"],
        "open_resources": stats["by_open_type"]["open"] + stats["by_open_type"]["conditional"],
        "pending_requests": int(pending), "overdue_requests": int(overdue),
    }


# --- open data (开放) -----------------------------------------------------------------------------------------------


def _open_resource(session: Session, code: str, principal: Principal | None = None) -> dict[str, Any]:
    meta = _meta(session, code)
    if meta["status"] != "published" or meta["open_type"] == "closed":
        raise NotFound(f"开放数据 {code} 不存在", f"Open dataset {code} does not exist", code="resource_not_found")
    if meta["open_type"] == "conditional":
        p = principal
        ok = p is not None and p.can("data.open") and (p.extra.get("subject") in (code, "*"))
        if not ok:
            raise Forbidden("有条件开放数据须使用申请获得的开放数据密钥", "This dataset needs an open-data key",
                            code="open_key_required")
    return meta


def open_list(session: Session, *, q: str | None = None, limit: int = 20, offset: int = 0) -> tuple[int, list]:
    """Published open and conditionally open resources (public fields only)."""
    total, rows = list_resources(session, q=q, open_types=("open", "conditional"), limit=limit, offset=offset)
    for r in rows:
        r["items"] = [it for it in r["items"] if it.get("grade") == "public"]
        r.pop("legal_basis", None)
    return total, rows


def open_rows(session: Session, *, code: str, principal: Principal | None = None, limit: int | None = None,
              chunk: int = 2000) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The public fields of an open resource and an iterator over its rows (for preview and download)."""
    meta = _open_resource(session, code, principal)
    fields = meta["public"]
    if not fields:
        return [], iter(())
    t = meta["table"]

    def gen() -> Iterator[dict[str, Any]]:
        last, sent = 0, 0
        with get_db().read() as s:
            while True:
                n = chunk if limit is None else min(chunk, limit - sent)
                if n <= 0:
                    return
                stmt = select(t.c.id, *_columns(meta, fields)).where(t.c.id > last)
                if not meta["base_table"]:
                    stmt = stmt.where(t.c.resource_id == meta["id"])
                rows = s.execute(stmt.order_by(t.c.id).limit(n)).all()
                if not rows:
                    return
                last = rows[-1][0]
                yield from _rows_out(meta, [r[1:] for r in rows], fields, {})
                sent += len(rows)
                if len(rows) < n:
                    return

    return fields, gen()


def log_open_download(*, code: str, records: int, principal: Principal | None) -> None:
    """Count an open-data download in the exchange statistics (consumer 0 = the public); never waits (the data
    has already left, and an abandoned download may be finished from any thread)."""
    db = get_db()
    with db.read() as s:
        meta = _meta(s, code)
    exchangelog.WRITER.post(db, {
        "at": utcnow(), "consumer_org_id": 0, "provider_org_id": meta["provider_org_id"],
        "resource_id": meta["id"], "actor": (principal.label if principal else "anonymous")[:100],
        "key_id": principal.id if principal and principal.kind == "apikey" else None, "op": "open",
        "fields": ",".join(meta["public"]), "unmasked": "", "records": records,
        "request_id": context.current().request_id})


def _ticket_hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def resource_code(session: Session, resource_id: int) -> str | None:
    """The code of a resource by id."""
    return session.scalar(select(Resource.code).where(Resource.id == resource_id))


def open_application_dict(a: OpenApplication, code: str | None = None) -> dict[str, Any]:
    """An open-data key application as a plain dict (never the ticket)."""
    return {"id": a.id, "resource_id": a.resource_id, "resource": code, "applicant": a.applicant,
            "contact": a.contact, "purpose": a.purpose, "status": a.status, "decision_reason": a.decision_reason,
            "decided_by": a.decided_by, "decided_at": a.decided_at, "created_at": a.created_at}


def apply_open_key(session: Session, *, code: str, applicant: str, contact: str,
                   purpose: str) -> tuple[OpenApplication, str]:
    """Apply for a key to a conditionally open dataset: the application waits for the provider department;
    returns it with a ticket (shown once) with which the applicant follows it and collects the key."""
    meta = _meta(session, code)
    if meta["status"] != "published" or meta["open_type"] != "conditional":
        raise Conflict("该资源不是有条件开放数据", "This resource is not conditionally open",
                       code="not_conditionally_open")
    errs = [{"field": k, "message": "required"} for k, v in
            (("applicant", applicant), ("contact", contact), ("purpose", purpose)) if not (v or "").strip()]
    if errs:
        raise Invalid("请填写申请人、联系方式和用途", "Applicant, contact and purpose are required", errors=errs)
    ticket = "cbo_" + secrets.token_urlsafe(24)
    a = OpenApplication(resource_id=meta["id"], provider_org_id=meta["provider_org_id"],
                        applicant=applicant.strip()[:100], contact=contact.strip()[:100], purpose=purpose.strip(),
                        ticket_hash=_ticket_hash(ticket), status="pending", created_at=utcnow())
    session.add(a)
    session.flush()
    audit.commit(session, action="data.open.apply", target_type="data_open_application", target_id=a.id,
                 after={"resource": code, "applicant": a.applicant, "contact": a.contact, "purpose": a.purpose})
    return a, ticket


def _open_application(session: Session, application_id: int) -> OpenApplication:
    a = session.get(OpenApplication, application_id)
    if a is None:
        raise NotFound("没有该开放数据申请", "No such open-data application", code="application_not_found")
    return a


def list_open_applications(session: Session, *, principal: Principal, status: str | None = None,
                           limit: int = 50) -> list[dict[str, Any]]:
    """Open-data key applications to the caller's departments (providers' approvers)."""
    _authorize(session, principal, "data.approve")
    stmt = select(OpenApplication, Resource.code).join(Resource, Resource.id == OpenApplication.resource_id)
    if principal.kind != "system" and principal.org_scope is not None:
        stmt = stmt.where(OpenApplication.provider_org_id.in_(list(principal.org_scope)))
    if status:
        stmt = stmt.where(OpenApplication.status == status)
    rows = session.execute(stmt.order_by(OpenApplication.id.desc()).limit(max(1, min(limit, 500)))).all()
    return [open_application_dict(a, code) for a, code in rows]


def decide_open_application(session: Session, *, principal: Principal, application_id: int, approve: bool,
                            reason: str | None = None) -> OpenApplication:
    """The provider department approves an open-data key application or refuses it with a reason."""
    a = _open_application(session, application_id)
    _authorize(session, principal, "data.approve", a.provider_org_id)
    reason = _decision_reason(a.status, approve, reason, what_en="application", code="application_decided",
                              refusal_zh="不予开放须说明理由")
    a.status = "approved" if approve else "refused"
    a.decision_reason = reason or None
    a.decided_by, a.decided_at = principal.label[:100], utcnow()
    audit.commit(session, action="data.open.approve" if approve else "data.open.refuse",
                 target_type="data_open_application", target_id=a.id, before={"status": "pending"},
                 after={"status": a.status, "reason": reason, "applicant": a.applicant})
    return a


def _check_ticket(a: OpenApplication, ticket: str) -> None:
    if not hmac.compare_digest(a.ticket_hash, _ticket_hash(ticket or "")):
        raise Forbidden("申请凭据不正确", "Wrong application ticket", code="bad_ticket")


def open_application_status(session: Session, *, application_id: int, ticket: str) -> dict[str, Any]:
    """The applicant's view of an application (with the ticket given at applying)."""
    a = _open_application(session, application_id)
    _check_ticket(a, ticket)
    return {"id": a.id, "status": a.status, "decision_reason": a.decision_reason, "decided_at": a.decided_at}


def collect_open_key(session: Session, *, application_id: int, ticket: str) -> str:
    """Issue the key of an approved application, once (then the application is `issued`)."""
    a = _open_application(session, application_id)
    _check_ticket(a, ticket)
    if a.status != "approved":
        raise Conflict({"pending": "申请尚在审核中", "refused": "申请未获批准", "issued": "密钥已领取，不再显示"}
                       .get(a.status, a.status),
                       {"pending": "The application is still under review",
                        "refused": "The application was refused",
                        "issued": "The key was already collected; it is shown only once"}
                       .get(a.status, f"The application is {a.status}"), code=f"application_{a.status}")
    code = session.scalar(select(Resource.code).where(Resource.id == a.resource_id))
    a.status = "issued"  # committed together with the key (create_api_key commits): collected once only
    key, k = identity.create_api_key(session, name=f"开放数据:{a.applicant[:60]}", scopes=["data.open"],
                                     kind="open", subject=code, created_by=f"open:{a.contact[:60]}")
    a.key_id = k.id
    audit.commit(session, action="data.open.key", target_type="data_open_application", target_id=a.id,
                 after={"resource": code, "key_id": k.id, "applicant": a.applicant})
    return key


# --- CKAN and DCAT ------------------------------------------------------------------------------------------------------


def ckan_name(code: str) -> str:
    """A CKAN dataset name for a resource code (lower case, `-` and `_` only)."""
    return re.sub(r"[^a-z0-9_\-]", "-", code.lower())


def ckan_package(r: dict[str, Any], base_url: str) -> dict[str, Any]:
    """A resource as a CKAN package dict."""
    name = ckan_name(r["code"])
    org = r.get("provider_code") or ""
    return {
        "id": r["code"], "name": name, "title": r["name"], "notes": r["summary"], "type": "dataset",
        "state": "active", "private": False, "license_id": "cc-by" if r["open_type"] == "open" else "other-closed",
        "metadata_created": r["created_at"], "metadata_modified": r["updated_at"],
        "version": str(r["version"]), "num_resources": 2, "num_tags": len(r["tags"]),
        "organization": {"id": org, "name": ckan_name(org), "title": r.get("provider_name") or org,
                         "type": "organization", "state": "active", "is_organization": True},
        "owner_org": org, "tags": [{"name": t, "display_name": t} for t in r["tags"]],
        "groups": [{"name": r["classification"], "title": r["classification_label"]}],
        "extras": [{"key": "share_type", "value": r["share_type"]}, {"key": "open_type", "value": r["open_type"]},
                   {"key": "update_cycle", "value": r["update_cycle"]}, {"key": "category", "value": r["category"]}],
        "resources": [
            {"id": f"{r['code']}-csv", "package_id": r["code"], "name": f"{r['name']} (CSV)", "format": "CSV",
             "url": f"{base_url}/api/v1/open/resources/{r['code']}/download.csv", "state": "active"},
            {"id": f"{r['code']}-json", "package_id": r["code"], "name": f"{r['name']} (JSON)", "format": "JSON",
             "url": f"{base_url}/api/v1/open/resources/{r['code']}/download.json", "state": "active"},
        ],
    }


# update cycles as Dublin Core collection frequencies (the vocabulary DCAT's accrualPeriodicity expects)
_DCAT_FREQUENCY = {c: f"http://purl.org/cld/freq/{f}" for c, f in (
    ("realtime", "continuous"), ("daily", "daily"), ("weekly", "weekly"), ("monthly", "monthly"),
    ("quarterly", "quarterly"), ("yearly", "annual"), ("irregular", "irregular"))}


def dcat_catalog(session: Session, *, base_url: str) -> dict[str, Any]:
    """The open catalogue as DCAT (W3C DCAT 2) JSON-LD."""
    _total, rows = list_resources(session, open_types=("open", "conditional"), limit=200)
    offset = 200
    while offset < _total:
        rows += list_resources(session, open_types=("open", "conditional"), limit=200, offset=offset)[1]
        offset += 200
    graph: list[dict[str, Any]] = []
    datasets = []
    for r in rows:
        ds_id = f"{base_url}/api/v1/open/resources/{r['code']}"
        datasets.append({"@id": ds_id})
        graph.append({
            "@id": ds_id, "@type": "dcat:Dataset", "dct:identifier": r["code"],
            "dct:title": [{"@value": r["name"], "@language": "zh"}]
            + ([{"@value": r["name_en"], "@language": "en"}] if r.get("name_en") else []),
            "dct:description": {"@value": r["summary"], "@language": "zh"},
            # the department as a node of its own (no page of ours to point at): its code and name
            "dct:publisher": {"@type": "foaf:Organization", "dct:identifier": r["provider_code"],
                              "foaf:name": r.get("provider_name") or ""},
            "dct:issued": {"@value": str(r["published_at"])[:10] if r.get("published_at") else None,
                           "@type": "xsd:date"},
            "dct:modified": {"@value": str(r["updated_at"]).replace(" ", "T"), "@type": "xsd:dateTime"},
            "dcat:keyword": r["tags"],
            "dct:accrualPeriodicity": {"@id": _DCAT_FREQUENCY.get(r["update_cycle"], _DCAT_FREQUENCY["irregular"])},
            "dct:accessRights": r["open_type_label"],
            "dcat:distribution": [
                {"@type": "dcat:Distribution", "dct:format": fmt.upper(), "dcat:mediaType": mt,
                 "dcat:downloadURL": {"@id": f"{ds_id}/download.{fmt}"}}
                for fmt, mt in (("csv", "text/csv"), ("json", "application/json"))],
        })
    graph.insert(0, {"@id": f"{base_url}/api/v1/open/catalog.jsonld", "@type": "dcat:Catalog",
                     "dct:title": {"@value": "政务数据开放目录", "@language": "zh"},
                     "dct:language": "zh-CN", "dcat:dataset": datasets})
    return {"@context": {"dcat": "http://www.w3.org/ns/dcat#", "dct": "http://purl.org/dc/terms/",
                         "foaf": "http://xmlns.com/foaf/0.1/", "xsd": "http://www.w3.org/2001/XMLSchema#"},
            "@graph": graph}
