"""List conventions: limit/offset paging with `meta: {total, limit, offset}` (document 000; document 002's
`page` is accepted too), and `sort`, `order`, `fields` (document 000's common parameters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import func
from sqlalchemy import types as sa_types
from sqlmodel import Session, select

from api.errors import ApiError

MAX_LIMIT = 100
T = TypeVar("T")


class PageParams(BaseModel):
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0)
    page: int = Field(default=1, ge=1, description="1-based page number (document 002), from offset and limit")


def page_params(limit: int = Query(20, description=f"items per page, 1-{MAX_LIMIT}"),
                offset: int = Query(0, description="items to skip, >= 0"),
                page: int | None = Query(None, description="1-based page number (document 002): skips (page-1) x "
                                                           "limit items; instead of offset")) -> PageParams:
    """Out-of-range values are a 422 naming the parameter and its constraint (document 000)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: limit must be between 1 and {MAX_LIMIT}",
                       {"parameter": "limit", "constraint": f"1-{MAX_LIMIT}"})
    if offset < 0:
        raise ApiError(422, "VALIDATION_ERROR", "Invalid parameter: offset must be >= 0",
                       {"parameter": "offset", "constraint": ">=0"})
    if page is not None:
        if page < 1:
            raise ApiError(422, "VALIDATION_ERROR", "Invalid parameter: page must be >= 1",
                           {"parameter": "page", "constraint": ">=1"})
        offset = (page - 1) * limit
    return PageParams(limit=limit, offset=offset, page=offset // limit + 1)


Paging = Annotated[PageParams, Depends(page_params)]


def page_response(data: list[Any], total: int, page: PageParams) -> dict[str, Any]:
    return {"data": data, "meta": {"total": total, "limit": page.limit, "offset": page.offset}}


class ListQuery(BaseModel):
    """`sort` (a field), `order` (asc | desc) and `fields` (the subset of each item to return); without `sort`
    and `order` a list keeps its own order (usually newest first)."""

    sort: str | None = None
    order: Literal["asc", "desc"] | None = None
    fields: list[str] | None = None


def list_query(sort: str | None = Query(None, description="field to sort by, e.g. created_at"),
               order: str | None = Query(None, description="asc | desc (default desc)"),
               fields: str | None = Query(None, description="comma-separated fields to include")) -> ListQuery:
    if order is not None and order not in ("asc", "desc"):
        raise ApiError(422, "VALIDATION_ERROR", "Invalid parameter: order must be asc or desc",
                       {"parameter": "order", "constraint": "asc|desc"})
    picked = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
    return ListQuery(sort=sort, order=order, fields=picked or None)


Listing = Annotated[ListQuery, Depends(list_query)]
def sortable(table: Any, item: type[BaseModel]) -> set[str]:
    """The item's fields that are plain columns of `table` (not JSON): what `sort` may name."""
    return {name for name, column in table.__table__.columns.items()
            if name in item.model_fields and not isinstance(column.type, sa_types.JSON)}


def sorted_by(stmt, table: Any, query: ListQuery, allowed: set[str], default: str = "created_at"):
    """`stmt` ordered by the requested column instead of its own order (ties broken by id); 422 for a column
    not in `allowed`."""
    name = query.sort or default
    if name not in allowed:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: cannot sort by {name!r}",
                       {"parameter": "sort", "constraint": ", ".join(sorted(allowed))})
    column = getattr(table, name)
    return stmt.order_by(None).order_by(column.asc() if query.order == "asc" else column.desc(), table.id)


def only_fields(items: list[dict[str, Any]], query: ListQuery, known: set[str]) -> list[dict[str, Any]]:
    """Each item reduced to `query.fields` (all of it without them); 422 for a field items do not have."""
    if not query.fields:
        return items
    if unknown := [f for f in query.fields if f not in known]:
        raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: unknown fields {', '.join(unknown)}",
                       {"parameter": "fields", "constraint": ", ".join(sorted(known))})
    return [{k: item.get(k) for k in query.fields} for item in items]


def arranged(items: list[Any], listing: ListQuery, item: type[BaseModel]) -> list[Any]:
    """A list built in memory (whole, before it is cut into a page) sorted and reduced as `listing` asks: any
    field of `item` holding plain values may be the sort key (items without it go last)."""
    if not (listing.sort or listing.order or listing.fields):
        return items
    data = jsonable_encoder(items)
    if listing.sort or listing.order:
        name = listing.sort or "created_at"
        plain = {k for k in item.model_fields
                 if all(isinstance(d.get(k), (str, int, float, bool, type(None))) for d in data)}
        if name not in plain:
            raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: cannot sort by {name!r}",
                           {"parameter": "sort", "constraint": ", ".join(sorted(plain))})
        present = [d for d in data if d.get(name) is not None]
        present.sort(key=lambda d: d[name], reverse=listing.order != "asc")
        data = present + [d for d in data if d.get(name) is None]
    return only_fields(data, listing, set(item.model_fields))


def listed(body: dict[str, Any], listing: ListQuery) -> Any:
    """The list's body, as a JSONResponse when `fields` reduced its items (they no longer fit its model)."""
    return JSONResponse(jsonable_encoder(body)) if listing.fields else body


def paginate(session: Session, stmt, page: PageParams, serialize: Callable[[Any], Any],
             listing: ListQuery | None = None, item: type[BaseModel] | None = None,
             envelope: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Any:
    """Count `stmt`, fetch one page of it and serialize each row. With `listing` and the `item` model: sorted
    as asked (else in `stmt`'s own order), and reduced to `fields` (a JSONResponse then, since the items no
    longer fit `item`). `envelope` adds a list's own top-level keys."""
    if listing is not None and item is not None and (listing.sort or listing.order):
        table = stmt.column_descriptions[0]["entity"]
        stmt = sorted_by(stmt, table, listing, sortable(table, item))
    total = session.exec(select(func.count()).select_from(stmt.order_by(None).subquery())).one()
    rows = session.exec(stmt.offset(page.offset).limit(page.limit))
    data = [serialize(row) for row in rows]
    reduced = listing is not None and item is not None and bool(listing.fields)
    if reduced:
        data = only_fields(jsonable_encoder(data), listing, set(item.model_fields))
    body = page_response(data, total, page)
    if envelope is not None:
        body = envelope(body)
    return JSONResponse(jsonable_encoder(body)) if reduced else body
