"""The audit trail: every state change is recorded here, in the same transaction as the change.

Records are chained: each carries the previous record's hash and an HMAC (SHA-256, or SM3 for 国密
deployments) over its own fields keyed with the server secret, so an edited, deleted or inserted row
breaks the chain and `verify` names the first bad record. The application never updates or deletes rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

import orjson
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from citybrain import context
from citybrain.audit.models import AuditRecord
from citybrain.config import get_settings
from citybrain.context import Principal
from citybrain.db import Database, get_db, utcnow
from citybrain.masking import scrub

GENESIS = "0" * 64
_HEAD = "audit_head"


def _key() -> bytes:
    secret = get_settings().server_secret().encode()
    return hmac.new(secret, b"citybrain-audit-chain", hashlib.sha256).digest()


def _normalise(summary: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(scrub(summary), default=str))


def _digest(prev_hash: str, fields: dict[str, Any], alg: str) -> str:
    payload = prev_hash.encode() + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS, default=str)
    if alg == "sm3":
        return hmac.new(_key(), payload, lambda: hashlib.new("sm3")).hexdigest()
    return hmac.new(_key(), payload, hashlib.sha256).hexdigest()


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


def _head(session: Session) -> tuple[int, str]:
    cached = session.info.get(_HEAD)
    if cached is not None:
        return cached
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7349201)"))
    row = session.execute(select(AuditRecord.seq, AuditRecord.hash).order_by(AuditRecord.seq.desc()).limit(1)).first()
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
) -> AuditRecord:
    """Add one audit record to the session's transaction (committed with the change it records)."""
    who = actor or context.actor()
    req = context.current()
    summary: dict[str, Any] = {}
    if before is not None:
        summary["before"] = before
    if after is not None:
        summary["after"] = after
    if note:
        summary["note"] = note
    seq, prev = _head(session)
    rec = AuditRecord(
        seq=seq + 1,
        at=utcnow(),
        actor=who.label,
        actor_id=who.id,
        org_id=who.org_id,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        outcome=outcome,
        ip=req.ip,
        request_id=req.request_id,
        summary=_normalise(summary),
        prev_hash=prev,
    )
    rec.hash = _digest(prev, _fields(rec), get_settings().audit_hash)
    session.add(rec)
    session.flush([rec])
    session.info[_HEAD] = (rec.seq, rec.hash)
    return rec


def commit(session: Session, **kwargs: Any) -> AuditRecord:
    """Record the change and commit the transaction: the one way a service finishes a state change."""
    rec = record(session, **kwargs)
    session.commit()
    return rec


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
                    reason = "missing record(s) before this one" if r.seq > expected_seq else "sequence out of order"
                    return {"ok": False, "checked": checked, "first_bad_seq": r.seq, "reason": reason}
                if r.prev_hash != prev_hash:
                    return {"ok": False, "checked": checked, "first_bad_seq": r.seq,
                            "reason": "previous-hash link broken (a record was deleted or inserted)"}
                alg = get_settings().audit_hash
                if not hmac.compare_digest(_digest(prev_hash, _fields(r), alg), r.hash):
                    return {"ok": False, "checked": checked, "first_bad_seq": r.seq,
                            "reason": "content does not match its hash (the record was edited or inserted)"}
                prev_hash, expected_seq, checked, last_seq = r.hash, r.seq + 1, checked + 1, r.seq
            s.expunge_all()
        total = s.scalar(select(func.count()).select_from(AuditRecord)) or 0
    if total != checked:
        return {"ok": False, "checked": checked, "first_bad_seq": None, "reason": "row count does not match the chain"}
    return {"ok": True, "checked": checked, "first_bad_seq": None, "reason": None}


def search(
    session: Session,
    *,
    actor: str | None = None,
    action: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[int, list[AuditRecord]]:
    """Audit records matching the filters, newest first, with the total count."""
    q = select(AuditRecord)
    if actor:
        q = q.where(AuditRecord.actor == actor if ":" in actor else AuditRecord.actor.like(f"%:{actor}"))
    if action:
        q = q.where(AuditRecord.action.like(action.replace("*", "%")))
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


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _forget_head(session: Session) -> None:
    session.info.pop(_HEAD, None)
