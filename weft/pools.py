"""weft's own Prefect work pools: `cpu` on every machine, `gpu` where CUDA is (its concurrency
limit stands for GPU slots). Added clusters bring pools of their own (weft/clusters.py)."""

from __future__ import annotations

CPU = "cpu"
GPU = "gpu"
TITLES = {CPU: "Local CPU", GPU: "Local GPU"}
CONCURRENCY: dict[str, int | None] = {CPU: None, GPU: 1}  # pool -> concurrent flow runs; None = unlimited
GPU_FIRST = (GPU, CPU)  # preference order of work that runs best on a GPU and can run on a CPU
