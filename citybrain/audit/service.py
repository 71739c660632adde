"""The audit trail: every state change is recorded here, in the same transaction as the change.

Records are chained: each carries the previous record's hash and an HMAC (SHA-256, or SM3 for 国密
deployments) over its own fields keyed with the server secret, so an edited, deleted or inserted row
breaks the chain and `verify` names the first bad record. A one-row anchor (`audit_head`) holds the newest
record's sequence number and hash under its own HMAC, so cutting records off the end is caught too.
The application never updates or deletes audit records.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

import orjson
from sqlalchemy import bindparam, event, func, insert, select, update
from sqlalchemy.orm import Session

from citybrain import context
from citybrain.audit.models import AuditHead, AuditRecord
from citybrain.config import get_settings
from citybrain.context import Principal
from citybrain.db import Database, get_db, utcnow
from citybrain.masking import scrub

GENESIS = "0" * 64
_HEAD = "audit_head"
ALGORITHMS = ("sha256", "sm3")


def _key() -> bytes:
    secret = get_settings().server_secret().encode()
    return hmac.new(secret, b"citybrain-audit-chain", hashlib.sha256).digest()


def _normalise(summary: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(scrub(summary), default=str))


def _hmac(payload: bytes, alg: str) -> str:
    if alg == "sm3":
        return hmac.new(_key(), payload, lambda: hashlib.new("sm3")).hexdigest()
    return hmac.new(_key(), payload, hashlib.sha256).hexdigest()


def _digest(prev_hash: str, fields: dict[str, Any], alg: str) -> str:
    return _hmac(prev_hash.encode() + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS, default=str), alg)


def _head_mac(seq: int, hash_: str, alg: str) -> str:
    return _hmac(f"audit-head:{seq}:{hash_}".encode(), alg)


def _matches(expected: str, compute: Any) -> bool:
    """True if `compute(alg)` gives `expected` under the configured algorithm or, after a switch, the other."""
    first = get_settings().audit_hash
    return any(hmac.compare_digest(compute(alg), expected)
               for alg in (first, *(a for a in ALGORITHMS if a != first)))


def lock_chain(session: Session) -> None:
    """Serialise this transaction's appends with other writers' (see `citybrain.bus.write_lock`)."""
    from citybrain.bus import write_lock

    write_lock(session)


def _fields(r: AuditRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "at": r.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        "actor": r.actor,
        "actor_id": r.actor_id,
        "org_id": r.org_id,
        "action": r.action,
        "target_type": r.target_type,
        "target_id": r.target_id,
        "outcome": r.outcome,
        "ip": r.ip,
        "request_id": r.request_id,
        "summary": r.summary,
    }


# built once: Core statements on the session's connection (no ORM execution layer per record)
_HEAD_ROW = select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)
_INSERT_RECORDS = insert(AuditRecord.__table__)
_HEAD_TABLE = AuditHead.__table__
_UPDATE_ANCHOR = (update(_HEAD_TABLE).where(_HEAD_TABLE.c.id == 1)
                  .values(seq=bindparam("a_seq"), hash=bindparam("a_hash"), mac=bindparam("a_mac")))
_INSERT_ANCHOR = insert(_HEAD_TABLE).values(id=1, seq=bindparam("a_seq"), hash=bindparam("a_hash"),
                                            mac=bindparam("a_mac"))


def _head(session: Session) -> tuple[int, str]:
    cached = session.info.get(_HEAD)
    if cached is not None:
        return cached
    lock_chain(session)
    row = session.connection().execute(_HEAD_ROW).first()
    return (row.seq, row.hash) if row else (0, GENESIS)


def record(
    session: Session,
    *,
    action: str,
    target_type: str,
    target_id: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    note: str | None = None,
    outcome: str = "success",
    actor: Principal | None = None,
) -> None:
    """Add one audit record to the session's transaction (committed with the change it records)."""
    record_many(session, [{"action": action, "target_type": target_type, "target_id": target_id, "before": before,
                           "after": after, "note": note, "outcome": outcome}], actor=actor)


def record_many(session: Session, entries: list[dict[str, Any]], *, actor: Principal | None = None) -> None:
    """Add one audit record per entry (`action`, `target_type`, `target_id`, optional `before`/`after`/`note`/
    `outcome`) to the session's transaction with one insert, each chained to the one before it."""
    if not entries:
        return
    who = actor or context.actor()
    req = context.current()
    alg = get_settings().audit_hash
    seq, prev = _head(session)
    at = utcnow()
    at_iso = at.astimezone(dt.UTC).isoformat(timespec="microseconds")
    rows = []
    for e in entries:
        summary = {k: e[k] for k in ("before", "after", "note") if e.get(k) is not None}
        seq += 1
        row = {"seq": seq, "actor": who.label, "actor_id": who.id, "org_id": who.org_id, "action": e["action"],
               "target_type": e["target_type"],
               "target_id": None if e.get("target_id") is None else str(e["target_id"]),
               "outcome": e.get("outcome") or "success", "ip": req.ip, "request_id": req.request_id,
               "summary": _normalise(summary)}
        row["hash"] = _digest(prev, {**row, "at": at_iso}, alg)
        row["at"], row["prev_hash"] = at, prev
        prev = row["hash"]
        rows.append(row)
    conn = session.connection()
    conn.execute(_INSERT_RECORDS, rows)
    anchor = {"a_seq": seq, "a_hash": prev, "a_mac": _head_mac(seq, prev, alg)}
    if conn.execute(_UPDATE_ANCHOR, anchor).rowcount == 0:
        conn.execute(_INSERT_ANCHOR, anchor)
    session.info[_HEAD] = (seq, prev)


