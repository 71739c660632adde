"""The permission catalogue and the built-in roles (三权分立 for the three administrators).

Every protected action names one permission here. Module owners add their permissions to
`PERMISSIONS` and grant them in `ROLES`; the role x action matrix test covers every entry.
"""

from __future__ import annotations

from dataclasses import dataclass

PERMISSIONS: dict[str, tuple[str, str]] = {
    # system administrator (系统管理员)
    "org.manage": ("管理组织机构", "Manage organisations"),
    "user.manage": ("管理用户账号", "Manage user accounts"),
    "settings.manage": ("管理系统设置", "Manage system settings"),
    "geo.manage": ("管理区划与网格", "Manage areas and grids"),
    "user.read": ("查看用户列表", "List user accounts"),
    # security administrator (安全管理员)
    "role.manage": ("管理角色与权限", "Manage roles and permissions"),
    "role.assign": ("为用户分配角色", "Assign roles to users"),
    "apikey.manage": ("管理机器凭证", "Manage machine credentials"),
    # auditor (审计管理员)
    "audit.read": ("查阅审计日志", "Read the audit trail"),
    # business
    "user.directory": ("查看通讯录（本单位及下级）", "View the staff directory (own organisation and below)"),
    "geo.read": ("查看地图与网格", "View the map and grids"),
    "ioc.view": ("查看运行态势", "View the operations centre"),
    "iot.read": ("查看物联设备与数据", "View IoT devices and data"),
    "iot.device.manage": ("管理物联设备", "Manage IoT devices"),
    "iot.rule.manage": ("管理告警规则", "Manage alarm rules"),
    "iot.alarm.ack": ("确认告警", "Acknowledge alarms"),
    "iot.ingest": ("上报物联数据", "Send IoT telemetry"),
    "case.report": ("上报案件", "Report a case"),
    "case.read": ("查看案件", "View cases"),
    "case.accept": ("受理与立案", "Accept and file cases"),
    "case.dispatch": ("派遣案件", "Dispatch cases"),
    "case.handle": ("处置案件", "Handle cases"),
    "case.verify": ("核查案件", "Verify cases"),
    "case.close": ("结案", "Close cases"),
    "case.supervise": ("督办案件", "Supervise cases"),
    "case.extension.approve": ("审批延期与挂账", "Approve extensions and suspensions"),
    "case.config.manage": ("管理案件分类与权责清单", "Manage case categories and responsibilities"),
    "case.evaluate": ("查看考核评价", "View evaluations"),
    "data.catalog.read": ("查看资源目录", "View the data catalogue"),
    "data.catalog.manage": ("编制资源目录", "Manage catalogue resources"),
    "data.load": ("归集数据", "Load data"),
    "data.request": ("申请共享数据", "Request shared data"),
    "data.approve": ("审批共享申请", "Approve sharing requests"),
    "data.exchange": ("调用交换接口", "Query shared data"),
    "data.stats": ("查看交换统计", "View exchange statistics"),
    "data.open": ("获取有条件开放数据", "Download conditionally open data (open-data keys only)"),
}

# The three administrators' permissions are theirs alone: no other role may be granted them.
ADMIN_ROLES = ("sysadmin", "secadmin", "auditor")


@dataclass(frozen=True)
class RoleDef:
    code: str
    name: str
    name_en: str
    city_wide: bool
    permissions: frozenset[str]


def _role(code: str, name: str, name_en: str, city_wide: bool, perms: set[str]) -> RoleDef:
    unknown = perms - PERMISSIONS.keys()
    if unknown:
        raise ValueError(f"unknown permissions for {code}: {sorted(unknown)}")
    return RoleDef(code, name, name_en, city_wide, frozenset(perms))


_CASE_OPERATOR = {
    "case.report", "case.read", "case.accept", "case.dispatch", "case.verify", "case.close", "case.supervise",
    "case.extension.approve", "case.evaluate",
}

ROLES: dict[str, RoleDef] = {
    r.code: r
    for r in (
        _role("sysadmin", "系统管理员", "System administrator", True,
              {"org.manage", "user.manage", "user.read", "settings.manage", "geo.manage"}),
        _role("secadmin", "安全管理员", "Security administrator", True,
              {"role.manage", "role.assign", "apikey.manage", "user.read"}),
        _role("auditor", "审计管理员", "Auditor", True, {"audit.read"}),
        _role("leader", "领导", "Leader", True,
              {"user.directory", "ioc.view", "geo.read", "case.read", "case.supervise", "case.evaluate", "iot.read",
               "data.catalog.read", "data.stats"}),
        _role("operator", "指挥中心坐席", "Command-centre operator", True,
              _CASE_OPERATOR | {"user.directory", "ioc.view", "geo.read", "iot.read", "iot.alarm.ack", "case.config.manage",
                                "data.catalog.read", "data.stats"}),
        _role("handler", "部门处置人员", "Department handler", False,
              {"user.directory", "case.read", "case.handle", "geo.read", "iot.read", "iot.alarm.ack", "iot.device.manage",
               "iot.rule.manage", "data.catalog.read", "data.catalog.manage", "data.load", "data.request",
               "data.approve"}),
        _role("gridworker", "网格员", "Grid worker", False, {"user.directory", "case.report", "case.read", "case.verify", "geo.read"}),
        _role("analyst", "数据分析人员", "Data analyst", False,
              {"geo.read", "iot.read", "data.catalog.read", "data.request", "data.exchange", "data.stats"}),
        _role("citizen", "市民", "Citizen", False, {"case.report"}),
    )
}

ADMIN_PERMISSIONS: frozenset[str] = frozenset().union(*(ROLES[r].permissions for r in ADMIN_ROLES))


def label(permission: str, lang: str = "zh-CN") -> str:
    """A permission's display name."""
    zh, en = PERMISSIONS.get(permission, (permission, permission))
    return zh if lang.startswith("zh") else en
