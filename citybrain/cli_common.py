"""Shared pieces for module CLIs: the --data-dir option and opening the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from citybrain.config import configure, get_settings
from citybrain.db import Database, get_db

DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="Data folder (CITYBRAIN_DATA_DIR)")]


def open_db(data_dir: Path | None, *, migrate: bool = True) -> Database:
    """Apply --data-dir, open the database and (by default) bring it up to date."""
    if data_dir is not None:
        configure(get_settings().model_copy(update={"data_dir": data_dir}))
    db = get_db()
    if migrate:
        from citybrain.app import startup

        startup(db)
    return db


def pad(text: str, width: int) -> str:
    """`text` left-aligned in `width` terminal columns, counting Chinese (wide) characters as two."""
    import unicodedata

    used = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(0, width - used)
