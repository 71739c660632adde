"""Interface text of the web pages in zh-CN (default) and English; one table for templates and scripts."""

from __future__ import annotations

from fastapi import Request

from citybrain.config import get_settings

LANG_COOKIE = "lang"
LANGUAGES = ("zh-CN", "en")

# key -> (zh-CN, en). Templates call t("key"); scripts get the same table as window.CB.t.
TEXT: dict[str, tuple[str, str]] = {
    # shell
    "app.name": ("城市大脑", "CityBrain"),
    "app.full": ("城市大脑 · 城市运行管理平台", "CityBrain · City Operations Platform"),
    "nav.ioc": ("运行态势", "Operations centre"),
    "nav.map": ("一张图", "One map"),
    "nav.desk": ("受理派遣", "Intake & dispatch"),
    "nav.inbox": ("部门待办", "Department inbox"),
    "nav.grid": ("网格巡查", "Grid patrol"),
    "nav.devices": ("物联设备", "Devices"),
    "nav.cockpit": ("领导驾驶舱", "Leader cockpit"),
    "nav.citizen": ("市民随手拍", "Citizen report"),
    "nav.track": ("进度查询", "Track a report"),
    "nav.api": ("接口文档", "API docs"),
    "nav.main": ("主导航", "Main navigation"),
    "lang.switch": ("English", "中文"),
    "lang.switch.label": ("切换语言", "Switch language"),
    "auth.login": ("登录", "Log in"),
    "auth.logout": ("退出", "Log out"),
    "auth.username": ("用户名", "Username"),
    "auth.password": ("密码", "Password"),
    "auth.title": ("账号登录", "Sign in"),
    "auth.hint": ("演示账号：operator、handler、gridworker、leader 等，密码见部署说明",
                  "Demo accounts: operator, handler, gridworker, leader, ...; password in the deployment notes"),
    "auth.failed": ("登录失败", "Login failed"),
    "auth.citizen": ("市民无需登录：随手拍上报与进度查询", "Citizens need no account: report a problem or track it"),
    "forbidden.title": ("没有权限", "Forbidden"),
    "forbidden.body": ("您的角色没有打开此页面的权限：", "Your role may not open this page. Missing permission: "),
    "forbidden.home": ("返回首页", "Back to start"),
    "common.loading": ("加载中…", "Loading…"),
    "common.none": ("暂无数据", "Nothing here"),
    "common.refresh": ("刷新", "Refresh"),
    "common.submit": ("提交", "Submit"),
    "common.cancel": ("取消", "Cancel"),
    "common.save": ("保存", "Save"),
    "common.ok": ("操作成功", "Done"),
    "common.error": ("操作失败", "Failed"),
    "common.details": ("详情", "Details"),
    "common.reason": ("原因", "Reason"),
    "common.note": ("说明", "Note"),
    "common.search": ("查询", "Search"),
    "common.all": ("全部", "All"),
    "common.close": ("关闭", "Close"),
    "common.time": ("时间", "Time"),
    "common.status": ("状态", "Status"),
    "common.actions": ("操作", "Actions"),
    "common.photo": ("现场照片", "Photo"),
    "common.not_connected": ("未接入", "Not connected"),
    "common.offline_map": ("离线底图：仅矢量图层", "Offline base map: vector layers only"),
    # case fields
    "case.ticket": ("工单号", "Ticket"),
    "case.category": ("问题类别", "Category"),
    "case.description": ("问题描述", "Description"),
    "case.address": ("地址", "Address"),
    "case.location": ("位置", "Location"),
    "case.lon": ("经度", "Longitude"),
    "case.lat": ("纬度", "Latitude"),
    "case.grid": ("网格", "Grid"),
    "case.dept": ("责任部门", "Department"),
    "case.deadline": ("处置时限", "Deadline"),
    "case.source": ("来源", "Source"),
    "case.reported_at": ("上报时间", "Reported"),
    "case.overdue": ("超期", "Overdue"),
    "case.supervised": ("督办", "Supervised"),
    "case.history": ("办理过程", "History"),
    "case.gps": ("使用当前位置", "Use my location"),
    "case.gps.fail": ("无法获取定位，请在地图上点选位置", "No GPS fix: tap the map to set the place"),
    "case.map_tap": ("也可在地图上点选位置", "Or tap the map to set the place"),
    "case.phone": ("联系电话", "Phone"),
    "case.reporter": ("上报人", "Reported by"),
    "case.name": ("姓名（可选）", "Name (optional)"),
    "case.report": ("上报问题", "Report a problem"),
    "case.reported": ("已上报，工单号：", "Reported. Ticket number: "),
    "case.keep_ticket": ("请保存工单号，凭工单号和手机号查询进度", "Keep the ticket number: track it with it and your phone"),
    "case.track": ("查询进度", "Track"),
    "case.rate": ("评价处理结果", "Rate the result"),
    "case.rating": ("满意度", "Satisfaction"),
    "case.rate.done": ("感谢您的评价", "Thank you for your rating"),
    "case.comment": ("评价意见", "Comment"),
    "case.result": ("处理结果", "Result"),
    "case.select_category": ("请选择类别", "Choose a category"),
    # actions (codes of the cases workflow)
    "act.report": ("上报", "Report"),
    "act.file": ("立案", "File"),
    "act.reject": ("不予立案", "Do not file"),
    "act.answer": ("直接答复办结", "Answer and close"),
    "act.merge": ("并案", "Merge"),
    "act.dispatch": ("派遣", "Dispatch"),
    "act.accept": ("签收", "Sign for it"),
    "act.return": ("退单", "Return"),
    "act.handle": ("处置反馈", "Report handled"),
    "act.verify": ("核查通过", "Verified: fixed"),
    "act.rework": ("核查不通过返工", "Not fixed: rework"),
    "act.close": ("结案", "Close"),
    "act.suspend": ("挂账", "Suspend"),
    "act.resume": ("恢复办理", "Resume"),
    "act.reopen": ("重新办理", "Reopen"),
    "act.request_extension": ("申请延期", "Request extension"),
    "act.approve_extension": ("批准延期", "Approve extension"),
    "act.refuse_extension": ("驳回延期", "Refuse extension"),
    "act.supervise": ("督办", "Supervise"),
    "act.note": ("备注", "Note"),
    "act.ack": ("确认告警", "Acknowledge"),
    "act.extra_days": ("延期天数", "Extra working days"),
    # workbench
    "desk.title": ("受理派遣工作台", "Intake and dispatch workbench"),
    "desk.new": ("待受理", "New"),
    "desk.dispatch": ("待派遣", "To dispatch"),
    "desk.verify": ("待核查", "To verify"),
    "desk.close": ("待结案", "To close"),
    "desk.extensions": ("延期审批", "Extensions"),
    "desk.supervision": ("超期督办", "Overdue"),
    "desk.suggested": ("建议部门", "Suggested department"),
    "desk.auto_dispatch": ("按权责清单自动派遣", "Dispatch by the responsibility matrix"),
    "inbox.title": ("部门待办", "Department inbox"),
    "inbox.todo": ("待签收", "To accept"),
    "inbox.doing": ("处置中", "In progress"),
    "inbox.result": ("处置情况", "What was done"),
    "grid.title": ("网格员巡查", "Grid patrol"),
    "grid.mine": ("我的上报", "My reports"),
    "grid.verify": ("核查任务", "Verification tasks"),
    # IOC
    "ioc.title": ("城市运行态势", "City operations"),
    "ioc.cases": ("案件办理", "Cases"),
    "ioc.cases_today": ("今日案件", "Cases today"),
    "ioc.cases_open": ("在办案件", "Open cases"),
    "ioc.cases_overdue": ("超期案件", "Overdue"),
    "ioc.closure_rate": ("结案率", "Closure rate"),
    "ioc.ontime_rate": ("按期办结率", "On-time rate"),
    "ioc.satisfaction": ("满意率", "Satisfaction"),
    "ioc.devices_online": ("设备在线率", "Devices online"),
    "ioc.alarms": ("活动告警", "Active alarms"),
    "ioc.exchange": ("今日数据交换", "Data exchanged today"),
    "ioc.trend": ("案件趋势（近14天）", "Cases, last 14 days"),
    "ioc.by_source": ("案件来源（近30天）", "Case sources, 30 days"),
    "source.patrol": ("网格巡查", "Patrol"),
    "source.hotline": ("12345热线", "12345 hotline"),
    "source.web": ("市民网上反映", "Citizen web"),
    "source.iot": ("物联感知", "IoT alarm"),
    "source.video": ("视频分析", "Video"),
    "source.superior": ("上级交办", "From above"),
    "source.api": ("外部系统", "Other systems"),
    "ioc.rank_dept": ("部门处置排名", "Departments"),
    "ioc.rank_town": ("镇街排名", "Towns"),
    "ioc.live": ("实时动态", "Live feed"),
    "ioc.live.off": ("实时推送未接入", "Live feed not connected"),
    # alarm severity (docs/iot.md; colours after the national four-level convention: red, orange, yellow, blue)
    "sev.1": ("一般", "Minor"),
    "sev.2": ("较重", "Major"),
    "sev.3": ("严重", "Serious"),
    "sev.4": ("特别严重", "Critical"),
    "ioc.reported": ("新上报", "new"),
    "ioc.closed": ("结案", "closed"),
    # map
    "map.title": ("城市运行一张图", "One map"),
    "map.layers": ("图层", "Layers"),
    "map.filters": ("筛选", "Filters"),
    "map.district": ("区界", "District"),
    "map.towns": ("镇街", "Towns"),
    "map.grids": ("单元网格", "Grids"),
    "map.devices": ("物联设备", "Devices"),
    "map.alarms": ("活动告警", "Active alarms"),
    "map.cases": ("在办案件", "Open cases"),
    "map.overdue_only": ("仅超期", "Overdue only"),
    "map.open": ("在办（未结案）", "Open (not closed)"),
    "map.hotspots": ("热点", "Hotspots"),
    "map.hotspot_count": ("案件数", "Cases"),
    "map.hotspot_from": ("起", "From"),
    "map.hotspot_to": ("止", "To"),
    "map.days": ("时间范围", "Period"),
    "map.days.1": ("今天", "Today"),
    "map.days.7": ("近7天", "7 days"),
    "map.days.30": ("近30天", "30 days"),
    "map.days.all": ("全部", "All"),
    "map.count": ("要素", "features"),
    "map.layer_missing": ("图层未接入", "Layer not connected"),
    # devices
    "dev.title": ("物联设备控制台", "Device console"),
    "dev.code": ("设备编码", "Device code"),
    "dev.name": ("名称", "Name"),
    "dev.type": ("类型", "Type"),
    "dev.readings": ("近期读数", "Recent readings"),
    "dev.alarms": ("告警", "Alarms"),
    "dev.online": ("在线", "Online"),
    "dev.offline": ("离线", "Offline"),
    "dev.disabled": ("停用", "Disabled"),
    "dev.severity": ("等级", "Severity"),
    "dev.message": ("告警内容", "Message"),
    # cockpit
    "cockpit.title": ("领导驾驶舱", "Leader cockpit"),
    "cockpit.rank_dept": ("部门考核排名", "Department evaluation"),
    "cockpit.rank_town": ("镇街考核排名", "Town evaluation"),
    "cockpit.rank_worker": ("网格员考核排名", "Grid-worker evaluation"),
    "cockpit.overdue": ("超期与督办案件", "Overdue and supervised cases"),
    "cockpit.score": ("得分", "Score"),
    "cockpit.cases": ("案件数", "Cases"),
    "cockpit.reports": ("上报数", "Reports"),
    "cockpit.filing_rate": ("有效上报率", "Valid reports"),
    "cockpit.verify_rate": ("按时核查率", "Checked on time"),
    "cockpit.trend": ("案件趋势（近30天）", "Cases, last 30 days"),
    # citizen
    "citizen.title": ("市民随手拍", "Report a problem"),
    "citizen.intro": ("发现城市管理问题？拍照上报，我们会尽快处理。", "Seen a problem in the city? Report it and we will deal with it."),
    "citizen.track.title": ("工单进度查询", "Track your report"),
    "citizen.phone_hint": ("用于查询进度和回访，仅工作人员可见（脱敏显示）", "Used to track and follow up; shown masked to staff only"),
}

