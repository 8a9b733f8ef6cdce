"""Spec of the add_cluster workflow (document 004's one-step multipart form)."""

from __future__ import annotations

from pydantic import Field

from weft.specs.base import Stage, StepDef, StepModel, WorkflowType, register
from weft.specs.names import WorkflowName


class ClusterForm(StepModel):
    name: str = Field(min_length=1, max_length=100)
    icon: str | None = None
    ingress_url: str | None = Field(default=None, max_length=500)
    pool_name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="the Prefect work pool to create")
    pool_type: str = Field(pattern=r"^(process|docker|kubernetes)$")
    config_block: str = Field(description="the Secret block holding the configuration file (never the file)")


class AddClusterSpec(ClusterForm):
    """Everything the add_cluster flow needs."""


ADD_CLUSTER = register(
    WorkflowType(
        name=WorkflowName.ADD_CLUSTER,
        title="Add cluster",
        steps=(StepDef(1, "Cluster and configuration file", ClusterForm),),
        spec=AddClusterSpec,
        flow_name=WorkflowName.ADD_CLUSTER,
        stages=(
            Stage("create_work_pool", "Create the work pool"),
            Stage("register_replica_deployment", "Register the replica deployment on the pool"),
            Stage("register_cluster", "Register the cluster"),
        ),
    )
)
