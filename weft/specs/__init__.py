"""Workflow specs; importing this package registers every workflow type."""

from weft.specs import classic, clusters, datasets, evaluation, export, models, relaycore, scanning, serving, training
from weft.specs.base import REGISTRY, Stage, StepContext, StepDef, StepModel, WorkflowType, get_type

__all__ = ["REGISTRY", "Stage", "StepContext", "StepDef", "StepModel", "WorkflowType", "get_type"]