# Status codes of cases, devices and alarms shown as words (codes from the cases and iot modules).
STATUS: dict[str, tuple[str, str]] = {
    "reported": ("待受理", "Reported"),
    "not_filed": ("不予立案", "Not filed"),
    "filed": ("待派遣", "Filed"),
    "dispatched": ("待签收", "Dispatched"),
    "in_progress": ("处置中", "In progress"),
    "rework": ("返工", "Rework"),
    "handled": ("待核查", "Handled"),
    "verified": ("待结案", "Verified"),
    "closed": ("已结案", "Closed"),
    "suspended": ("挂账", "Suspended"),
    "merged": ("已并案", "Merged"),
    "online": ("在线", "Online"),
    "offline": ("离线", "Offline"),
    "disabled": ("停用", "Disabled"),
    "active": ("活动", "Active"),
    "acknowledged": ("已确认", "Acknowledged"),
    "cleared": ("已解除", "Cleared"),
    "raised": ("新告警", "Raised"),
    "pending": ("待审批", "Pending"),
    "approved": ("已批准", "Approved"),
    "refused": ("已驳回", "Refused"),
}


def page_language(request: Request) -> str:
    """The page language: the `lang` cookie, else the configured default (zh-CN)."""
    cookie = request.cookies.get(LANG_COOKIE, "")
    if cookie:
        return "en" if cookie.startswith("en") else "zh-CN"
    return get_settings().default_language


def translator(lang: str):
    """A `t(key)` function for one language."""
    idx = 0 if lang.startswith("zh") else 1

    def t(key: str) -> str:
        pair = TEXT.get(key) or STATUS.get(key)
        return pair[idx] if pair else key

    return t


def table(lang: str) -> dict[str, str]:
    """Every text in one language (sent to the page scripts)."""
    idx = 0 if lang.startswith("zh") else 1
    out = {k: v[idx] for k, v in TEXT.items()}
    out.update({f"status.{k}": v[idx] for k, v in STATUS.items()})
    return out
