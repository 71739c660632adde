"""Web tables: photos uploaded from the report and work forms (stored in the database, so every instance serves them)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from citybrain.db import Base, UTCDateTime, utcnow


class Attachment(Base):
    """An uploaded image, addressed by its SHA-256 (the same photo uploaded twice is stored once)."""

    __tablename__ = "web_attachment"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the content
    content_type: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(Integer)
    filename: Mapped[str | None] = mapped_column(String(200), nullable=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    uploaded_by: Mapped[str] = mapped_column(String(120))
    uploaded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
