"""weft's own Prefect work pools: `cpu` on every machine, `gpu` where CUDA is (its concurrency
limit stands for GPU slots), `cpu-light` for the light flows (onboarding, cloud models, security
scans), whose worker starts each run in a pre-imported process (deployments/light_runner.py).
Added clusters bring pools of their own (weft/clusters.py)."""

from __future__ import annotations

CPU = "cpu"
GPU = "gpu"
LIGHT = "cpu-light"
TITLES = {CPU: "Local CPU", GPU: "Local GPU"}
CONCURRENCY: dict[str, int | None] = {CPU: None, GPU: 1, LIGHT: None}  # pool -> concurrent flow runs; None = unlimited
GPU_FIRST = (GPU, CPU)  # preference order of work that runs best on a GPU and can run on a CPU
# The worker of a pool: Prefect's process worker, except where weft brings its own (a module to run)
WORKER_MODULE = {LIGHT: "deployments.light_runner"}
