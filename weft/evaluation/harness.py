"""Offline lm-evaluation-harness benchmarks: base model vs base + LoRA adapter.

The project's own tasks live as YAML files in `weft/evaluation/tasks/` over small local JSONL data
(`dataset_path: json`, `dataset_kwargs.data_files` relative to the YAML's folder). lm-eval hands
`data_files` to `datasets.load_dataset`, which resolves relative paths against the current working
directory, so `run_harness` copies the task YAMLs into a temporary include folder with `data_files`
rewritten to absolute paths. The whole call runs with the Hugging Face hub in offline mode.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

PROJECT_TASKS_DIR: Path = Path(__file__).resolve().parent / "tasks"
PROJECT_TAG = "weft"  # every project task carries this tag: `run_harness(..., tasks=["weft"])` runs them all
DEFAULT_BATCH_SIZE = 8


class TaskScores(BaseModel):
    """One task's metrics, e.g. {"acc": .., "acc_stderr": ..}: lm-eval's ",none" filter suffix dropped
    (other filters keep theirs, e.g. "exact_match,strict-match"); standard errors as `<metric>_stderr`."""

    task: str
    metrics: dict[str, float]
    samples: int | None = None  # examples scored (after `limit`)


# ------------------------------------------------------------------ task files


class _Tagged:
    """A YAML node with a custom tag (e.g. `!function utils.process_docs`), kept verbatim."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


def _construct_tagged(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> _Tagged:
    if isinstance(node, yaml.ScalarNode):
        return _Tagged("!" + tag_suffix, loader.construct_scalar(node))
    if isinstance(node, yaml.SequenceNode):
        return _Tagged("!" + tag_suffix, loader.construct_sequence(node, deep=True))
    return _Tagged("!" + tag_suffix, loader.construct_mapping(node, deep=True))


def _represent_tagged(dumper: yaml.SafeDumper, data: _Tagged) -> yaml.Node:
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_scalar(data.tag, data.value)


_Loader.add_multi_constructor("!", _construct_tagged)
_Dumper.add_representer(_Tagged, _represent_tagged)


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for ext in ("*.yaml", "*.yml") for p in folder.rglob(ext))


def _task_names(folders: Sequence[Path]) -> dict[str, list[str]]:
    """Names defined in `folders`: each task (member list: itself) and each tag or group (its tasks)."""
    names: dict[str, list[str]] = {}
    for folder in folders:
        for path in _yaml_files(folder):
            try:
                config = yaml.load(path.read_text(), Loader=_Loader)
            except yaml.YAMLError:
                continue
            if not isinstance(config, dict):
                continue
            task = config.get("task")
            if isinstance(task, str):
                names.setdefault(task, [task])
                tags = config.get("tag") or []
                for tag in [tags] if isinstance(tags, str) else tags:
                    names.setdefault(tag, []).append(task)
            group, members = config.get("group"), config.get("task")
            if isinstance(group, str) and isinstance(members, list):
                names.setdefault(group, []).extend(m for m in members if isinstance(m, str))
    return names


def project_tasks() -> list[str]:
    """Names of the tasks defined in `PROJECT_TASKS_DIR` (tags such as "weft" not included)."""
    return sorted(name for name, members in _task_names([PROJECT_TASKS_DIR]).items() if members == [name])


