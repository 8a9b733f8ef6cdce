"""Document 000's workflows: `POST /workflows` stores a whole workflow from one `config`, `/start` runs it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime


class WorkflowCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    workflow_type: str = Field(description="a weft workflow type (add_local_model, fine_tune, ...) or document "
                                           "000's `fine-tuning`")
    config: dict[str, Any] = Field(description="document 000's config (model, dataset, fine_tuning) or the "
                                               "workflow type's merged spec")


class WorkflowCreated(BaseModel):
    id: str
    name: str
    description: str | None
    workflow_type: str
    status: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class WorkflowStarted(BaseModel):
    id: str
    status: str
    flow_run_id: str
    started_at: UtcDatetime
    updated_at: UtcDatetime
