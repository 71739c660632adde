"""Base-database schemas and the quality rules of collection (归集): per-field rules compiled into fast
validators, cross-field consistency (多元校核) and the quality report.

A field definition is a dict (the catalogue stores the same shape as a resource's data items):
`name, label, type (string|integer|number|date|boolean), required, max_len, pattern, codes, check
(id_number|credit_code|org_code|area_code|phone), past (date not in the future), grade (public|internal|
sensitive), mask (id_number|phone|name|address)`.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table

from citybrain import codes, masking
from citybrain.data import models as m

TYPES = ("string", "integer", "number", "date", "boolean")
CHECKS: dict[str, Callable[[str], str | None]] = {
    "id_number": codes.check_id_number,
    "credit_code": codes.check_credit_code,
    "org_code": codes.check_org_code,
    "area_code": codes.check_area_code,
    "phone": codes.check_phone,
}
MASKS: dict[str, Callable[[Any], Any]] = {
    "id_number": masking.mask_id_number,
    "phone": masking.mask_phone,
    "name": masking.mask_name,
    "address": masking.mask_address,
    "credit_code": masking.mask_credit_code,
    "date": masking.mask_date,
    "full": masking.mask_all,
}
GRADES = ("public", "internal", "sensitive")

RULE_LABELS = {
    "required": ("必填项为空", "Required value missing"),
    "type": ("数据类型不符", "Wrong data type"),
    "max_len": ("长度超限", "Too long"),
    "pattern": ("格式不符", "Does not match the pattern"),
    "codes": ("不在代码表内", "Not in the code list"),
    "date": ("日期不合理", "Implausible date"),
    "unique": ("主键重复", "Duplicate key in this load"),
    "consistency": ("多元校核不一致", "Inconsistent with other fields"),
    "cross_source": ("与其他基础库不一致", "Not found in the related base database"),
    "id_number": ("身份证号校验失败", "Invalid ID number"),
    "credit_code": ("统一社会信用代码校验失败", "Invalid credit code"),
    "org_code": ("组织机构代码校验失败", "Invalid organisation code"),
    "area_code": ("行政区划代码无效", "Invalid area code"),
    "phone": ("手机号格式不符", "Invalid mobile number"),
}


def F(name: str, label: str, type: str = "string", **kw: Any) -> dict[str, Any]:
    """A field definition."""
    return {"name": name, "label": label, "type": type, **kw}


@dataclass
class BaseTable:
    """One base database: its table, key column, field definitions and cross-field checks."""

    name: str
    label: str
    table: Table
    key: str
    fields: list[dict[str, Any]]
    consistency: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None
    filterable: tuple[str, ...] = ()
    columns: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.columns = [f["name"] for f in self.fields]


ETHNICITIES = ("汉族", "壮族", "回族", "满族", "苗族", "土家族", "瑶族", "畲族", "蒙古族", "朝鲜族", "其他")


_ID_BORN: dict[str, dt.date] = {}  # YYYYMMDD of an ID number -> its date (bounded memo)
_ID_GENDER = {d: codes.id_gender("0" * 16 + d + "0") for d in "0123456789"}


def _population_consistency(row: dict[str, Any]) -> list[tuple[str, str]]:
    idn = row.get("id_number")
    out = []
    if idn and len(idn) == 18:
        born = row.get("birth_date")
        if born is not None:
            ymd = idn[6:14]
            id_born = _ID_BORN.get(ymd)
            if id_born is None:
                id_born = codes.id_birth_date(idn)
                if len(_ID_BORN) < 100_000:
                    _ID_BORN[ymd] = id_born
            if born != id_born:
                out.append(("birth_date", "consistency"))
        g = row.get("gender")
        if g and g != (_ID_GENDER.get(idn[16]) or codes.id_gender(idn)):
            out.append(("gender", "consistency"))
    return out


def _entity_consistency(row: dict[str, Any]) -> list[tuple[str, str]]:
    cc, area = row.get("credit_code"), row.get("area_code")
    if cc and area and not area.startswith(cc[2:4]):
        return [("area_code", "consistency")]
    return []


def _licence_consistency(row: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    hid = row.get("holder_id")
    if hid and codes.check_id_number(hid) and codes.check_credit_code(hid):
        out.append(("holder_id", "consistency"))
    vf, vt = row.get("valid_from"), row.get("valid_to")
    if vf and vt and vt < vf:
        out.append(("valid_to", "consistency"))
    return out


BASE_TABLES: dict[str, BaseTable] = {
    "population": BaseTable(
        "population", "人口基础库", m.Population.__table__, "id_number",
        [
            F("id_number", "公民身份号码", required=True, check="id_number", grade="sensitive", mask="id_number"),
            F("name", "姓名", required=True, max_len=50, grade="sensitive", mask="name"),
            F("gender", "性别", required=True, codes=["男", "女"], grade="internal"),
            F("birth_date", "出生日期", "date", required=True, past=True, grade="sensitive", mask="date"),
            F("ethnicity", "民族", codes=list(ETHNICITIES), grade="internal"),
            F("household_address", "户籍地址", max_len=200, grade="sensitive", mask="address"),
            F("residence_address", "居住地址", max_len=200, grade="sensitive", mask="address"),
            F("phone", "联系电话", check="phone", grade="sensitive", mask="phone"),
            F("area_code", "所属区划", check="area_code", grade="public"),
        ],
        _population_consistency, ("id_number", "area_code", "gender"),
    ),
    "legal_entity": BaseTable(
        "legal_entity", "法人单位基础库", m.LegalEntity.__table__, "credit_code",
        [
            F("credit_code", "统一社会信用代码", required=True, check="credit_code", grade="public"),
            F("name", "名称", required=True, max_len=200, grade="public"),
            F("entity_type", "主体类型", max_len=40, grade="public"),
            F("legal_rep", "法定代表人", max_len=50, grade="internal", mask="name"),
            F("registration_authority", "登记机关", max_len=100, grade="public"),
            F("established_on", "成立日期", "date", past=True, grade="public"),
            F("registered_capital", "注册资本(万元)", "number", grade="public"),
            F("business_scope", "经营范围", max_len=2000, grade="public"),
            F("status", "登记状态", required=True, codes=["存续", "在业", "迁出", "注销", "吊销"], grade="public"),
            F("address", "住所", max_len=200, grade="public"),
            F("area_code", "所属区划", check="area_code", grade="public"),
        ],
        _entity_consistency, ("credit_code", "area_code", "status", "name"),
    ),
    "place": BaseTable(
        "place", "地名地址与兴趣点库", m.Place.__table__, "code",
        [
            F("code", "编码", required=True, max_len=40, pattern=r"^[0-9A-Za-z\-]{4,40}$", grade="public"),
            F("name", "名称", required=True, max_len=200, grade="public"),
            F("kind", "类型", required=True, codes=["地名", "地址", "POI"], grade="public"),
            F("category", "类别", max_len=40, grade="public"),
            F("address", "地址", max_len=200, grade="public"),
            F("lon", "经度", "number", min=73.0, max=136.0, grade="public"),
            F("lat", "纬度", "number", min=3.0, max=54.0, grade="public"),
            F("area_code", "所属区划", check="area_code", grade="public"),
        ],
        None, ("code", "kind", "category", "area_code"),
    ),
    "indicator": BaseTable(
        "indicator", "宏观经济基础库", m.Indicator.__table__, "series_key",
        [
            F("series_key", "序列键", required=True, max_len=80, grade="public"),
            F("indicator_code", "指标代码", required=True, max_len=30, grade="public"),
            F("indicator_name", "指标名称", required=True, max_len=100, grade="public"),
            F("area_code", "区划代码", required=True, check="area_code", grade="public"),
            F("period", "统计期", required=True, pattern=r"^\d{4}(Q[1-4]|-(0[1-9]|1[0-2]))?$", grade="public"),
            F("value", "数值", "number", required=True, grade="public"),
            F("unit", "单位", max_len=20, grade="public"),
        ],
        None, ("indicator_code", "area_code", "period"),
    ),
    "licence": BaseTable(
        "licence", "电子证照库", m.Licence.__table__, "licence_no",
        [
            F("licence_no", "证照编号", required=True, max_len=64, grade="public"),
            F("licence_type", "证照类型", required=True, max_len=60, grade="public"),
            F("holder_name", "持证主体", required=True, max_len=200, grade="internal", mask="name"),
            F("holder_id", "持证主体代码", required=True, max_len=18, grade="sensitive", mask="id_number"),
            F("issuer", "发证机关", required=True, max_len=100, grade="public"),
            F("issued_on", "发证日期", "date", required=True, past=True, grade="public"),
            F("valid_from", "有效期起", "date", required=True, grade="public"),
            F("valid_to", "有效期止", "date", grade="public"),
            F("status", "状态", required=True, codes=["有效", "注销", "过期", "吊销"], grade="public"),
        ],
        _licence_consistency, ("licence_no", "holder_id", "licence_type", "status"),
    ),
}


class RuleFailed(Exception):
    """A value broke a rule."""

    def __init__(self, rule: str):
        self.rule = rule


_MIN_DATE = dt.date(1900, 1, 1)


def _to_date(v: Any) -> dt.date:
    if type(v) is str and len(v) == 10 and v[4] == "-":
        return dt.date.fromisoformat(v)
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    s = str(v).strip()
    if len(s) == 8 and s.isdigit():
        s = f"{s[:4]}-{s[4:6]}-{s[6:]}"
    elif "/" in s:
        s = s.replace("/", "-")
        y, mth, d = s.split("-")[:3]
        s = f"{int(y):04d}-{int(mth):02d}-{int(d[:2]):02d}"
    return dt.date.fromisoformat(s[:10])


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "是", "y"):
        return True
    if s in ("0", "false", "no", "否", "n"):
        return False
    raise ValueError(s)


def _to_number(v: Any) -> float:
    x = float(v.strip() if isinstance(v, str) else v)
    if not math.isfinite(x):  # "nan", "inf": no quantity, and NaN would slip past min/max
        raise ValueError(v)
    return x


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "string": lambda v: v.strip() if isinstance(v, str) else str(v),
    "integer": lambda v: v if type(v) is int else int(str(v).strip()),
    "number": _to_number,
    "date": _to_date,
    "boolean": _to_bool,
}


def compile_field(f: dict[str, Any], today: dt.date) -> Callable[[Any], Any]:
    """A function that converts one raw value or raises RuleFailed(rule)."""
    conv = _CONVERT[f.get("type", "string")]
    max_len = f.get("max_len")
    pattern = re.compile(f["pattern"]) if f.get("pattern") else None
    code_set = frozenset(f["codes"]) if f.get("codes") else None
    check = CHECKS.get(f.get("check") or "")
    check_name = f.get("check")
    past = bool(f.get("past"))
    lo, hi = f.get("min"), f.get("max")
    is_date = f.get("type") == "date"
    if not (max_len or pattern or code_set or check or is_date or lo is not None or hi is not None):
        def plain(v: Any) -> Any:
            try:
                return conv(v)
            except (ValueError, TypeError):
                raise RuleFailed("type") from None

        return plain
    if check_name == "id_number":
        check = lambda v: codes.check_id_number(v, today=today)  # noqa: E731

    def run(v: Any) -> Any:
        try:
            v = conv(v)
        except (ValueError, TypeError, IndexError):
            raise RuleFailed("date" if is_date else "type") from None
        if max_len is not None and len(v) > max_len:
            raise RuleFailed("max_len")
        if pattern is not None and not pattern.match(v):
            raise RuleFailed("pattern")
        if code_set is not None and v not in code_set:
            raise RuleFailed("codes")
        if check is not None and check(v):
            raise RuleFailed(check_name)
        if is_date and (v < _MIN_DATE or (past and v > today)):
            raise RuleFailed("date")
        if lo is not None and v < lo:
            raise RuleFailed("type")
        if hi is not None and v > hi:
            raise RuleFailed("type")
        return v

    return run


@functools.lru_cache(maxsize=8)
def _memo_check(check: Callable[[str], str | None]) -> Callable[[str], bool]:
    """`check(v) is None`, remembered for the values seen (area codes repeat within and across loads)."""
    ok: dict[str, bool] = {}

    def valid(v: str) -> bool:
        r = ok.get(v)
        if r is None:
            r = check(v) is None
            if len(ok) < 100_000:
                ok[v] = r
        return r

    return valid


@functools.lru_cache(maxsize=8)
def _date_parser(past: bool, today: dt.date) -> Callable[[str], dt.date | None]:
    """The date of an ISO `YYYY-MM-DD` text within the date rule (1900 <= d, <= today if `past`), or None;
    remembered per text (birth dates repeat within and across loads)."""
    seen: dict[str, dt.date | None] = {}

    def parse(v: str) -> dt.date | None:
        try:
            return seen[v]
        except KeyError:
            d = None
            if len(v) == 10 and v[4] == "-" and v[7] == "-" and (v[:4] + v[5:7] + v[8:]).isdigit() and v.isascii():
                try:
                    d = dt.date.fromisoformat(v)
                except ValueError:
                    d = None
                if d is not None and (d < _MIN_DATE or (past and d > today)):
                    d = None
            if len(seen) < 100_000:
                seen[v] = d
            return d

    return parse


def _fast_check(check: str, today: dt.date) -> Callable[[str], bool]:
    """`CHECKS[check](v) is None` for a stripped text, the fastest way."""
    if check == "id_number":
        return codes.id_number_predicate(today)
    if check == "phone":
        return codes.PHONE_RE.match  # type: ignore[return-value] - check_phone is this match on a text
    if check == "area_code":
        return _memo_check(CHECKS[check])
    fn = CHECKS[check]
    return lambda v: fn(v) is None


def compile_row(fields: list[dict[str, Any]], key: str,
                consistency: Callable[[dict[str, Any]], list[tuple[str, str]]] | None,
                today: dt.date) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """One generated function for a row shape: the clean row when every rule passes (the same values
    `Validator.check` would give), else None, and `Validator.check` then finds and records the failures.
    Text values are checked inline (cheap checks first), dates and area codes through memos, ID numbers
    through `codes.id_number_predicate`; other types call their compiled field function."""
    env: dict[str, Any] = {"_consistency": consistency}
    lines = ["def row(raw):", "    get = raw.get"]
    names = []
    for i, f in enumerate(fields):
        name = f["name"]
        names.append(name)
        required = bool(f.get("required")) or name == key
        ftype = f.get("type", "string")
        v = f"v{i}"
        body: list[str] = []
        if ftype == "string" and f.get("min") is None and f.get("max") is None:
            code_set = frozenset(f["codes"]) if f.get("codes") else None
            if code_set is not None and all(c == c.strip() for c in code_set):
                # a value found as it is needs no strip (the codes have no outer spaces)
                env[f"codes{i}"] = code_set
                body += [f"if {v} not in codes{i}:", f"    {v} = {v}.strip()",
                         f"    if {v} not in codes{i}:", "        return None"]
            else:
                body.append(f"{v} = {v}.strip()")
                if code_set is not None:
                    env[f"codes{i}"] = code_set
                    body += [f"if {v} not in codes{i}:", "    return None"]
            if f.get("max_len"):
                body += [f"if len({v}) > {int(f['max_len'])}:", "    return None"]
            if f.get("pattern"):
                env[f"pattern{i}"] = re.compile(f["pattern"]).match
                body += [f"if not pattern{i}({v}):", "    return None"]
            check = f.get("check")
            if check in CHECKS:
                env[f"check{i}"] = _fast_check(check, today)
                body += [f"if not check{i}({v}):", "    return None"]
        elif ftype == "date" and f.get("min") is None and f.get("max") is None:
            env[f"date{i}"] = _date_parser(bool(f.get("past")), today)
            body += [f"{v} = date{i}({v})", f"if {v} is None:", "    return None"]
        else:
            env[f"field{i}"] = compile_field(f, today)
            body += ["try:", f"    {v} = field{i}({v})", "except Exception:", "    return None"]
        # a non-empty text goes through the rules; a missing value is None; anything else: field by field
        lines += [f"    {v} = get({name!r})", f"    if type({v}) is str and {v}:"]
        lines += ["        " + b for b in body]
        lines += [f"    elif {v} is None or {v} == '':", "        return None" if required else f"        {v} = None",
                  "    else:", "        return None"]
    lines.append("    out = {" + ", ".join(f"{n!r}: v{i}" for i, n in enumerate(names)) + "}")
    if consistency is not None:
        lines += ["    if _consistency(out):", "        return None"]
    lines.append("    return out")
    exec("\n".join(lines), env)  # noqa: S102 - source built above from field definitions (names via repr)
    return env["row"]


class Validator:
    """Validates rows against field definitions; collects the quality report as it goes."""

    SAMPLES = 5

    def __init__(self, fields: list[dict[str, Any]], key: str,
                 consistency: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None,
                 today: dt.date | None = None):
        today = today or dt.date.today()
        self.fields = fields
        self.key = key
        self.plan = [(f["name"], f.get("label", f["name"]), bool(f.get("required")) or f["name"] == key,
                      compile_field(f, today)) for f in fields]
        self.labels = {f.get("label", f["name"]): f["name"] for f in fields}
        self.consistency = consistency
        self.seen: set[Any] = set()
        self.failures: dict[str, dict[str, Any]] = {}
        self.masks = {f["name"]: MASKS[f["mask"]] for f in fields if f.get("mask") in MASKS}
        self._row = compile_row(fields, key, consistency, today)
        self._hdr: tuple[tuple, bool] = ((), False)  # last header seen, and whether it uses labels

    def normalise_keys(self, row: dict[str, Any]) -> dict[str, Any]:
        """Accept column headers given as field names or as Chinese labels."""
        if not row:
            return row
        labels = self.labels
        hdr = tuple(row)
        if hdr != self._hdr[0]:
            self._hdr = (hdr, any(k in labels for k in hdr))
        if self._hdr[1]:
            return {labels.get(k, k): v for k, v in row.items()}
        return row

    def _fail(self, row_no: int, name: str, rule: str, value: Any) -> None:
        entry = self.failures.get(rule)
        if entry is None:
            entry = self.failures[rule] = {"rule": rule, "label_zh": RULE_LABELS.get(rule, (rule, rule))[0],
                                           "label_en": RULE_LABELS.get(rule, (rule, rule))[1], "count": 0,
                                           "fields": {}, "samples": []}
        entry["count"] += 1
        entry["fields"][name] = entry["fields"].get(name, 0) + 1
        if len(entry["samples"]) < self.SAMPLES:
            mask = self.masks.get(name)
            shown = value if mask is None or value in (None, "") else mask(str(value))
            entry["samples"].append({"row": row_no, "field": name, "value": None if shown is None else str(shown)})

    def check(self, row_no: int, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
        """The clean row, or None and the reasons it was refused."""
        out = self._row(raw)
        if out is not None:
            k = out[self.key]
            if k not in self.seen:
                self.seen.add(k)
                return out, []
        return self.check_each(row_no, raw)

    def check_each(self, row_no: int, raw: dict[str, Any]) -> tuple[dict[str, Any] | None, list[dict[str, str]]]:
        """`check` field by field, recording every failure in the report (the path of refused rows)."""
        out: dict[str, Any] = {}
        errs: list[dict[str, str]] | None = None
        get = raw.get
        for name, _label, required, fn in self.plan:
            v = get(name)
            if v is None or v == "":
                if required:
                    errs = errs or []
                    errs.append({"field": name, "rule": "required"})
                    self._fail(row_no, name, "required", None)
                out[name] = None
                continue
            try:
                out[name] = fn(v)
            except RuleFailed as e:
                errs = errs or []
                errs.append({"field": name, "rule": e.rule})
                self._fail(row_no, name, e.rule, v)
            except Exception:  # noqa: BLE001 - a value no rule expected (e.g. a list for a text field)
                errs = errs or []
                errs.append({"field": name, "rule": "type"})
                self._fail(row_no, name, "type", v)
        if errs is None and self.consistency is not None:
            for name, rule in self.consistency(out):
                errs = errs or []
                errs.append({"field": name, "rule": rule})
                self._fail(row_no, name, rule, out.get(name))
        if errs is None:
            k = out[self.key]
            if k in self.seen:
                errs = [{"field": self.key, "rule": "unique"}]
                self._fail(row_no, self.key, "unique", k)
            else:
                self.seen.add(k)
        return (None, errs) if errs else (out, [])

    def fail_external(self, row_no: int, name: str, rule: str, value: Any) -> None:
        """Record a failure found outside `check` (cross-source)."""
        self._fail(row_no, name, rule, value)

    def report(self) -> list[dict[str, Any]]:
        """Failures by rule, most frequent first."""
        return sorted(self.failures.values(), key=lambda e: -e["count"])