def _absolute(value: Any, base: Path) -> Any:
    """`data_files` value (str, list or split -> str/list mapping) with relative local paths made absolute."""
    if isinstance(value, str):
        if "://" in value or Path(value).is_absolute():
            return value
        return str((base / value).resolve())
    if isinstance(value, list):
        return [_absolute(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _absolute(v, base) for k, v in value.items()}
    return value


def _rewrite(config: Any, base: Path) -> Any:
    if not isinstance(config, dict):
        return config
    kwargs = config.get("dataset_kwargs")
    if isinstance(kwargs, dict):
        for key in ("data_files", "data_dir"):
            if key in kwargs:
                kwargs[key] = _absolute(kwargs[key], base)
    return config


def stage_task_dirs(folders: Sequence[Path], dest: Path) -> list[Path]:
    """Copy each folder's task YAMLs (and Python helpers) under `dest`, same layout (so relative `include:`
    and `!function` still resolve), with relative `data_files` rewritten to absolute paths; returns the
    staged folders (data files stay where they are)."""
    staged = []
    for i, folder in enumerate(folders):
        folder = Path(folder).resolve()
        if not folder.is_dir():
            raise ValueError(f"task folder not found: {folder}")
        out = dest / f"tasks_{i}"
        for py in folder.rglob("*.py"):
            target = out / py.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(py, target)
        for path in _yaml_files(folder):
            target = out / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = path.read_text()
            try:
                config = yaml.load(text, Loader=_Loader)
            except yaml.YAMLError:
                target.write_text(text)
                continue
            target.write_text(yaml.dump(_rewrite(config, path.parent), Dumper=_Dumper, sort_keys=False,
                                        allow_unicode=True))
        staged.append(out)
    return staged


# ------------------------------------------------------------------ offline


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF hub and datasets offline for the duration (env vars and the import-time constants), then restored.
    Process-wide while it lasts: not meant for concurrent threads."""
    import datasets.config
    import huggingface_hub.constants

    env_keys = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved_env = {k: os.environ.get(k) for k in env_keys}
    targets = [(huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"),
               (datasets.config, "HF_DATASETS_OFFLINE")]
    saved = [(mod, name, getattr(mod, name)) for mod, name in targets if hasattr(mod, name)]
    try:
        for k in env_keys:
            os.environ[k] = "1"
        for mod, name, _ in saved:
            setattr(mod, name, True)
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ------------------------------------------------------------------ run


def _scores(results: dict[str, Any], tasks: list[str]) -> list[TaskScores]:
    out = []
    for task, raw in results.get("results", {}).items():
        metrics: dict[str, float] = {}
        samples = raw.get("sample_len")
        for key, value in raw.items():
            if key in ("alias", "sample_len") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            metric, _, filter_name = key.partition(",")
            metrics[metric if filter_name in ("", "none") else key] = float(value)
        out.append(TaskScores(task=task, metrics=metrics, samples=int(samples) if samples is not None else None))
    order = {t: i for i, t in enumerate(tasks)}
    return sorted(out, key=lambda s: (order.get(s.task, len(order)), s.task))


def run_harness(
    model_dir: Path,
    adapter_dir: Path | None,
    tasks: list[str],
    *,
    limit: int | None = None,
    extra_task_dirs: Sequence[Path] = (),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[TaskScores]:
    """Run lm-eval tasks (project tasks, the "weft" tag, or tasks from `extra_task_dirs`) on a local model,
    optionally with a PEFT/LoRA adapter on top, fully offline. `limit` caps the examples per task.
    Raises ValueError for task names that none of the task folders define."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise ValueError(f"no tasks given; project tasks: {', '.join(project_tasks())}")
    folders = [PROJECT_TASKS_DIR, *[Path(p) for p in extra_task_dirs]]
    known = _task_names(folders)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        extra = sorted(set(_task_names(folders[1:])) - set(project_tasks())) if extra_task_dirs else []
        raise ValueError(f"unknown task(s) {unknown}; available project tasks: {', '.join(project_tasks())}"
                         f" (tag {PROJECT_TAG!r} runs them all)" + (f"; from extra_task_dirs: {', '.join(extra)}"
                                                                      if extra else ""))
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"not a model folder (no config.json): {model_dir}")
    model_args: dict[str, Any] = {"pretrained": str(model_dir.resolve()), "dtype": "float32",
                                  "device": "cuda" if torch.cuda.is_available() else "cpu"}
    if adapter_dir is not None:
        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ValueError(f"not a PEFT adapter folder (no adapter_config.json): {adapter_dir}")
        model_args["peft"] = str(adapter_dir.resolve())

    with tempfile.TemporaryDirectory(prefix="weft-lm-eval-") as tmp, _hub_offline():
        staged = stage_task_dirs(folders, Path(tmp))
        manager = TaskManager(include_path=[str(p) for p in staged], include_defaults=False)
        results = simple_evaluate(model="hf", model_args=model_args, tasks=list(tasks), task_manager=manager,
                                  limit=limit, batch_size=batch_size, log_samples=False, bootstrap_iters=1000)
    if results is None:  # only on non-zero ranks in distributed runs
        return []
    return _scores(results, list(tasks))


def compare_harness(base: list[TaskScores], tuned: list[TaskScores]) -> list[dict[str, Any]]:
    """Per task and metric (stderr entries left out): base, tuned and delta = tuned - base. A metric
    missing on one side gets None there and a None delta."""
    base_by = {s.task: s.metrics for s in base}
    tuned_by = {s.task: s.metrics for s in tuned}
    rows: list[dict[str, Any]] = []
    for task in [*base_by, *(t for t in tuned_by if t not in base_by)]:
        b, t = base_by.get(task, {}), tuned_by.get(task, {})
        for metric in [*b, *(m for m in t if m not in b)]:
            if metric.endswith("_stderr"):
                continue
            bv, tv = b.get(metric), t.get(metric)
            rows.append({"task": task, "metric": metric, "base": bv, "tuned": tv,
                         "delta": None if bv is None or tv is None else tv - bv})
    return rows
