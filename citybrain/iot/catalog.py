"""The shipped device models (物模型): properties with units, types and physical ranges, events, default rules.

A model's `code` is a short slug; `number` (2 digits) goes into the unified device code; `component_class` is
the GB/T 47678.5-2026 management-component class (5 digits) of the facility the device watches, so the first
11 digits of a device code read like a 事项代码 (6-digit area + 5-digit class). `category_hint` is the event
class a case opened from the model's alarms is suggested to use (the cases module decides).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Prop:
    key: str
    name: str
    name_en: str
    unit: str = ""
    type: str = "number"  # number | bool | enum | string
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()  # enum values

    def __post_init__(self) -> None:  # finite bounds for the ingestion check (lo <= v <= hi also refuses NaN/inf)
        object.__setattr__(self, "lo", -sys.float_info.max if self.min is None else self.min)
        object.__setattr__(self, "hi", sys.float_info.max if self.max is None else self.max)

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "name_en": self.name_en, "unit": self.unit, "type": self.type,
                "min": self.min, "max": self.max, "values": list(self.values)}


@dataclass(frozen=True)
class DefaultRule:
    key: str
    name: str
    name_en: str
    property: str
    kind: str  # threshold | duration | rate | nodata
    op: str = ">"  # > | < | between | outside
    threshold: float | None = None
    threshold2: float | None = None
    duration_s: int = 0
    hysteresis: float = 0.0
    severity: int = 1
    category_hint: str | None = None


@dataclass(frozen=True)
class DeviceModel:
    code: str
    number: str  # 2 digits, part of the device code
    name: str
    name_en: str
    component_class: str  # GB/T 47678.5 class of the watched facility
    department: str  # demo_district Department.short of the usual owner
    report_interval_s: int
    offline_after_missed: int
    category_hint: str
    props: tuple[Prop, ...]
    events: tuple[tuple[str, str, str], ...] = ()  # (key, zh, en)
    rules: tuple[DefaultRule, ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {p.key: p for p in self.props})
        object.__setattr__(self, "check", compile_check(self.props))

    def prop(self, key: str) -> Prop | None:
        return self.by_key.get(key)  # type: ignore[attr-defined]

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code, "number": self.number, "name": self.name, "name_en": self.name_en,
            "component_class": self.component_class, "department": self.department,
            "report_interval_s": self.report_interval_s, "offline_after_missed": self.offline_after_missed,
            "category_hint": self.category_hint, "properties": [p.as_dict() for p in self.props],
            "events": [{"key": k, "name": zh, "name_en": en} for k, zh, en in self.events],
            "default_rules": [r.__dict__ for r in self.rules],
        }


def compile_check(props: tuple[Prop, ...]) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """One generated function per model for the ingestion hot path: given a reading's `values`, the accepted
    values (the same dict when nothing needs converting; else a copy with numbers as floats and booleans as
    1.0/0.0, in the values' order) when EVERY property is known and valid, else None (the caller then checks
    property by property and records the reasons). The same rules as `iot.service._check_each`."""
    env: dict[str, Any] = {}
    lines = ["def check(vals):", "    get = vals.get", "    n = 0", "    conv = False"]
    for i, p in enumerate(props):
        v = f"v{i}"
        # a JSON null counts as missing here, so `n` falls short and the caller rejects it property by property
        lines += [f"    {v} = get({p.key!r})", f"    if {v} is not None:", "        n += 1"]
        if p.type == "number":
            bounds = f"{p.lo!r} <= {v} <= {p.hi!r}"  # type: ignore[attr-defined]  # exact literals (repr)
            lines += [f"        if {v}.__class__ is float:", f"            if not {bounds}:", "                return None",
                      f"        elif {v}.__class__ is int and {bounds}:", "            conv = True",
                      "        else:", "            return None"]
        elif p.type == "bool":
            lines += [f"        if {v} is True or {v} is False or ({v}.__class__ is int and ({v} == 0 or {v} == 1)):",
                      "            conv = True", "        else:", "            return None"]
        elif p.type == "enum":
            env[f"values{i}"] = frozenset(p.values)
            lines += [f"        if {v}.__class__ is not str or {v} not in values{i}:", "            return None"]
        else:
            lines += [f"        if {v}.__class__ is not str or len({v}) > 200 or '\\x00' in {v}:",
                      "            return None"]
    lines += ["    if not n or n != len(vals):", "        return None", "    if conv:",
              "        return {k: float(x) if x.__class__ is int or x.__class__ is bool else x for k, x in vals.items()}",
              "    return vals"]
    exec("\n".join(lines), env)  # noqa: S102 - source built above from the model's properties (keys via repr)
    return env["check"]  # type: ignore[no-any-return]


N, B, E = "number", "bool", "enum"

MODELS: tuple[DeviceModel, ...] = (
    DeviceModel(
        "water_level", "01", "水位监测仪", "Water level gauge", "01067", "水务", 60, 5, "01067",
        (Prop("water_level", "水位", "Water level", "m", N, -5, 20), Prop("battery", "电量", "Battery", "%", N, 0, 100)),
        (("low_battery", "电量低", "Low battery"),),
        (DefaultRule("wl_warn", "水位超警戒", "Water above warning level", "water_level", "threshold", ">", 2.0,
                     hysteresis=0.1, severity=2, category_hint="01067"),
         DefaultRule("wl_flood", "水位持续超保证水位", "Water above danger level for 5 minutes", "water_level",
                     "duration", ">", 2.5, duration_s=300, hysteresis=0.1, severity=3, category_hint="01067"),
         DefaultRule("wl_rise", "水位快速上涨", "Water rising fast", "water_level", "rate", ">", 0.05,
                     severity=2, category_hint="01067"),
         DefaultRule("wl_silent", "水位计无数据", "Gauge silent", "water_level", "nodata", duration_s=600,
                     severity=1, category_hint="01067")),
    ),
    DeviceModel(
        "manhole", "02", "智能井盖", "Smart manhole cover", "01003", "城管", 300, 3, "01003",
        (Prop("tilt", "倾角", "Tilt", "°", N, 0, 90), Prop("displaced", "位移", "Displaced", "", B),
         Prop("water_high", "井下高水位", "High water in well", "", B), Prop("battery", "电量", "Battery", "%", N, 0, 100)),
        (("opened", "井盖开启", "Cover opened"),),
        (DefaultRule("mc_tilt", "井盖倾斜", "Cover tilted", "tilt", "threshold", ">", 15, hysteresis=3, severity=2,
                     category_hint="01003"),
         DefaultRule("mc_disp", "井盖位移或丢失", "Cover displaced or missing", "displaced", "threshold", ">", 0.5,
                     severity=3, category_hint="01003"),
         DefaultRule("mc_water", "井下水位过高", "Water high in the well", "water_high", "threshold", ">", 0.5,
                     severity=2, category_hint="01003")),
    ),
    DeviceModel(
        "hydrant", "03", "消防栓水压监测仪", "Hydrant pressure sensor", "01013", "应急管理", 300, 3, "01013",
        (Prop("pressure", "水压", "Pressure", "MPa", N, 0, 2.5), Prop("battery", "电量", "Battery", "%", N, 0, 100)),
        (("opened", "消防栓开启", "Hydrant opened"),),
        (DefaultRule("hp_low", "消防栓水压不足", "Hydrant pressure low", "pressure", "threshold", "<", 0.14,
                     hysteresis=0.02, severity=2, category_hint="01013"),),
    ),
    DeviceModel(
        "air", "04", "空气质量微站", "Air quality micro-station", "03010", "生态环境", 60, 5, "03010",
        (Prop("pm25", "PM2.5", "PM2.5", "µg/m³", N, 0, 1000), Prop("pm10", "PM10", "PM10", "µg/m³", N, 0, 2000),
         Prop("o3", "臭氧", "Ozone", "µg/m³", N, 0, 1200), Prop("no2", "二氧化氮", "NO2", "µg/m³", N, 0, 1000)),
        (),
        (DefaultRule("aq_pm25", "PM2.5重度污染", "PM2.5 heavy pollution", "pm25", "duration", ">", 150, duration_s=600,
                     hysteresis=15, severity=2, category_hint="03010"),
         DefaultRule("aq_pm25_spike", "PM2.5严重超标", "PM2.5 severe", "pm25", "threshold", ">", 250, hysteresis=25,
                     severity=3, category_hint="03010")),
    ),
    DeviceModel(
        "noise", "05", "噪声监测仪", "Noise monitor", "03013", "生态环境", 60, 5, "06028",
        (Prop("laeq", "等效声级", "LAeq", "dB(A)", N, 20, 140),),
        (),
        (DefaultRule("ns_loud", "噪声超标", "Noise above limit", "laeq", "duration", ">", 70, duration_s=300,
                     hysteresis=3, severity=1, category_hint="06028"),),
    ),
    DeviceModel(
        "lamp", "06", "智慧灯杆", "Smart lamp pole", "01077", "城管", 300, 3, "01037",
        (Prop("lamp_on", "亮灯", "Lamp on", "", B), Prop("power", "功率", "Power", "W", N, 0, 2000),
         Prop("voltage", "电压", "Voltage", "V", N, 0, 400), Prop("tilt", "杆体倾角", "Pole tilt", "°", N, 0, 90)),
        (("door_open", "检修门开启", "Service door open"),),
        (DefaultRule("lp_volt", "灯杆电压异常", "Pole voltage abnormal", "voltage", "threshold", "outside", 187, 253,
                     hysteresis=3, severity=1, category_hint="01037"),
         DefaultRule("lp_tilt", "灯杆倾斜", "Pole tilted", "tilt", "threshold", ">", 5, hysteresis=1, severity=3,
                     category_hint="01077")),
    ),
    DeviceModel(
        "parking", "07", "泊位地磁", "Parking space sensor", "02001", "交通", 120, 5, "09009",
        (Prop("occupied", "占用", "Occupied", "", B), Prop("battery", "电量", "Battery", "%", N, 0, 100)),
        (),
        (DefaultRule("pk_batt", "地磁电量低", "Sensor battery low", "battery", "threshold", "<", 10, hysteresis=5,
                     severity=1, category_hint="02001"),),
    ),
    DeviceModel(
        "gas", "08", "可燃气体探测器", "Combustible gas detector", "01011", "应急管理", 60, 5, "01011",
        (Prop("lel", "可燃气体浓度", "Gas concentration", "%LEL", N, 0, 100),
         Prop("battery", "电量", "Battery", "%", N, 0, 100)),
        (),
        (DefaultRule("gs_low", "可燃气体低限报警", "Gas low alarm", "lel", "threshold", ">", 20, hysteresis=2,
                     severity=3, category_hint="01011"),
         DefaultRule("gs_high", "可燃气体高限报警", "Gas high alarm", "lel", "threshold", ">", 50, hysteresis=5,
                     severity=4, category_hint="01011")),
    ),
    DeviceModel(
        "tunnel", "09", "综合管廊环境监测", "Utility tunnel monitor", "01074", "应急管理", 60, 5, "01074",
        (Prop("temperature", "温度", "Temperature", "°C", N, -40, 100),
         Prop("humidity", "湿度", "Humidity", "%RH", N, 0, 100),
         Prop("o2", "氧气", "Oxygen", "%vol", N, 0, 30), Prop("h2s", "硫化氢", "H2S", "ppm", N, 0, 200),
         Prop("settlement", "沉降", "Settlement", "mm", N, -500, 500)),
        (),
        (DefaultRule("ut_o2", "管廊缺氧", "Tunnel oxygen low", "o2", "threshold", "<", 19.5, hysteresis=0.3, severity=3,
                     category_hint="01074"),
         DefaultRule("ut_h2s", "硫化氢超标", "H2S above limit", "h2s", "threshold", ">", 10, hysteresis=1, severity=3,
                     category_hint="01074"),
         DefaultRule("ut_temp", "管廊温度过高", "Tunnel too hot", "temperature", "threshold", ">", 40, hysteresis=2,
                     severity=2, category_hint="01074"),
         DefaultRule("ut_settle", "管廊沉降超限", "Tunnel settlement", "settlement", "threshold", "outside", -30, 30,
                     hysteresis=2, severity=3, category_hint="01074")),
    ),
    DeviceModel(
        "tilt", "10", "结构倾斜监测仪", "Structure tilt monitor", "02008", "住建", 300, 3, "02008",
        (Prop("tilt_x", "X向倾角", "Tilt X", "°", N, -30, 30), Prop("tilt_y", "Y向倾角", "Tilt Y", "°", N, -30, 30),
         Prop("battery", "电量", "Battery", "%", N, 0, 100)),
        (),
        (DefaultRule("st_x", "结构X向倾斜超限", "Structure tilt X over limit", "tilt_x", "threshold", "outside", -1, 1,
                     hysteresis=0.1, severity=3, category_hint="02008"),
         DefaultRule("st_y", "结构Y向倾斜超限", "Structure tilt Y over limit", "tilt_y", "threshold", "outside", -1, 1,
                     hysteresis=0.1, severity=3, category_hint="02008")),
    ),
)

BY_CODE: dict[str, DeviceModel] = {m.code: m for m in MODELS}
BY_NUMBER: dict[str, DeviceModel] = {m.number: m for m in MODELS}

SEVERITIES = {1: ("一般", "minor"), 2: ("较重", "major"), 3: ("严重", "serious"), 4: ("特别严重", "critical")}


def get(code: str) -> DeviceModel | None:
    """The model with this code."""
    return BY_CODE.get(code)
