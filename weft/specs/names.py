"""Every workflow type's name, defined once: the `workflow_type` a workflow row stores and the API
returns, and the name of the Prefect flow (and deployments) it runs. `SERVE_REPLICA`,
`ENDPOINT_CONTROLLER` and `DRIFT_MONITOR` are flows without a step workflow. A `StrEnum`, so a stored or JSON value compares
equal to its member."""

from __future__ import annotations

from enum import StrEnum


class WorkflowName(StrEnum):
    ADD_LOCAL_MODEL = "add_local_model"
    ADD_CLOUD_MODEL = "add_cloud_model"
    DEPLOY_MODEL = "deploy_model"
    DEPLOY_CLASSIC_MODEL = "deploy_classic_model"
    ADD_CLUSTER = "add_cluster"
    MODEL_SECURITY_SCAN = "model_security_scan"
    ADD_WORKER = "add_worker"
    ANALYZE_DATASET = "analyze_dataset"
    FINE_TUNE = "fine_tune"
    EVALUATE_MODEL = "evaluate_model"
    EXPORT_MODEL = "export_model"
    RELAYCORE_RECOMMENDATIONS = "relaycore_recommendations"
    DRIFT_MONITOR = "drift_monitor"
    SERVE_REPLICA = "serve_replica"
    ENDPOINT_CONTROLLER = "endpoint_controller"
