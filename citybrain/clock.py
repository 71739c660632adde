"""The one clock every service reads, so tests and the simulator can move time (a fake clock)."""

from __future__ import annotations

import datetime as dt

_frozen: dt.datetime | None = None
_offset = dt.timedelta(0)


def now() -> dt.datetime:
    """The current time, timezone-aware UTC (frozen or shifted in tests)."""
    if _frozen is not None:
        return _frozen
    return dt.datetime.now(dt.UTC) + _offset


def freeze(at: dt.datetime | None) -> None:
    """Stop the clock at `at` (None lets it run again)."""
    global _frozen
    if at is not None and at.tzinfo is None:
        raise ValueError("freeze() needs a timezone-aware datetime")
    _frozen = at


def advance(delta: dt.timedelta) -> None:
    """Move the clock forward (frozen or running)."""
    global _frozen, _offset
    if _frozen is not None:
        _frozen = _frozen + delta
    else:
        _offset += delta


def reset() -> None:
    """Back to the real time."""
    global _frozen, _offset
    _frozen, _offset = None, dt.timedelta(0)
