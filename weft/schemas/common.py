"""What every schema module shares: the row-reading base model, UTC datetimes and a page of a list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict

from weft.clock import as_utc

T = TypeVar("T")
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
"""A datetime returned as aware UTC (ISO 8601 with `Z`), whether the row held a naive or aware value."""


class Out(BaseModel):
    """A response model read from a table row."""

    model_config = ConfigDict(from_attributes=True)


class PageMeta(BaseModel):
    total: int
    limit: int
    offset: int


class Page(BaseModel, Generic[T]):
    """One page of a list: `{"data": [...], "meta": {total, limit, offset}}`."""

    data: list[T]
    meta: PageMeta
