"""Simulated case reporters and handlers for the demo: they act through the HTTP API as people would.

Grid workers report on patrol, 12345 operators take calls and file/dispatch, citizens report on the web
and later track and rate their cases, department handlers sign for, handle and sometimes return tasks,
grid workers verify, operators close, and the leader supervises overdue cases. It logs in as its own accounts
(`sim-operator`, `sim-leader`, `handler-<dept>`, `grid-<community>`) and leaves every HUMAN_SHARE-th case
waiting HUMAN_WAIT_S in each queue for the person trying the demo as `operator`, `handler` or `gridworker`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import httpx

from citybrain import demo_district as dd
from citybrain.config import get_settings

log = logging.getLogger("citybrain.sim.cases")

PATROL = [("06010", "暴露垃圾"), ("07001", "非法小广告"), ("09009", "机动车乱停放"), ("06036", "乱堆杂物"),
          ("09005", "店外经营"), ("06012", "道路不洁"), ("01002", "污水井盖破损"), ("06042", "垃圾桶满溢"),
          ("01037", "路灯不亮"), ("06013", "人行道破损")]
CALLS = [("03", "06028", "投诉夜间施工噪声扰民"), ("03", "06027", "投诉餐馆油烟直排"), ("02", "01037", "小区门口路灯不亮"),
         ("04", "06001", "举报楼顶违章搭建"), ("03", "09006", "投诉路边占道经营"), ("01", None, "咨询垃圾分类投放时间")]
WEB = [("06010", "小区门口垃圾堆积"), ("01003", "雨水井盖松动"), ("09010", "共享单车堵塞人行道"), ("06051", "盲道被占用")]


class Actor:
    """One logged-in demo account."""

    def __init__(self, client: httpx.Client, username: str):
        self.client, self.username, self.headers = client, username, {}

    def login(self) -> bool:
        r = self.client.post("/api/v1/auth/token",
                             data={"username": self.username, "password": get_settings().demo_password})
        if r.status_code != 200:
            return False
        self.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        self.client.cookies.clear()
        return True

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        r = self.client.request(method, path, headers=self.headers, **kw)
        if r.status_code == 401 and self.login():
            r = self.client.request(method, path, headers=self.headers, **kw)
        return r


PHOTOS: list[str] = []  # urls of the stand-in photos the simulator uploaded (POST /api/v1/attachments)


def _upload_photos(client: httpx.Client) -> None:
    """Upload the stand-in scene photos once, as the apps do before they report."""
    for rgb in ((120, 150, 110), (110, 130, 160)):
        r = client.post("/api/v1/attachments", files={"file": ("scene.png", dd.demo_photo(rgb), "image/png")})
        if r.status_code == 201:
            PHOTOS.append(r.json()["url"])


def _point(rnd: random.Random) -> tuple[float, float]:
    return (round(rnd.uniform(dd.BBOX[0] + 0.01, dd.BBOX[2] - 0.01), 6),
            round(rnd.uniform(dd.BBOX[1] + 0.01, dd.BBOX[3] - 0.01), 6))


def _items(actor: Actor, **params: Any) -> list[dict]:
    r = actor.call("GET", "/api/v1/cases", params={"limit": 20, **params})
    return r.json().get("items", []) if r.status_code == 200 else []


def _act(actor: Actor, case_id: int, action: str, **body: Any) -> bool:
    r = actor.call("POST", f"/api/v1/cases/{case_id}/actions/{action}", json=body)
    return r.status_code == 200


# A share of the cases is left to the people trying the demo: the simulator's colleagues take such a case only
# after it has waited HUMAN_WAIT_S in a queue, so the workbench, the inbox and the verification list always hold
# some work (as in the README's screenshots) without growing without end.
HUMAN_SHARE = 3  # every 3rd case (by id)
HUMAN_WAIT_S = 15 * 60


class Desk:
    """Which cases the simulator may work on now."""

    def __init__(self) -> None:
        self.first_seen: dict[tuple[int, str], float] = {}

    def mine(self, case: dict) -> bool:
        """True for the simulator's cases; the humans' share once it has waited HUMAN_WAIT_S in this status."""
        if case["id"] % HUMAN_SHARE:
            return True
        now = time.monotonic()
        seen = self.first_seen.setdefault((case["id"], case["status"]), now)
        if len(self.first_seen) > 5000:
            self.first_seen = {k: v for k, v in self.first_seen.items() if now - v < 2 * HUMAN_WAIT_S}
        return now - seen >= HUMAN_WAIT_S


def step(rnd: random.Random, anon: httpx.Client, actors: dict[str, Actor], handlers: list[Actor],
         gridworkers: dict[str, Actor], citizens: list[tuple[str, str]], desk: Desk) -> None:
    """One round of work by everybody."""
    op, leader = actors["sim-operator"], actors.get("sim-leader")
    roll = rnd.random()
    if roll < 0.35 and gridworkers:
        code, title = rnd.choice(PATROL)
        lon, lat = _point(rnd)
        gw = rnd.choice(list(gridworkers.values()))
        gw.call("POST", "/api/v1/cases", json={"source": "patrol", "title": title, "category_code": code, "lon": lon,
                                               "lat": lat, "photos": PHOTOS[:1]})
    elif roll < 0.55:
        htype, code, text = rnd.choice(CALLS)
        lon, lat = _point(rnd)
        body = {"source": "hotline", "title": text, "hotline_type": htype, "address": "南沙区" + text[-4:] + "附近",
                "lon": lon, "lat": lat, "reporter_phone": f"139{rnd.randint(10**7, 10**8 - 1)}", "reporter_name": "市民"}
        if code:
            body["category_code"] = code
        else:
            body["auto_file"] = False
        r = op.call("POST", "/api/v1/cases", json=body)
        if r.status_code == 201 and not code:
            _act(op, r.json()["id"], "answer", comment="已按知识库答复来电人")
    elif roll < 0.65:
        code, title = rnd.choice(WEB)
        lon, lat = _point(rnd)
        phone = f"137{rnd.randint(10**7, 10**8 - 1)}"
        r = anon.post("/api/v1/public/cases", json={"phone": phone, "title": title, "category_code": code,
                                                    "lon": lon, "lat": lat, "address": "南沙区"})
        if r.status_code == 201:
            citizens.append((r.json()["ticket"], phone))
    # the command centre files what came in and dispatches the manual queue
    for c in [c for c in _items(op, status="reported") if desk.mine(c)][:5]:
        if rnd.random() < 0.1:
            _act(op, c["id"], "reject", comment="不符合立案条件")
        else:
            _act(op, c["id"], "file", comment="符合立案条件")
    for c in [c for c in _items(op, status="filed") if desk.mine(c)][:3]:
        if not _act(op, c["id"], "dispatch", comment="按权责清单派遣"):
            rows = op.call("GET", "/api/v1/cases/responsibilities").json()
            if isinstance(rows, list) and rows:
                _act(op, c["id"], "dispatch", comment="人工派遣", dept_org_id=rows[0]["dept_org_id"])
    # departments work their queues
    for h in handlers:
        for c in [c for c in _items(h, status="dispatched") if desk.mine(c)][:3]:
            if rnd.random() < 0.04:
                _act(h, c["id"], "return", comment="非本部门职责")
            elif rnd.random() < 0.7:
                _act(h, c["id"], "accept", comment="已签收")
        for c in [c for c in _items(h, status="in_progress,rework") if desk.mine(c)][:3]:
            if rnd.random() < 0.4:
                _act(h, c["id"], "handle", comment="已处置完毕", attachments=PHOTOS[1:2])
    # verification (by the case's community grid worker when the simulator has one there), closure, supervision
    for c in [c for c in _items(op, status="handled") if desk.mine(c)][:4]:
        action, note = ("rework", "现场仍有问题") if rnd.random() < 0.1 else ("verify", "核查已处置")
        gw = gridworkers.get(c.get("community_code") or "")
        if not (gw is not None and _act(gw, c["id"], action, comment=note)):
            _act(op, c["id"], action, comment=note)
    for c in [c for c in _items(op, status="verified") if desk.mine(c)][:4]:
        _act(op, c["id"], "close", public_reply="您反映的问题已处理完毕，感谢支持。")
    if leader is not None and rnd.random() < 0.2:
        for c in _items(leader, status="open", overdue="true")[:1]:
            _act(leader, c["id"], "supervise", comment="超期未办结，请加快", level=2)
    # citizens come back to check and rate
    if citizens and rnd.random() < 0.5:
        ticket, phone = citizens[rnd.randrange(len(citizens))]
        r = anon.post("/api/v1/public/cases/track", json={"ticket": ticket, "phone": phone})
        if r.status_code == 200 and r.json().get("can_rate"):
            sat = rnd.choices(["satisfied", "basic", "dissatisfied"], [0.75, 0.17, 0.08])[0]
            anon.post("/api/v1/public/cases/rating", json={"ticket": ticket, "phone": phone, "satisfaction": sat})
            citizens.remove((ticket, phone))


def run(base_url: str, stop: threading.Event) -> None:
    """Work as the simulator's own accounts (sim-operator, sim-leader, handler-<dept>, grid-<community>; never the
    README's operator/handler/gridworker) until `stop` is set (a few actions every few seconds)."""
    rnd = random.Random()
    with httpx.Client(base_url=base_url, timeout=30) as client, httpx.Client(base_url=base_url, timeout=30) as anon:
        actors = {name: Actor(client, name) for name in ("sim-operator", "sim-leader")}
        for a in actors.values():
            if not a.login():
                log.warning("cases simulator: cannot log in as %s", a.username)
        handlers = [a for a in (Actor(client, f"handler-{d.code[2:].lower()}") for d in dd.DEPARTMENTS[1:])
                    if a.login()]
        gridworkers = {}
        for t in dd.TOWNS:  # the cases demo's grid worker of each town's first community
            c = next(c for c in dd.COMMUNITIES if c.town_code == t.code)
            a = Actor(client, f"grid-{c.code}")
            if a.login():
                gridworkers[c.code] = a
        citizens: list[tuple[str, str]] = []
        desk = Desk()
        if not PHOTOS:
            _upload_photos(anon)
        while not stop.is_set():
            try:
                step(rnd, anon, actors, handlers, gridworkers, citizens, desk)
            except httpx.HTTPError as exc:
                log.warning("cases simulator: %s", exc)
            except Exception:
                log.exception("cases simulator step failed")
            stop.wait(rnd.uniform(3, 8))
