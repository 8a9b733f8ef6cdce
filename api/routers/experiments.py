"""Experiments (document 003): `GET /experiments`, the caller's tracked fine-tune runs."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from api.deps import CurrentUser, SessionDep
from api.errors import ApiError
from api.paging import Listing, Paging, only_fields
from weft import experiments
from weft.schemas.experiments import ExperimentList, ExperimentOut

router = APIRouter(tags=["experiments"])
SORTABLE = ("created_at", "ended_at", "name", "project", "status", "id")


@router.get("/experiments", response_model=ExperimentList)
def get_experiments(user: CurrentUser, session: SessionDep, page: Paging, listing: Listing,
                     tracker: str | None = Query(None, description="mlflow (wandb is not available)"),
                     project: str | None = Query(None, description="the tracker's experiment (a job's project_name)"),
                     ) -> dict | JSONResponse:
    """Newest first unless `sort`/`order` say otherwise; `fields` picks each item's keys."""
    items = experiments.list_experiments(session, user.id, tracker, project)
    if listing.sort or listing.order:
        key = listing.sort or "created_at"
        if key not in SORTABLE:
            raise ApiError(422, "VALIDATION_ERROR", f"Invalid parameter: cannot sort by {key!r}",
                           {"parameter": "sort", "constraint": ", ".join(SORTABLE)})
        present = [i for i in items if getattr(i, key) is not None]
        present.sort(key=lambda i: getattr(i, key), reverse=listing.order != "asc")
        items = present + [i for i in items if getattr(i, key) is None]
    shown = experiments.with_best_losses(items[page.offset:page.offset + page.limit])
    body = {"experiments": [ExperimentOut.model_validate(i.model_dump()) for i in shown], "total": len(items),
            "limit": page.limit, "offset": page.offset}
    if listing.fields:
        body["experiments"] = only_fields(jsonable_encoder(body["experiments"]), listing,
                                          set(ExperimentOut.model_fields))
        return JSONResponse(jsonable_encoder(body))
    return body
