"""Web background work: keep the IOC indicator cache in step with bus events."""

from __future__ import annotations

from citybrain.db import Database
from citybrain.web import service


def start(db: Database) -> None:
    """Forget summaries of another database and listen for changes the IOC shows."""
    service.reset_cache()
    service.listen_for_changes()


def stop(db: Database) -> None:
    """Forget the cached summaries."""
    service.reset_cache()
