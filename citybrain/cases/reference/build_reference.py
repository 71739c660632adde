"""Regenerates the classification dictionaries (JSON) from the lists in STANDARDS.md §2.2, §2.3 and §5.

Run `python -m citybrain.cases.reference.build_reference` after editing the lists below. Time limits,
default departments and filing/closing conditions are CityBrain's seeded defaults (STANDARDS.md §4.2,
§12), not numbers of the standards themselves.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent

GB_COMPONENTS = {
    ("01", "市政公用设施"): "01001 供水井盖 · 01002 污水井盖 · 01003 雨水井盖 · 01004 雨水箅子 · 01005 电力井盖 · 01006 路灯井盖 · 01007 通信井盖 · 01008 电视井盖 · 01009 网络井盖 · 01010 热力井盖 · 01011 燃气井盖 · 01012 公安井盖 · 01013 消防设施 · 01014 园林井盖 · 01015 信号灯电源井盖 · 01017 电缆井盖 · 01018 化粪池井盖 · 01019 中水井盖 · 01020 公交井盖 · 01021 输油（气）井盖 · 01022 特殊井盖 · 01023 不明井盖 · 01024 水井 · 01025 供水器 · 01026 沟槽盖板 · 01027 通信交接箱 · 01028 电力设施 · 01029 电力设施标识牌 · 01030 电力立杆 · 01031 通信立杆 · 01032 公交立杆 · 01033 特殊立杆 · 01034 不明立杆 · 01035 旗杆 · 01036 输油（气）标志 · 01037 路灯 · 01038 地灯 · 01039 景观灯 · 01040 报刊亭 · 01041 电话亭 · 01042 邮筒 · 01043 信息亭 · 01044 售货亭 · 01045 自动售货机 · 01046 户外健身设施 · 01047 高压线铁塔 · 01048 变压器（箱） · 01049 燃气调压站（箱） · 01050 监控电子眼设施 · 01051 治安岗亭 · 01052 休息亭 · 01053 自助缴费机 · 01054 充电桩 · 01055 防蚊闸 · 01056 跨河管道 · 01057 露天燃气管道 · 01058 晒衣架 · 01059 旧衣物回收箱 · 01060 路灯配电箱 · 01061 露天供热管道 · 01062 通信基站 · 01063 水塔 · 01064 牌楼（门楼） · 01065 管理责任公示牌 · 01066 紧急报警点SOS · 01067 防汛监测设施 · 01068 水鹤 · 01069 水域附属设施 · 01070 水域护栏 · 01071 防汛墙 · 01072 排水泵站 · 01073 雨污水排放口 · 01074 综合管廊附属设施 · 01075 快递柜 · 01076 公用电梯 · 01077 综合杆",
    ("02", "交通设施"): "02001 停车场 · 02002 立体车库 · 02003 停车计费设备 · 02004 公交站设施 · 02005 出租车停靠站 · 02006 过街天桥 · 02007 地下通道 · 02008 立交桥 · 02009 跨河桥 · 02010 交通标志牌及标线 · 02011 限高架标志 · 02012 路名牌 · 02013 地名牌 · 02014 交通信号灯 · 02015 交通信号设施 · 02016 交通岗亭 · 02017 交通护栏 · 02018 防撞桶 · 02019 安全岛 · 02020 人行横道桩 · 02021 便道桩 · 02022 柔性隔离体 · 02023 道路信息显示屏 · 02024 道路隔音屏 · 02025 非机动车停放点 · 02026 自行车租赁点 · 02027 存车支架 · 02028 铁道口设施 · 02029 栈桥 · 02030 水域标示牌 · 02031 港监设施 · 02032 轨道交通设施 · 02033 交通反视镜 · 02034 无障碍设施 · 02035 应急避难指示牌 · 02036 救助站指示牌 · 02037 文物建筑标志牌 · 02038 门（楼号）牌 · 02039 公安指示牌 · 02040 景区标识牌 · 02041 停车信息显示屏 · 02042 铁路桥涵 · 02043 减速带 · 02044 公路隧道",
    ("03", "市容环卫设施"): "03001 公共厕所 · 03002 公厕指示牌 · 03003 化粪池 · 03004 垃圾间（楼） · 03005 垃圾箱 · 03006 户外广告 · 03007 牌匾标识 · 03008 宣传栏 · 03009 气象监测站 · 03010 环保监测站 · 03011 污水口监测站 · 03012 污水监测器 · 03013 噪声显示屏 · 03014 环卫工具间（箱） · 03015 宠物拾便纸箱 · 03016 烟头收集器或灭烟处",
    ("04", "园林绿化设施"): "04001 古树名木 · 04002 行道树 · 04003 独立树 · 04004 护树设施 · 04005 花架花钵 · 04006 雕塑 · 04007 街头座椅 · 04008 绿地护栏 · 04009 绿地附属设施 · 04010 喷泉 · 04011 树池树穴 · 04012 高架挂箱 · 04013 绿地 · 04014 林地及林地管护设施",
    ("05", "其他管理部件"): "05002 公房地下室 · 05003 车辆加油（气、电）站 · 05009 文物古迹",
}
GB_EVENTS = {
    ("06", "市容环境类"): "06001 私搭乱建 · 06002 店面无证装修 · 06003 违章接坡 · 06004 建筑物外立面污损 · 06005 临街阳台、屋顶脏乱差 · 06006 擅自在临街的建筑物上挂彩旗 · 06007 沿街晾挂 · 06008 擅自架设管线、杆线设施 · 06009 空调室外机低挂 · 06010 暴露垃圾 · 06011 积存垃圾渣土 · 06012 道路不洁 · 06013 道路破损 · 06014 道路遗撒（洒） · 06015 沙（河）滩不洁 · 06016 交通标线不清晰 · 06017 绿地脏乱 · 06018 绿化弃料 · 06019 非装饰性吊挂 · 06020 焚烧垃圾、树叶 · 06021 病虫害 · 06022 非法伐树 · 06023 堤岸破损 · 06024 水域秩序乱象 · 06025 水域不洁 · 06026 河道污染 · 06027 油烟污染 · 06028 噪声扰民 · 06029 露天烧烤 · 06030 乱倒乱排污水、废水 · 06032 非正规垃圾填埋场 · 06033 乱丢弃医疗废物 · 06034 废弃车辆 · 06035 废弃家具设备 · 06036 乱堆杂物 · 06037 动物尸体 · 06038 擅自饲养家禽家畜 · 06039 违章开设道口 · 06040 私设地锁、阻车桩 · 06041 垃圾未分类 · 06042 垃圾站（箱）满溢 · 06043 遮阳篷（棚、伞）破损 · 06044 节庆装饰物破损 · 06045 非法占绿毁绿 · 06046 占用河道 · 06047 公园秩序 · 06048 边坡（挡土墙）破损 · 06049 台阶破损 · 06050 路缘石缺损 · 06051 盲道缺损 · 06052 无障碍坡道破损",
    ("07", "宣传广告类"): "07001 非法小广告 · 07002 街头散发广告 · 07003 违规户外广告 · 07004 广告语言文字不规范 · 07006 违规牌匾标识 · 07007 违规标语宣传品 · 07008 公益性宣传品缺损",
    ("08", "施工管理类"): "08001 施工扰民 · 08002 施工占道 · 08003 无证掘路 · 08004 工地扬尘 · 08005 施工废弃料 · 08006 施工物料乱堆放 · 08007 施工工地围挡问题 · 08008 施工工地道路未硬化 · 08009 施工工地出入口道路破损 · 08010 施工完成后未场光地净 · 08011 渣土运输车辆未安装密闭装置 · 08012 施工工地车轮夹带 · 08013 违规高空悬吊作业 · 08014 预埋件设施裸露 · 08015 施工公示牌污损 · 08016 无证建设",
    ("09", "街面秩序类"): "09001 无照经营游商 · 09002 早（夜）市管理问题 · 09003 流浪乞讨 · 09004 废品收购乱象 · 09005 店外经营 · 09006 占道经营 · 09008 非法出版物销售 · 09009 机动车乱停放 · 09010 非机动车乱停放 · 09011 共享单车乱象 · 09012 占用消防通道 · 09013 临街屠宰 · 09014 畜力车进城 · 09015 无证餐饮 · 09016 违规设置停车场 · 09017 违规占用桥下空间 · 09018 履带车（铁轮车）违规上路行驶 · 09019 占用无障碍通道 · 09020 农贸市场秩序问题 · 09021 占道洗车 · 09022 占道促销宣传",
    ("10", "其他事项类"): "10001 道路积雪、结冰 · 10002 架空线缆脱落",
}

CJ_COMPONENTS = {
    ("01", "公用设施类"): "0101 上水井盖 · 0102 污水井盖 · 0103 雨水井盖 · 0104 雨水箅子 · 0105 电力井盖 · 0106 路灯井盖 · 0107 电信(通讯)井盖 · 0108 (有线)电视井盖 · 0109 网络井盖 · 0110 热力井盖 · 0111 燃气井盖 · 0112 公安井盖 · 0113 消防设施 · 0114 不明(无主)井盖 · 0115 电信交接箱 · 0116 电力设施 · 0117 电杆 · 0118 路灯 · 0119 地灯 · 0120 射灯/景观灯 · 0121 报刊亭 · 0122 电话亭 · 0123 邮筒 · 0124 信息亭 · 0125 自动售货亭 · 0126 健身设施 · 0127 中水井盖 · 0128 输油(气)井盖 · 0129 园林井盖 · 0130 环卫设施井盖 · 0133 燃气调压站(箱) · 0136 供水器 · 0137 输油(气)标志桩 · 0139 铁塔 · 0140 无轨电车井盖",
    ("02", "道路交通类"): "0201 停车场 · 0202 停车咪表 · 0203 公交站亭 · 0204 出租车站牌 · 0205 过街天桥 · 0206 地下通道 · 0207 高架立交桥 · 0208 跨河桥 · 0209 交通标志牌 · 0210 交通控制箱 · 0211 交通护栏 · 0212 存车支架 · 0213 路名牌 · 0214 交通信号灯 · 0215 路边停车场 · 0216 交通涵洞 · 0217 道路信息显示屏 · 0218 道路隔音屏 · 0219 交通岗亭",
    ("03", "市容环境类"): "0301 公共厕所 · 0302 公厕化粪池 · 0303 公厕指示牌 · 0304 垃圾间 · 0305 垃圾箱 · 0306 灯箱霓虹灯 · 0307 广告牌匾 · 0308 环境监测塔",
    ("04", "园林绿化类"): "0401 古树名木 · 0402 行道树 · 0403 树池箅子 · 0404 花架花钵 · 0405 绿地 · 0406 雕塑 · 0407 街头座椅 · 0409 绿地维护设施",
    ("05", "房屋土地类"): "0501 宣传栏 · 0502 人防工事 · 0503 公房地下室",
}
CJ_EVENTS = {
    ("01", "市容环境类"): "0101 私搭乱建 · 0102 暴露垃圾 · 0103 积存垃圾渣土 · 0104 道路不洁 · 0105 水域不洁 · 0106 绿地脏乱 · 0107 废弃车辆 · 0108 废弃家具设备 · 0109 非装饰性树挂 · 0110 道路破损 · 0111 河堤破损 · 0112 道路遗撒 · 0113 建筑物外立面不洁 · 0114 水域秩序问题 · 0115 焚烧树叶垃圾 · 0116 油烟污染 · 0117 动物尸体 · 0118 私自饲养家禽家畜 · 0199 其他",
    ("02", "宣传广告类"): "0201 非法小广告 · 0202 违章张贴悬挂广告牌匾 · 0203 占道广告牌 · 0204 街头散发广告 · 0205 广告招牌破损",
    ("03", "施工管理类"): "0301 施工扰民 · 0302 工地扬尘 · 0303 施工废弃料 · 0304 施工占道 · 0305 无证掘路 · 0399 其他",
    ("04", "突发事件类"): "0401 路面塌陷 · 0402 自来水管破裂 · 0403 燃气管道破裂 · 0404 下水道堵塞或破损 · 0405 热力管道破裂 · 0406 道路积水 · 0407 道路积雪结冰 · 0408 架空线缆损坏 · 0409 群发性事件 · 0499 其他",
    ("05", "街面秩序类"): "0501 无照经营游商 · 0502 流浪乞讨 · 0503 占道废品收购 · 0504 店外经营 · 0505 机动车乱停放 · 0506 非机动车乱停放 · 0507 乱堆物堆料 · 0508 商业噪音 · 0509 黑车拉客 · 0510 露天烧烤 · 0511 沿街晾挂 · 0512 非法出版物销售 · 0513 空调室外机低挂 · 0599 其他",
}

# default department (demo_district short names) by keyword, first match wins; else by big class
DEPT_KEYWORDS = [
    (("供水", "上水", "污水", "雨水", "排水", "中水", "水井", "水鹤", "水塔", "防汛", "泵站", "排放口", "化粪池井盖",
      "水域", "堤", "河道", "河滩", "沙（河）滩", "占用河道", "自来水", "下水道", "积水"), "水务"),
    (("电力", "变压器", "高压线", "电缆", "架空线", "充电桩"), "供电"),
    (("燃气", "输油", "热力", "供热"), "住建"),
    (("公安", "监控电子眼", "治安", "报警点", "群发性", "黑车"), "公安"),
    (("油烟", "噪声", "噪音", "排污", "污水、废水", "环保监测", "污水口监测", "污水监测", "医疗废物", "焚烧"), "生态环境"),
    (("机动车乱停放", "交通", "信号灯", "公交", "出租车", "停车", "立交", "天桥", "地下通道", "隧道", "护栏", "减速带",
      "防撞桶", "安全岛", "路名牌", "标线"), "交通"),
    (("无证餐饮", "农贸市场", "早（夜）市", "非法出版物", "自动售货", "售货亭", "快递柜"), "市场监管"),
    (("施工", "掘路", "工地", "渣土运输", "无证建设", "公用电梯", "公房", "人防", "路面塌陷", "边坡"), "住建"),
    (("流浪乞讨",), "民政"),
]
BIG_DEFAULT = {"component": "城管", "event": "城管"}

URGENT_WORDS = ("路面塌陷", "管道破裂", "水管破裂", "燃气", "群发性", "积雪", "结冰", "架空线缆", "道路积水", "不明井盖")
LIMITS = [  # keyword -> (value, unit)
    (("井盖", "箅子", "沟槽盖板"), (4, "work_hours")),
    (("暴露垃圾", "动物尸体", "垃圾站（箱）满溢", "道路遗撒"), (4, "work_hours")),
    (("道路不洁", "绿地脏乱"), (2, "work_hours")),
    (("机动车乱停放", "非机动车乱停放", "占用消防通道", "共享单车"), (2, "work_hours")),
    (("小广告", "散发广告", "游商", "店外经营", "占道经营", "露天烧烤", "沿街晾挂"), (1, "work_days")),
    (("私搭乱建", "无证建设", "违章接坡"), (20, "work_days")),
    (("破损", "缺损", "塌陷修复", "非正规垃圾填埋场"), (15, "work_days")),
    (("积存垃圾渣土",), (4, "work_days")),
    (("水域不洁", "河道污染"), (15, "work_days")),
]


def _parse(text: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split("·"):
        code, name = item.strip().split(" ", 1)
        out.append((code, name.strip()))
    return out


def _dept(name: str, kind: str) -> str:
    for words, dept in DEPT_KEYWORDS:
        if any(w in name for w in words):
            return dept
    return BIG_DEFAULT[kind]


def _limit(name: str, kind: str) -> dict:
    if any(w in name for w in URGENT_WORDS):
        return {"limit_value": 2, "limit_unit": "hours", "urgent": True}
    for words, (v, u) in LIMITS:
        if any(w in name for w in words):
            return {"limit_value": v, "limit_unit": u, "urgent": False}
    return {"limit_value": 5 if kind == "component" else 3, "limit_unit": "work_days", "urgent": False}


def _conditions(name: str, kind: str) -> dict:
    if name == "暴露垃圾":
        return {"filing_condition": "垃圾成堆、成片暴露", "closing_condition": "垃圾清除，现场整洁"}
    if name in ("私搭乱建", "违法搭建"):
        return {"filing_condition": "未经批准搭建建（构）筑物", "closing_condition": "违法建（构）筑物已拆除"}
    if kind == "component":
        return {"filing_condition": f"{name}破损、丢失、移位或功能异常",
                "closing_condition": f"{name}修复或更换，功能恢复（附处置后照片）"}
    return {"filing_condition": f"现场存在{name}问题，影响市容秩序或公共安全",
            "closing_condition": f"{name}问题已消除，现场恢复正常（附处置后照片）"}


def _entry(kind: str, code: str, name: str, big_code: str, big_name: str, ref: str) -> dict:
    return {"kind": kind, "code": code, "name": name, "big_code": big_code, "big_name": big_name,
            "standard_ref": ref, "default_dept": _dept(name, kind), **_limit(name, kind), **_conditions(name, kind)}


def build_gb() -> dict:
    ref = "GB/T 47678.5-2026"
    entries = []
    for (big, bname), text in GB_COMPONENTS.items():
        for code, name in _parse(text):
            entries.append(_entry("component", code, name, big, bname, f"{ref} 附录A 表A.1"))
    for (big, bname), text in GB_COMPONENTS.items():  # events 01-05 mirror components: "<部件名称>异常"
        for code, name in _parse(text):
            e = _entry("event", code, f"{name}异常", big, f"{bname}类", f"{ref} 附录C 表C.1")
            e.update({k: v for k, v in _entry("component", code, name, big, bname, ref).items()
                      if k in ("default_dept", "limit_value", "limit_unit", "urgent")})
            entries.append(e)
    for (big, bname), text in GB_EVENTS.items():
        for code, name in _parse(text):
            entries.append(_entry("event", code, name, big, bname, f"{ref} 附录C 表C.1"))
    n_comp = sum(e["kind"] == "component" for e in entries)
    n_event = sum(e["kind"] == "event" for e in entries)
    assert (n_comp, n_event) == (153, 250), (n_comp, n_event)
    return {"code": "gbt47678.5-2026", "name": "城市运行管理服务 管理部件和事项（GB/T 47678.5-2026 目录）",
            "name_en": "GB/T 47678.5-2026 components and matters directory", "standard_ref": ref,
            "version": "2026", "note": "codes transcribed per STANDARDS.md §2.3 (UNVERIFIED against the text)",
            "entries": entries}


def build_cj() -> dict:
    ref = "CJ/T 214-2007 / GB/T 30428.2-2013"
    entries = []
    for (big, bname), text in CJ_COMPONENTS.items():
        for code, name in _parse(text):
            entries.append(_entry("component", code, name, big, bname, ref))
    for (big, bname), text in CJ_EVENTS.items():
        for code, name in _parse(text):
            entries.append(_entry("event", code, name, big, bname, ref))
    return {"code": "cjt214-2007", "name": "数字化城市管理 管理部件和事件分类（CJ/T 214 / GB/T 30428.2 时期）",
            "name_en": "CJ/T 214 / GB/T 30428.2-era component and event classes", "standard_ref": ref,
            "version": "2007", "note": "small classes as implemented in practice (STANDARDS.md §2.2, UNVERIFIED)",
            "entries": entries}


def build_hotline() -> dict:
    ref = "国办发〔2020〕53号 / 北京市接诉即办工作条例"
    types = [
        ("01", "咨询", 1, "work_days", "政策、办事咨询", "已答复来电人"),
        ("02", "求助", 3, "work_days", "生活中遇到困难需要政府部门帮助", "已提供帮助或说明原因"),
        ("03", "投诉", 7, "work_days", "对侵害自身权益或公共利益的行为投诉", "问题已处理并答复"),
        ("04", "举报", 7, "work_days", "举报违法违规行为", "已核查处理并答复"),
        ("05", "建议", 15, "work_days", "对政府工作提出意见建议", "已研究并答复"),
    ]
    entries = [{"kind": "hotline", "code": c, "name": n, "big_code": "12345", "big_name": "12345热线诉求类型",
                "standard_ref": ref, "default_dept": "指挥中心", "limit_value": v, "limit_unit": u, "urgent": False,
                "filing_condition": f, "closing_condition": cl} for c, n, v, u, f, cl in types]
    return {"code": "hotline12345", "name": "12345热线诉求类型", "name_en": "12345 hotline request types",
            "standard_ref": ref, "version": "2020", "note": "time limits are seeded defaults (STANDARDS.md §5.2)",
            "entries": entries}


def main() -> None:
    for name, doc in (("gbt47678_5_2026", build_gb()), ("cjt214_2007", build_cj()), ("hotline12345", build_hotline())):
        (HERE / f"{name}.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n")


if __name__ == "__main__":
    main()
