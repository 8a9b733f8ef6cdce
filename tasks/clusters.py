"""add_cluster tasks: the work pool, a serve_replica deployment on it, the cluster record."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from sqlmodel import select

from tasks.common import step_options
from weft import pools
from weft.db import session_scope
from weft.specs.clusters import AddClusterSpec
from weft.specs.names import WorkflowName
from weft.statuses import ClusterStatus
from weft.tables import Cluster

TEMPLATE_DEPLOYMENT = f"{WorkflowName.SERVE_REPLICA}/{pools.CPU}"  # copied onto each new pool


@task(**step_options("create_work_pool"))
def create_work_pool(spec: AddClusterSpec) -> str:
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=spec.pool_name, type=spec.pool_type,
                                                   description=f"weft cluster {spec.name}"))
            get_run_logger().info("created %s work pool %s", spec.pool_type, spec.pool_name)
        except ObjectAlreadyExists:
            get_run_logger().info("work pool %s exists already", spec.pool_name)
    return spec.pool_name


@task(**step_options("register_replica_deployment"))
def register_replica_deployment(pool: str) -> str:
    """`serve_replica/<pool>`: the cpu deployment's flow, entrypoint and pull steps on the new pool."""
    with get_client(sync_client=True) as client:
        template = client.read_deployment_by_name(TEMPLATE_DEPLOYMENT)
        deployment_id = client.create_deployment(
            flow_id=template.flow_id, name=pool, work_pool_name=pool, entrypoint=template.entrypoint,
            path=template.path, pull_steps=template.pull_steps, tags=[*template.tags, pool],
            parameter_openapi_schema=template.parameter_openapi_schema,
            description=f"Serve one replica of an endpoint on the {pool} cluster until cancelled.")
    get_run_logger().info("registered serve_replica/%s", pool)
    return str(deployment_id)


@task(**step_options("register_cluster"))
def register_cluster(spec: AddClusterSpec, owner_id: str) -> str:
    with session_scope() as s:
        cluster = s.exec(select(Cluster).where(Cluster.pool_name == spec.pool_name)).first() or Cluster(
            pool_name=spec.pool_name, name=spec.name)
        cluster.user_id, cluster.name, cluster.icon, cluster.ingress_url = owner_id, spec.name, spec.icon, spec.ingress_url
        cluster.pool_type, cluster.config_block = spec.pool_type, spec.config_block
        cluster.status = ClusterStatus.AVAILABLE
        s.add(cluster)
        s.flush()
        cluster_id = cluster.id
    get_run_logger().info("cluster %s (%s) is available; start its workers with `weft worker --pool %s`",
                          spec.name, cluster_id, spec.pool_name)
    return cluster_id
