"""limit/offset paging with `meta: {total, limit, offset}`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import func
from sqlmodel import Session, select

from api.errors import ApiError


class PageParams(BaseModel):
    limit: int = 20
    offset: int = 0


def page_params(limit: int = Query(20, description="1-100"), offset: int = Query(0, description=">= 0")) -> PageParams:
    if not 1 <= limit <= 100:
        raise ApiError(422, "VALIDATION_ERROR", "Invalid parameter: limit must be between 1 and 100",
                       {"parameter": "limit", "constraint": "1-100"})
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
