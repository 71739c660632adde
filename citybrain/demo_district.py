"""The synthetic demo district: a deterministic blueprint shared by every module's demo seeding.

It is modelled on Nansha District, Guangzhou (GB/T 2260 code 440115). Town and community names and
their 9/12-digit codes are synthetic but follow GB/T 10114 ranges (街道 001-099, 镇 100-199; 社区
001-199, 村 200-399), because the real NBS codes were not available offline (STANDARDS.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass

DISTRICT_CODE = "440115"
DISTRICT_NAME = "南沙区"
DISTRICT_NAME_EN = "Nansha District"
GOV_CODE = "440115000000"  # organisation code of the district government
# Bounding box of the synthetic district (lon/lat, WGS84): the Nansha peninsula's built-up core.
BBOX = (113.46, 22.70, 113.64, 22.86)
CENTER = (113.55, 22.78)


@dataclass(frozen=True)
class Town:
    code: str  # 9 digits
    name: str
    name_en: str
    kind: str  # 街道 | 镇


@dataclass(frozen=True)
class Community:
    code: str  # 12 digits
    name: str
    town_code: str
    kind: str  # 社区 | 村


@dataclass(frozen=True)
class Department:
    code: str
    name: str
    name_en: str
    short: str  # used in category -> department defaults, e.g. "城管"


TOWNS: tuple[Town, ...] = (
    Town("440115001", "南沙街道", "Nansha Subdistrict", "街道"),
    Town("440115002", "珠江街道", "Zhujiang Subdistrict", "街道"),
    Town("440115003", "龙穴街道", "Longxue Subdistrict", "街道"),
    Town("440115101", "黄阁镇", "Huangge Town", "镇"),
    Town("440115102", "横沥镇", "Hengli Town", "镇"),
    Town("440115103", "东涌镇", "Dongchong Town", "镇"),
)

_COMMUNITY_NAMES = (
    "金洲", "港前", "蕉门", "塘坑", "进港", "幸福", "珠江", "海滨", "东埠", "南北台",
    "龙穴", "新垦", "义沙", "滨海", "明珠", "凤凰", "湾区", "灵山", "庆盛", "沙尾",
    "黄阁", "莲溪", "大井", "小虎", "乌洲", "东里", "麒麟", "新港", "江鸥", "南湾",
    "横沥", "冯马", "义学", "二涌", "三涌", "新兴", "明星", "长沙", "太平", "观海",
    "东涌", "大稳", "鱼窝头", "石排", "马克", "吉祥", "和平", "南涌", "细沥", "坳尾",
    "万顷", "民生", "红港", "新安", "同兴", "沙公堡", "官坦", "十八", "八涌", "年丰",
)


def _communities() -> tuple[Community, ...]:
    out = []
    for ti, town in enumerate(TOWNS):
        for ci in range(10):
            name = _COMMUNITY_NAMES[ti * 10 + ci]
            village = town.kind == "镇" and ci >= 6
            seq = 200 + ci - 5 if village else ci + 1
            out.append(Community(f"{town.code}{seq:03d}", f"{name}{'村' if village else '社区'}", town.code,
                                 "村" if village else "社区"))
    return tuple(out)


COMMUNITIES: tuple[Community, ...] = _communities()

DEPARTMENTS: tuple[Department, ...] = (
    Department("D-YXZX", "区城市运行管理中心", "City Operations Centre", "指挥中心"),
    Department("D-CGJ", "区城市管理和综合执法局", "Urban Management and Law Enforcement Bureau", "城管"),
    Department("D-SWJ", "区水务局", "Water Affairs Bureau", "水务"),
    Department("D-STHJ", "市生态环境局南沙分局", "Ecology and Environment Sub-bureau", "生态环境"),
    Department("D-JTJ", "区交通运输局", "Transport Bureau", "交通"),
    Department("D-YJJ", "区应急管理局", "Emergency Management Bureau", "应急管理"),
    Department("D-ZJJ", "区住房和城乡建设局", "Housing and Urban-Rural Development Bureau", "住建"),
    Department("D-SCJG", "区市场监督管理局", "Market Regulation Bureau", "市场监管"),
    Department("D-GAJ", "市公安局南沙区分局", "Public Security Sub-bureau", "公安"),
    Department("D-WJJ", "区卫生健康局", "Health Commission", "卫健"),
    Department("D-MZJ", "区民政局", "Civil Affairs Bureau", "民政"),
    Department("D-ZSJ", "区政务服务数据管理局", "Government Services and Data Administration", "政数"),
    Department("D-GYQY", "区供电局（外部单位）", "Power Supply Bureau (external)", "供电"),
)


@dataclass(frozen=True)
class DemoUser:
    role: str
    real_name: str
    org_code: str
    phone: str


# One account per role; the username is the role name, the password CITYBRAIN_DEMO_PASSWORD.
DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("sysadmin", "陈系统", "D-ZSJ", "13800000001"),
    DemoUser("secadmin", "林安全", "D-ZSJ", "13800000002"),
    DemoUser("auditor", "黄审计", "D-ZSJ", "13800000003"),
    DemoUser("leader", "王区长", GOV_CODE, "13800000004"),
    DemoUser("operator", "李坐席", "D-YXZX", "13800000005"),
    DemoUser("handler", "张城管", "D-CGJ", "13800000006"),
    DemoUser("gridworker", "赵网格", COMMUNITIES[0].code, "13800000007"),
    DemoUser("analyst", "周分析", "D-ZSJ", "13800000008"),
    DemoUser("citizen", "吴市民", "", "13800000009"),
)


def department(short: str) -> Department:
    """The demo department with this short name (e.g. "水务")."""
    return next(d for d in DEPARTMENTS if d.short == short)


def demo_photo(rgb: tuple[int, int, int] = (120, 150, 110), size: int = 48) -> bytes:
    """A small solid-colour PNG: the demo's stand-in for a scene photo (uploaded like a real one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * size
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * size)) + chunk(b"IEND", b""))
