"""The case state machine: statuses, actions, who may take them, and from where.

Every action is a row here; `service.act` is the only way a case changes status. An action that the
current status does not allow answers 409 naming the current status and the actions that are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

STATUSES: dict[str, tuple[str, str]] = {
    "reported": ("已上报待受理", "Reported, awaiting acceptance"),
    "not_filed": ("不予立案", "Not filed"),
    "filed": ("已立案待派遣", "Filed, awaiting dispatch"),
    "dispatched": ("已派遣待签收", "Dispatched, awaiting sign-off"),
    "in_progress": ("处置中", "In progress"),
    "rework": ("返工", "Rework"),
    "handled": ("已处置待核查", "Handled, awaiting verification"),
    "verified": ("核查通过待结案", "Verified, awaiting closure"),
    "closed": ("已结案", "Closed"),
    "suspended": ("挂账", "Suspended"),
    "merged": ("已并案", "Merged"),
}
TERMINAL = frozenset({"not_filed", "closed", "merged"})
OPEN = frozenset(STATUSES) - TERMINAL
CLOCK_RUNNING = frozenset({"dispatched", "in_progress", "rework"})  # the department's time limit runs

SOURCES: dict[str, tuple[str, str]] = {
    "patrol": ("网格员巡查上报", "Grid-worker patrol"),
    "hotline": ("12345热线", "12345 hotline"),
    "web": ("市民网上反映", "Citizen web report"),
    "iot": ("物联感知告警", "IoT alarm"),
    "video": ("视频智能分析", "Video analytics"),
    "superior": ("上级交办", "Assigned from above"),
    "api": ("外部系统接入", "Other systems (API)"),
}
PUBLIC_SOURCES = frozenset({"hotline", "web"})  # 公众举报 (for 监督举报率 and 漏报)

RATINGS: dict[str, tuple[str, str]] = {
    "satisfied": ("满意", "Satisfied"),
    "basic": ("基本满意", "Basically satisfied"),
    "dissatisfied": ("不满意", "Dissatisfied"),
}

SUPERVISION_LEVELS: dict[int, tuple[str, str]] = {1: ("催办", "Reminder"), 2: ("督办", "Supervision"),
                                                   3: ("挂牌督办", "Listed supervision")}


@dataclass(frozen=True)
class Action:
    code: str
    zh: str
    en: str
    sources: frozenset[str]
    target: str | None  # None: no status change
    permission: str
    scope: str  # "dept": the case's department; "community": the case's community; "any": visible
    needs_comment: bool = False


def _a(code: str, zh: str, en: str, sources: set[str], target: str | None, perm: str, scope: str = "any",
       needs_comment: bool = False) -> Action:
    return Action(code, zh, en, frozenset(sources), target, perm, scope, needs_comment)


_WORKING = {"dispatched", "in_progress", "rework"}

ACTIONS: dict[str, Action] = {a.code: a for a in (
    _a("file", "立案", "File", {"reported"}, "filed", "case.accept"),
    _a("reject", "不予立案", "Do not file", {"reported"}, "not_filed", "case.accept", needs_comment=True),
    _a("answer", "直接答复办结", "Answer directly and close", {"reported", "filed"}, "closed", "case.close",
       needs_comment=True),
    _a("merge", "并案", "Merge into another case", {"reported", "filed"}, "merged", "case.accept"),
    _a("dispatch", "派遣", "Dispatch", {"filed"}, "dispatched", "case.dispatch"),
    _a("accept", "签收", "Sign for the task", {"dispatched"}, "in_progress", "case.handle", "dept"),
    _a("return", "退单", "Return (wrong department)", {"dispatched", "in_progress"}, "filed", "case.handle", "dept",
       needs_comment=True),
    _a("handle", "处置反馈", "Report handling", {"in_progress", "rework"}, "handled", "case.handle", "dept",
       needs_comment=True),
    _a("verify", "核查通过", "Verify: fixed", {"handled"}, "verified", "case.verify", "community"),
    _a("rework", "核查不通过返工", "Verify: not fixed, rework", {"handled", "verified"}, "rework", "case.verify",
       "community", needs_comment=True),
    _a("close", "结案", "Close", {"verified"}, "closed", "case.close"),
    _a("suspend", "挂账", "Suspend", _WORKING, "suspended", "case.extension.approve", needs_comment=True),
    _a("resume", "恢复办理", "Resume", {"suspended"}, "in_progress", "case.extension.approve"),
    _a("reopen", "重新办理", "Reopen", {"closed"}, "rework", "case.close", needs_comment=True),
    _a("assign", "指派处置人", "Assign to a handler", _WORKING, None, "case.handle", "dept"),
    _a("request_extension", "申请延期", "Request an extension", _WORKING, None, "case.handle", "dept",
       needs_comment=True),
    _a("approve_extension", "批准延期", "Approve the extension", _WORKING, None, "case.extension.approve"),
    _a("refuse_extension", "驳回延期", "Refuse the extension", _WORKING, None, "case.extension.approve",
       needs_comment=True),
    _a("supervise", "督办", "Supervise", {"filed", "dispatched", "in_progress", "rework", "handled", "suspended"},
       None, "case.supervise", needs_comment=True),
    _a("note", "备注", "Add a note", set(STATUSES), None, "case.read", needs_comment=True),
)}


def allowed_actions(status: str) -> list[str]:
    """The actions the state machine allows from this status."""
    return [a.code for a in ACTIONS.values() if status in a.sources]


def status_label(status: str, lang: str = "zh-CN") -> str:
    """A status's display name."""
    zh, en = STATUSES.get(status, (status, status))
    return zh if lang.startswith("zh") else en
