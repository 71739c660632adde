"""Check digits of the national codes (STANDARDS.md §7.3, §9): ID numbers, credit codes, organisation codes.

- GB 11643-1999 公民身份号码: 6-digit GB/T 2260 area code + YYYYMMDD + 3-digit sequence + ISO 7064 MOD 11-2.
- GB 32100-2015 统一社会信用代码: 18 characters over a 31-symbol set, MOD 31, with the embedded
  GB 11714 组织机构代码 (positions 9-17) carrying its own MOD 11 check.
- GB/T 2260 area codes: only the province prefix and the structure can be checked offline (the full MCA list
  changes yearly); `KNOWN_AREAS` lists the codes of STANDARDS.md §9.1.

Each `check_*` returns None when the value is valid, else a short reason code; `is_valid_*` wrap them.
`make_*` build valid synthetic values for demos and tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import random
import re
from collections.abc import Callable

# --- GB/T 2260 ---------------------------------------------------------------------------------------------------

PROVINCES: dict[str, str] = {
    "11": "北京市", "12": "天津市", "13": "河北省", "14": "山西省", "15": "内蒙古自治区",
    "21": "辽宁省", "22": "吉林省", "23": "黑龙江省",
    "31": "上海市", "32": "江苏省", "33": "浙江省", "34": "安徽省", "35": "福建省", "36": "江西省", "37": "山东省",
    "41": "河南省", "42": "湖北省", "43": "湖南省", "44": "广东省", "45": "广西壮族自治区", "46": "海南省",
    "50": "重庆市", "51": "四川省", "52": "贵州省", "53": "云南省", "54": "西藏自治区",
    "61": "陕西省", "62": "甘肃省", "63": "青海省", "64": "宁夏回族自治区", "65": "新疆维吾尔自治区",
    "71": "台湾省", "81": "香港特别行政区", "82": "澳门特别行政区",
}

KNOWN_AREAS: dict[str, str] = {
    "440000": "广东省", "440100": "广州市", "440111": "白云区", "440115": "南沙区", "440113": "番禺区",
    "440400": "珠海市", "440402": "香洲区", "440403": "斗门区", "440404": "金湾区",
    "340000": "安徽省", "341100": "滁州市", "341102": "琅琊区", "341103": "南谯区",
    "110000": "北京市", "110105": "朝阳区", "350100": "福州市",
}

_AREA_RE = re.compile(r"^\d{6}$")


def check_area_code(code: str | None) -> str | None:
    """None if `code` is a plausible GB/T 2260 code (6 digits, a real province, well-formed levels)."""
    if not code or not _AREA_RE.match(code):
        return "area_format"
    if code[:2] not in PROVINCES:
        return "area_province"
    if code[2:4] == "00" and code[4:6] != "00":
        return "area_structure"
    return None


def is_valid_area_code(code: str | None) -> bool:
    """True if `code` passes `check_area_code`."""
    return check_area_code(code) is None


# --- GB 11643 ID numbers --------------------------------------------------------------------------------------------

ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"
ID_RE = re.compile(r"^[1-9]\d{5}(18|19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dX]$")


def id_check_char(body17: str) -> str:
    """The MOD 11-2 check character of the first 17 digits."""
    return ID_CHECK[sum(map(operator.mul, map(int, body17), ID_WEIGHTS)) % 11]


def check_id_number(value: str | None, *, today: dt.date | None = None) -> str | None:
    """None if `value` is a valid 18-character ID number; else `id_format`, `id_area`, `id_date` or `id_check`."""
    if not value or not ID_RE.match(value):
        return "id_format"
    if check_area_code(value[:6]):
        return "id_area"
    try:
        born = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return "id_date"
    if born > (today or dt.date.today()):
        return "id_date"
    if id_check_char(value[:17]) != value[17]:
        return "id_check"
    return None


_DIGITS = frozenset("0123456789")
_MEMO_MAX = 200_000


@functools.lru_cache(maxsize=4)
def id_number_predicate(today: dt.date) -> Callable[[str], bool]:
    """A fast `check_id_number(v, today=today) is None` for bulk loads, memoised per part of the number
    (area, birth date and sequence: their check-digit weights and their own checks; one predicate and its
    memos per day, shared by the loads of the process). It answers True only
    for numbers `check_id_number` accepts; it also answers False for anything unusual (non-ASCII digits),
    so a False means "ask `check_id_number` for the reason"."""
    areas: dict[str, int | None] = {}
    dates: dict[str, int | None] = {}
    seqs: dict[str, int | None] = {}
    w_area, w_date, w_seq = ID_WEIGHTS[:6], ID_WEIGHTS[6:14], ID_WEIGHTS[14:]

    def weigh(part: str, weights: tuple[int, ...]) -> int | None:
        if not _DIGITS.issuperset(part):
            return None
        return sum(int(c) * w for c, w in zip(part, weights, strict=True))

    def area(p: str) -> int | None:
        return None if p[0] == "0" or check_area_code(p) else weigh(p, w_area)

    def date(p: str) -> int | None:
        s = weigh(p, w_date)
        if s is None or p[:2] not in ("18", "19", "20"):
            return None
        try:
            born = dt.date(int(p[:4]), int(p[4:6]), int(p[6:]))
        except ValueError:
            return None
        return None if born > today else s

    def part(memo: dict[str, int | None], p: str, fn: Callable[[str], int | None]) -> int | None:
        try:
            return memo[p]
        except KeyError:
            s = fn(p)
            if len(memo) < _MEMO_MAX:
                memo[p] = s
            return s

    def valid(v: str) -> bool:
        if len(v) != 18:
            return False
        a = areas.get(v[:6], -1)
        if a == -1:
            a = part(areas, v[:6], area)
        d = dates.get(v[6:14], -1)
        if d == -1:
            d = part(dates, v[6:14], date)
        s = seqs.get(v[14:17], -1)
        if s == -1:
            s = part(seqs, v[14:17], lambda p: weigh(p, w_seq))
        if a is None or d is None or s is None:
            return False
        return ID_CHECK[(a + d + s) % 11] == v[17]

    return valid


def is_valid_id_number(value: str | None) -> bool:
    """True if `value` is a valid GB 11643 ID number."""
    return check_id_number(value) is None


def id_birth_date(value: str) -> dt.date:
    """The birth date an ID number carries."""
    return dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))


def id_gender(value: str) -> str:
    """`男` or `女` from the sequence digit's parity."""
    return "男" if int(value[16]) % 2 else "女"


