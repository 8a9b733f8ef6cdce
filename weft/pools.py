"""weft's own Prefect work pools: `cpu` on every machine, `gpu` where CUDA is (its concurrency
limit stands for GPU slots), `cpu-light` for the light flows (onboarding, cloud models, security
scans), whose worker starts each run in a pre-imported process (deployments/worker.py).
Added clusters bring pools of their own (weft/clusters.py)."""

from __future__ import annotations

CPU = "cpu"
GPU = "gpu"
LIGHT = "cpu-light"
TITLES = {CPU: "Local CPU", GPU: "Local GPU"}
CONCURRENCY: dict[str, int | None] = {CPU: None, GPU: 1, LIGHT: None}  # pool -> concurrent flow runs; None = unlimited
GPU_FIRST = (GPU, CPU)  # preference order of work that runs best on a GPU and can run on a CPU
# weft's own pools run weft's process worker (deployments/worker.py: woken by events, one interpreter
# per run, this many warm pre-imported processes); an added cluster's pool runs `prefect worker start`
WARM_PROCESSES = {CPU: 0, GPU: 0, LIGHT: 1}
WORKER_MODULE = "deployments.worker"
