"""The per-file checks. Each returns issues and never executes or deserialises the model."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from pydantic import BaseModel

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
SAFE = "SAFE"  # a scan's status when it found no issue; otherwise its worst severity
PICKLE_SUFFIXES = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".dill"}
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                      "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
                      "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75}
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
GGUF_MAGIC = b"GGUF"


class Issue(BaseModel):
    title: str
    severity: str
    description: str
    source: str
    scanner: str


def kind_of(path: Path) -> str | None:
    """Which check a file needs: pickle, safetensors, gguf, code, or None (nothing to scan)."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".gguf":
        return "gguf"
    if suffix == ".py":
        return "code"
    return None


def pickle_issues(path: Path, source: str) -> list[Issue]:
    """modelscan and picklescan together: modelscan misses payloads in legacy (non-zip) torch files."""
    from modelscan.modelscan import ModelScan
    from picklescan.scanner import SafetyLevel, scan_file_path

    issues: dict[tuple[str, str], Issue] = {}
    report = ModelScan().scan(str(path))
    for item in report.get("issues", []):
        key = (item.get("module", ""), item.get("operator", ""))
        issues[key] = Issue(title=f"Unsafe operator {key[0]}.{key[1]}", severity=item["severity"],
                            description=item["description"], source=source, scanner="modelscan")
    for error in report.get("errors", []):
        issues[("error", str(error))] = Issue(title="modelscan error", severity="HIGH", source=source,
                                              scanner="modelscan", description=str(error.get("description", error))
                                              if isinstance(error, dict) else str(error))
    result = scan_file_path(str(path))
    if result.scan_err:
        issues[("error", "picklescan")] = Issue(title="picklescan could not parse the file", severity="HIGH",
                                                source=source, scanner="picklescan",
                                                description="the file is not a readable pickle or zip of pickles")
    for g in result.globals:
        if g.safety == SafetyLevel.Innocuous:
            continue
        key = (g.module, g.name)
        if key in issues:  # both scanners found it
            issues[key].scanner = "modelscan+picklescan"
            continue
        dangerous = g.safety == SafetyLevel.Dangerous
        issues[key] = Issue(title=f"{'Dangerous' if dangerous else 'Unknown'} import {g.module}.{g.name}",
                            severity="CRITICAL" if dangerous else "MEDIUM", source=source, scanner="picklescan",
                            description=f"the pickle imports {g.module}.{g.name}"
                            + (", which can run code when loaded" if dangerous else ", which is not a known-safe global"))
    return list(issues.values())


