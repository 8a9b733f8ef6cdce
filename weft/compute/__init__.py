"""Compute platforms (local pools, Kubernetes clusters, GPU clouds), their resources and prices, and
what a workflow's run costs."""
