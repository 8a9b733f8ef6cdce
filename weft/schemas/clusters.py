"""Clusters: the Prefect work pools weft deploys onto (document 004's add-cluster form, `GET /clusters`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from weft.schemas.common import UtcDatetime

# document 004's multipart add-cluster step (the handler reads the form itself)
ADD_CLUSTER_FORM = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object", "title": "AddClusterForm",
        "required": ["step_number", "name", "configuration_file"],
        "properties": {
            "workflow_id": {"type": "string", "description": "the workflow to change; absent: start a new one"},
            "workflow_total_steps": {"type": "integer", "minimum": 1, "maximum": 50,
                                     "description": "required when workflow_id is absent"},
            "step_number": {"type": "integer", "enum": [1]},
            "trigger_workflow": {"type": "boolean", "default": False},
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "icon": {"type": "string"},
            "ingress_url": {"type": "string", "maxLength": 500},
            "configuration_file": {"type": "string", "format": "binary",
                                   "description": "YAML, at most 1 MB; a kubeconfig makes a Kubernetes pool"},
        },
    }}},
}


class ClusterOut(BaseModel):
    id: str
    name: str
    pool_name: str = Field(description="the Prefect work pool")
    pool_type: str = Field(description="process | docker | kubernetes")
    icon: str | None
    ingress_url: str | None
    status: str
    hardware: dict[str, Any] = Field(description="what the pool's workers reported")
    has_configuration: bool = Field(description="a configuration file is stored (never returned)")
    created_at: UtcDatetime


class ClusterList(BaseModel):
    data: list[ClusterOut]
    total: int