def commit(session: Session, **kwargs: Any) -> None:
    """Record the change and commit the transaction: the one way a service finishes a state change."""
    record(session, **kwargs)
    session.commit()


def record_alone(db: Database | None = None, **kwargs: Any) -> None:
    """Record an event in its own transaction (refused logins and other actions that change nothing else)."""
    db = db or get_db()
    with db.write() as s:
        commit(s, **kwargs)


def reset_session_head(session: Session) -> None:
    """Forget the cached chain head (after a rollback)."""
    session.info.pop(_HEAD, None)


def verify(db: Database | None = None, *, chunk: int = 5000) -> dict[str, Any]:
    """Walk the chain; report whether it is intact and, if not, the first bad record and why."""
    db = db or get_db()
    prev_hash, expected_seq, checked = GENESIS, 1, 0

    def bad(seq: int | None, reason: str) -> dict[str, Any]:
        return {"ok": False, "checked": checked, "first_bad_seq": seq, "reason": reason}

    with db.read() as s:
        last_seq = 0
        while True:
            rows = s.scalars(
                select(AuditRecord).where(AuditRecord.seq > last_seq).order_by(AuditRecord.seq).limit(chunk)
            ).all()
            if not rows:
                break
            for r in rows:
                if r.seq != expected_seq:
                    return bad(expected_seq if r.seq > expected_seq else r.seq,
                               f"record seq={expected_seq} is missing (deleted); the next present is seq={r.seq}"
                               if r.seq > expected_seq else "sequence out of order")
                if r.prev_hash != prev_hash:
                    return bad(r.seq, "previous-hash link broken (a record before it was deleted, replaced or "
                                      "inserted)")
                fields = _fields(r)
                if not _matches(r.hash, lambda alg, p=prev_hash, f=fields: _digest(p, f, alg)):
                    return bad(r.seq, "content does not match its hash (the record was edited or forged)")
                prev_hash, expected_seq, checked, last_seq = r.hash, r.seq + 1, checked + 1, r.seq
            s.expunge_all()
        total = s.scalar(select(func.count()).select_from(AuditRecord)) or 0
        head = s.get(AuditHead, 1)
    if total != checked:
        return bad(None, "row count does not match the chain")
    if head is None:
        if checked:
            return bad(last_seq, "the chain's head anchor is missing (it was deleted)")
    elif not _matches(head.mac, lambda alg: _head_mac(head.seq, head.hash, alg)):
        return bad(head.seq, "the chain's head anchor was altered")
    elif head.seq > last_seq:
        return bad(last_seq + 1, f"records seq={last_seq + 1}..{head.seq} were cut off the end of the chain")
    elif head.seq < last_seq:
        return bad(head.seq + 1, f"records after seq={head.seq} were not written by the application")
    elif head.hash != prev_hash:
        return bad(last_seq, "the newest record differs from the anchored one")
    return {"ok": True, "checked": checked, "first_bad_seq": None, "reason": None}


def search(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    outcome: str | None = None,
    org_id: int | None = None,
    request_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[AuditRecord]]:
    """Audit records matching the filters, newest first, with the total count.

    `actor` is `kind:name` (`user:operator`) or a bare name; `action` is exact or uses `*` wildcards
    (`auth.*`); the time range is `since <= at < until`.
    """
    q = select(AuditRecord)
    if actor:
        q = q.where(AuditRecord.actor == actor if ":" in actor
                    else AuditRecord.actor.like(f"%:{_like_escape(actor)}", escape="\\"))
    if action:
        q = q.where(AuditRecord.action.like(_like_escape(action).replace("*", "%"), escape="\\"))
    if outcome:
        q = q.where(AuditRecord.outcome == outcome)
    if org_id is not None:
        q = q.where(AuditRecord.org_id == org_id)
    if request_id:
        q = q.where(AuditRecord.request_id == request_id)
    if target_type:
        q = q.where(AuditRecord.target_type == target_type)
    if target_id:
        q = q.where(AuditRecord.target_id == target_id)
    if since:
        q = q.where(AuditRecord.at >= since)
    if until:
        q = q.where(AuditRecord.at < until)
    total = session.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = session.scalars(q.order_by(AuditRecord.seq.desc()).limit(limit).offset(offset)).all()
    return total, list(rows)


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
@event.listens_for(Session, "after_soft_rollback")
def _forget_head(session: Session, *_args: Any) -> None:
    session.info.pop(_HEAD, None)
