"""add_cluster tasks: the work pool, a serve_replica deployment on it, the cluster record."""

from __future__ import annotations

from prefect import get_run_logger, task
from sqlmodel import select

from tasks.common import step_options
from weft import pools, runs
from weft.db import session_scope
from weft.specs.clusters import AddClusterSpec
from weft.specs.names import WorkflowName
from weft.statuses import ClusterStatus
from weft.tables import Cluster

TEMPLATE_DEPLOYMENT = f"{WorkflowName.SERVE_REPLICA}/{pools.CPU}"  # copied onto each new pool


@task(**step_options("create_work_pool"))
def create_work_pool(spec: AddClusterSpec) -> str:
    if runs.ensure_work_pool(spec.pool_name, spec.pool_type, f"weft cluster {spec.name}"):
        get_run_logger().info("created %s work pool %s", spec.pool_type, spec.pool_name)
    else:
        get_run_logger().info("work pool %s exists already", spec.pool_name)
    return spec.pool_name


@task(**step_options("register_replica_deployment"))
def register_replica_deployment(pool: str) -> str:
    """`serve_replica/<pool>`: the cpu deployment's flow, entrypoint and pull steps on the new pool."""
    deployment_id = runs.copy_deployment(TEMPLATE_DEPLOYMENT, pool,
                                         f"Serve one replica of an endpoint on the {pool} cluster until cancelled.")
    get_run_logger().info("registered serve_replica/%s", pool)
    return deployment_id


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