class SafetensorsHeaderError(ValueError):
    """The file is not an honest safetensors file; the message says why in a user's terms."""


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's (dtype, shape) from the header, checked without reading tensor data: a sane length, a
    JSON object, known dtypes, offsets that match each shape and tile the data section exactly (so a
    truncated file is named as such); a pickle or zip renamed `.safetensors` is named too."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if raw[:1] == b"\x80":
            raise SafetensorsHeaderError("not a safetensors file: it is a Python pickle (e.g. torch.save output); "
                                         "save it with safetensors (peft's save_pretrained does by default)")
        if raw[:2] == b"PK":
            raise SafetensorsHeaderError("not a safetensors file: it is a zip archive (torch.save's format); save "
                                         "it with safetensors (peft's save_pretrained does by default)")
        if len(raw) < 8:
            raise SafetensorsHeaderError(f"not a safetensors file: it has only {size} bytes")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            raise SafetensorsHeaderError(f"not a safetensors file (or truncated): the header length is {n} bytes "
                                         f"but {size - 8} bytes follow it")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SafetensorsHeaderError(f"not a safetensors file: its header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsHeaderError("not a safetensors file: its header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise SafetensorsHeaderError("not a safetensors file: __metadata__ must map strings to strings")
    tensors, spans = {}, []
    for name, info in header.items():
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsHeaderError(f"not a safetensors file: tensor {name!r} lacks dtype, shape or "
                                         "data_offsets") from None
        if dtype not in SAFETENSORS_DTYPES:
            raise SafetensorsHeaderError(f"not a safetensors file: tensor {name!r} has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                and type(begin) is int and type(end) is int and 0 <= begin <= end):
            raise SafetensorsHeaderError(f"not a safetensors file: the header entry of tensor {name!r} is malformed")
        needed = math.ceil(math.prod(shape) * SAFETENSORS_DTYPES[dtype])
        if end - begin != needed:
            raise SafetensorsHeaderError(f"not a safetensors file: tensor {name!r} ({dtype} {shape}) needs {needed} "
                                         f"bytes but its data_offsets [{begin}, {end}] hold {end - begin}")
        tensors[name] = (dtype, tuple(shape))
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            raise SafetensorsHeaderError(f"not a safetensors file: tensor data {'overlaps' if begin < position else 'leaves a gap'} "
                                         f"at byte {begin} ({name!r})")
        position = end
    found = size - 8 - n
    if found < position:
        raise SafetensorsHeaderError(f"truncated: expected {position} bytes of tensor data, found {found}")
    if found > position:
        raise SafetensorsHeaderError(f"not a safetensors file: {found - position} bytes follow the tensor data "
                                     "the header describes")
    return tensors


def safetensors_issues(path: Path, source: str) -> list[Issue]:
    """The header must be honest (`read_safetensors_header`); a dishonest one is HIGH."""
    try:
        read_safetensors_header(path)
    except SafetensorsHeaderError as exc:
        return [Issue(title="Invalid safetensors header", severity="HIGH", source=source, scanner="weft.safetensors",
                      description=str(exc))]
    return []


def gguf_issues(path: Path, source: str) -> list[Issue]:
    """Magic, version and a header gguf's reader can parse (tensor data must lie inside the file)."""
    with path.open("rb") as fh:
        head = fh.read(8)
    if head[:4] != GGUF_MAGIC:
        return [Issue(title="Not a GGUF file", severity="HIGH", source=source, scanner="weft.gguf",
                      description=f"magic is {head[:4]!r}, expected b'GGUF'")]
    (version,) = struct.unpack("<I", head[4:8])
    if version not in (2, 3):
        return [Issue(title="Unsupported GGUF version", severity="MEDIUM", source=source, scanner="weft.gguf",
                      description=f"GGUF version {version}")]
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path), "r")
        size = path.stat().st_size
        for t in reader.tensors:
            if t.data_offset + t.n_bytes > size:
                raise ValueError(f"tensor {t.name} ends past the end of the file")
    except Exception as exc:  # a malformed header is the finding
        return [Issue(title="Malformed GGUF header", severity="HIGH", source=source, scanner="weft.gguf",
                      description=f"{type(exc).__name__}: {exc}")]
    return []


def code_issues(root: Path) -> list[Issue]:
    """Python shipped with the model, and `auto_map` entries that need `trust_remote_code=True`."""
    issues = []
    py_files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py")) if root.is_dir() else []
    config = root / "config.json" if root.is_dir() else None
    auto_map = {}
    if config and config.exists():
        try:
            auto_map = json.loads(config.read_text()).get("auto_map") or {}
        except (json.JSONDecodeError, AttributeError):
            auto_map = {}
    if auto_map:
        issues.append(Issue(title="Model requires trust_remote_code", severity="MEDIUM", source="config.json",
                            scanner="weft.code", description="auto_map loads classes from the repository's own "
                            f"code ({', '.join(sorted(auto_map))}); files: {', '.join(py_files) or 'none shipped'}"))
    for name in py_files:
        issues.append(Issue(title="Executable code shipped with the model", severity="MEDIUM", source=name,
                            scanner="weft.code", description=f"{name} runs when the model is loaded with "
                            "trust_remote_code=True; review it before deploying"))
    return issues


CHECKS = {"pickle": pickle_issues, "safetensors": safetensors_issues, "gguf": gguf_issues}