def make_id_number(area: str, born: dt.date, seq: int) -> str:
    """A valid ID number for this area, birth date and sequence (0-999; odd = male)."""
    body = f"{area}{born:%Y%m%d}{seq % 1000:03d}"
    return body + id_check_char(body)


# --- GB 11714 organisation codes ---------------------------------------------------------------------------------------

ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_RE = re.compile(r"^[0-9A-Z]{8}[0-9X]$")


def _org_value(c: str) -> int:
    return int(c) if c.isdigit() else ord(c) - 55  # A = 10 ... Z = 35


def org_check_char(body8: str) -> str:
    """The GB 11714 check character of an 8-character organisation code body."""
    s = sum(_org_value(c) * w for c, w in zip(body8, ORG_WEIGHTS, strict=True))
    c = 11 - s % 11
    return "X" if c == 10 else "0" if c == 11 else str(c)


def check_org_code(value: str | None) -> str | None:
    """None if `value` is a valid 9-character organisation code (no hyphen); else a reason code."""
    if not value or not _ORG_RE.match(value):
        return "org_format"
    if org_check_char(value[:8]) != value[8]:
        return "org_check"
    return None


# --- GB 32100 unified social credit codes ---------------------------------------------------------------------------------

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_VALUE = {c: i for i, c in enumerate(USCC_CHARS)}
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
USCC_RE = re.compile(r"^[0-9A-HJ-NP-RTUWXY]{2}\d{6}[0-9A-HJ-NP-RTUWXY]{10}$")
# 登记管理部门码 -> 机构类别码 allowed (GB 32100 附录 A)
USCC_AUTHORITIES = {
    "1": "123459", "2": "19", "3": "1234589", "4": "19", "5": "12349", "6": "129", "7": "129", "8": "129",
    "9": "123", "A": "19", "N": "1239", "Y": "1",
}


def uscc_check_char(body17: str) -> str:
    """The GB 32100 check character of the first 17 characters."""
    s = sum(USCC_VALUE[c] * w for c, w in zip(body17, USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - s % 31) % 31]


def check_credit_code(value: str | None) -> str | None:
    """None if `value` is a valid unified social credit code; else `uscc_format`, `uscc_area`, `uscc_org` or `uscc_check`."""
    if not value or not USCC_RE.match(value):
        return "uscc_format"
    kinds = USCC_AUTHORITIES.get(value[0])
    if kinds is None or value[1] not in kinds:
        return "uscc_format"
    if check_area_code(value[2:8]):
        return "uscc_area"
    if uscc_check_char(value[:17]) != value[17]:
        return "uscc_check"
    if check_org_code(value[8:17]):
        return "uscc_org"
    return None


def is_valid_credit_code(value: str | None) -> bool:
    """True if `value` is a valid GB 32100 code (with its embedded organisation code)."""
    return check_credit_code(value) is None


_ORG_BODY_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # organisation bodies limited to the USCC alphabet


def make_org_code(rng: random.Random) -> str:
    """A random valid organisation code whose characters all fit the credit-code alphabet."""
    while True:
        body = "".join(rng.choice(_ORG_BODY_CHARS) for _ in range(8))
        code = body + org_check_char(body)
        if code[8] in USCC_VALUE:
            return code


def make_credit_code(area: str, rng: random.Random, *, authority: str = "9", kind: str = "1") -> str:
    """A valid credit code (default 91: 工商 企业) registered in this area."""
    body = f"{authority}{kind}{area}{make_org_code(rng)}"
    return body + uscc_check_char(body)


# --- phones -----------------------------------------------------------------------------------------------------------

PHONE_RE = re.compile(r"^1[3-9]\d{9}$")


def check_phone(value: str | None) -> str | None:
    """None if `value` is an 11-digit mainland mobile number."""
    return None if value and PHONE_RE.match(value) else "phone_format"
