"""limit/offset paging with `meta: {total, limit, offset}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlmodel import Session, select

from api.errors import ApiError

MAX_LIMIT = 100
T = TypeVar("T")


class PageParams(BaseModel):
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0)


class PageMeta(BaseModel):
    total: int
    limit: int
    offset: int


class Page(BaseModel, Generic[T]):
    """One page of a list: `{"data": [...], "meta": {total, limit, offset}}`."""

    data: list[T]
    meta: PageMeta


def page_params(limit: int = Query(20, description=f"items per page, 1-{MAX_LIMIT}"),
                offset: int = Query(0, description="items to skip, >= 0")) -> PageParams:
    """Out-of-range values are a 422 naming the parameter and its constraint (document 000)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: limit must be between 1 and {MAX_LIMIT}",
                       {"parameter": "limit", "constraint": f"1-{MAX_LIMIT}"})
    if offset < 0:
        raise ApiError(422, "VALIDATION_ERROR", "Invalid parameter: offset must be >= 0",
                       {"parameter": "offset", "constraint": ">=0"})
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(page_params)]


def page_response(data: list[Any], total: int, page: PageParams) -> dict[str, Any]:
    return {"data": data, "meta": {"total": total, "limit": page.limit, "offset": page.offset}}


def paginate(session: Session, stmt, page: PageParams, serialize: Callable[[Any], Any]) -> dict[str, Any]:
    """Count `stmt`, fetch one page of it (keep its ORDER BY) and serialize each row."""
    total = session.exec(select(func.count()).select_from(stmt.order_by(None).subquery())).one()
    rows = session.exec(stmt.offset(page.offset).limit(page.limit))
    return page_response([serialize(row) for row in rows], total, page)
