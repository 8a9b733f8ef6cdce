"""The scan of classic model files (scikit-learn pickles and joblib files, PyTorch checkpoints, Keras models),
run before anything loads them: an uploaded pickle is code.

Why a pickle walker of our own: measured on real files (STACK_NOTES, "modelscan 0.8.8 gaps"), neither
modelscan nor picklescan can parse a `joblib.dump` file that holds numpy arrays, because joblib writes raw
array bytes inside the pickle stream. modelscan then prints "No issues found", and an `os.system` payload in
such a file is missed while `joblib.load` runs it; picklescan also calls every scikit-learn global "unknown".

`walk_pickle` follows a stream the way `pickle.load` (or, with joblib=True, `joblib.load`) reads it, with
placeholders instead of every import, call and instantiation, so nothing in the file ever runs. It skips
array bytes exactly as joblib 1.6's `NumpyArrayWrapper.read_array` reads them and walks object arrays' nested
pickles. Compressed joblib files (zlib, gzip, bz2, lzma, xz) are decompressed with the standard library;
lz4 and joblib < 0.9.3's format are refused. weft loads sklearn files with `joblib.load`, or `pickle.load` where
the model's environment has no joblib, so `walk_pickle_file` walks both views of a file whenever they differ.
`classify` holds every global found to an allow-list of what real classic models use. A file that cannot be
walked to its end is unscannable and refused, never passed.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import copyreg
import importlib.machinery
import io
import json
import lzma
import pickle
import re
import sys
import zipfile
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from weft.scan.checks import SEVERITIES, Issue, pickle_issues

LOW, MEDIUM, HIGH, CRITICAL = SEVERITIES
SCANNER = "weft.classic"
PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib"}
TORCH_SUFFIXES = {".pt", ".pth"}
WRAPPER = "joblib.numpy_pickle.NumpyArrayWrapper"
# joblib's own argument names and defaults for NumpyArrayWrapper.__init__
WRAPPER_INIT = ("subclass", "shape", "order", "dtype", "allow_mmap", "numpy_array_alignment_bytes")
WRAPPER_DEFAULTS = {"allow_mmap": False, "numpy_array_alignment_bytes": 16}
CONSTRUCTORS = {"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__"}  # make an args[0]
SKIP_CHUNK = 1 << 20
MAX_CONFIG_BYTES = 64 * 1024 * 1024
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# what zipfile raises on a damaged archive, an encrypted member or an unknown compression method
ZIP_ERRORS = (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError)

# joblib.load checks these magic numbers in this order; lz4 and joblib < 0.9.3's "ZF" are refused here
COMPRESSIONS = (("zlib", b"\x78"), ("gzip", b"\x1f\x8b"), ("bz2", b"BZ"), ("lzma", b"\x5d\x00"),
                ("xz", b"\xfd\x37\x7a\x58\x5a"), ("lz4", b"\x04\x22\x4d\x18"), ("compat", b"ZF"))

# --- the policy -------------------------------------------------------------------------------------------

ALLOWED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "pandas.", "xgboost.", "lightgbm.", "torch.jit._pickle.")
TORCH_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "float16",
                "bfloat16", "float32", "float64", "complex32", "complex64", "complex128", "half", "float",
                "double", "long", "int", "short", "cfloat", "cdouble", "chalf", "float8_e4m3fn",
                "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "float8_e8m0fnu", "qint8", "quint8",
                "qint32", "quint4x2", "quint2x4", "strided", "sparse_coo", "sparse_csr", "sparse_csc",
                "sparse_bsr", "sparse_bsc", "contiguous_format", "channels_last", "channels_last_3d",
                "preserve_format")
ALLOWED = frozenset({
    WRAPPER, "collections.OrderedDict", "copyreg._reconstructor", "_codecs.encode",
    *(f"builtins.{n}" for n in ("set", "frozenset", "slice", "complex", "bytearray", "object", "range", "int",
                                "float", "bool", "str", "bytes", "tuple", "list", "dict")),
    "torch.device", "torch.Size", "torch.serialization._get_layout", "torch._tensor._rebuild_from_type_v2",
    *(f"torch.{n}" for n in TORCH_DTYPES),
})
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "_posixsubprocess", "sys", "shutil", "socket", "runpy", "importlib",
    "pickle", "_pickle", "marshal", "ctypes", "pty", "code", "codeop", "webbrowser", "requests", "urllib",
    "urllib3", "http", "httpx", "aiohttp", "asyncio", "multiprocessing", "signal", "io", "_io", "types",
    "inspect", "pdb", "bdb", "pydoc", "timeit", "profile", "cProfile", "dill", "cloudpickle", "tempfile",
    "pathlib", "glob", "ftplib", "smtplib", "telnetlib", "xmlrpc", "zipimport", "pkgutil", "commands"})
DANGEROUS_BUILTINS = frozenset({
    "eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr", "globals", "locals",
    "vars", "breakpoint", "input", "help", "exit", "quit", "execfile", "apply", "file", "reload"})
# Names inside otherwise allowed packages (numpy.load, pandas.read_pickle, ...) that read, write or run
# files or code when called; a path with any of these segments is CRITICAL.
RISKY_SEGMENTS = frozenset({
    "testing", "_testing", "tests", "f2py", "distutils", "ctypeslib", "_datasource", "DataSource", "npyio",
    "_npyio_impl", "io", "datasets", "computation", "eval", "load", "loads", "save", "savez",
    "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromfile", "tofile", "fromregex", "memmap",
    "open_memmap", "read_pickle", "to_pickle", "load_library", "_load_lib", "_LIB", "LowLevelCallable",
    "NDArrayWrapper", "ZNDArrayWrapper"})  # joblib's pre-0.10 wrappers np.load(allow_pickle) another file


def _picklescan_unsafe() -> dict[str, Any]:
    try:
        from picklescan.scanner import _unsafe_globals
    except ImportError:
        return {}
    return _unsafe_globals if isinstance(_unsafe_globals, dict) else {}


PICKLESCAN_UNSAFE = _picklescan_unsafe()


def _picklescan_flags(module: str, name: str) -> bool:
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        entry = PICKLESCAN_UNSAFE.get(".".join(parts[:i]))
        if entry == "*":
            return True
        if i == len(parts) and entry and name in ({entry} if isinstance(entry, str) else set(entry)):
            return True
    return False


def classify(module: str, name: str) -> tuple[str, str] | None:
    """None for an allowed global, else (severity, why): CRITICAL for what can run code or touch files,
    HIGH for anything else that is not on the allow-list of classic-model globals."""
    path = f"{module}.{name}"
    if module == "__torch__" or module.startswith("__torch__."):
        # TorchScript's own type names (their module mirrors the original Python module, `testing` and
        # `io` included): torch.jit.load resolves them from the archive's compiled code, never by import,
        # and torch.load(weights_only=True) refuses them
        return None
    segments = [module.split(".")[0], *name.split(".")[:-1]]  # the module's root, and any attribute path
    if (any(s in DANGEROUS_MODULES for s in segments) or _picklescan_flags(module, name)
            or (module in ("builtins", "__builtin__") and name in DANGEROUS_BUILTINS)):
        return CRITICAL, "can run code or reach the system when the file is loaded"
    if RISKY_SEGMENTS.intersection(path.split(".")) or name.startswith("read_"):
        return CRITICAL, "reads, writes or runs files or code when called"
    if "." not in name and (path in ALLOWED or path.startswith(ALLOWED_PREFIXES)
                            or (module == "torch._utils" and name.startswith("_rebuild_"))
                            or (module in ("torch", "torch.storage") and name.endswith("Storage"))):
        return None
    return HIGH, "is not on the allow-list of classic-model globals"


# --- the walker -------------------------------------------------------------------------------------------

class Global:
    """A global the stream names; never imported."""

    __slots__ = ("module", "name")

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    @property
    def path(self) -> str:
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"<global {self.path}>"


class Built:
    """What calling or instantiating `origin` would have returned. It keeps its arguments, BUILD states and
    container items (torch's OrderedDict gets SETITEMS) so joblib's array wrappers can be followed."""

    def __init__(self, origin: Any, args: Any = (), kwargs: Any = None, cls: Any = None):
        self.origin, self.args, self.kwargs = origin, args, kwargs
        self.cls = cls  # what this is an instance of, where the opcode says (NEWOBJ, INST, a class call)
        self.states: list[Any] = []
        self.attrs: dict[str, Any] = {}  # a joblib wrapper's instance attributes, as joblib would see them
        self.entries: list[Any] = []

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries.append((key, value))

    def append(self, value: Any) -> None:
        self.entries.append(value)

    def extend(self, values: Any) -> None:
        self.entries.extend(values)

    def add(self, value: Any) -> None:
        self.entries.append(value)

    def __repr__(self) -> str:
        return f"<built by {_path(self.origin) or type(self.origin).__name__}>"


def _path(value: Any) -> str | None:
    return value.path if isinstance(value, Global) else None


def _is_wrapper(value: Any) -> bool:
    return _path(value) == WRAPPER or (isinstance(value, Built) and _path(value.cls) == WRAPPER)


def _holds_wrapper(value: Any) -> bool:
    """Whether a joblib array wrapper (class or instance) is anywhere inside `value`."""
    todo, seen = [value], set()
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if _is_wrapper(item):
            return True
        if isinstance(item, (tuple, list, set, frozenset)):
            todo.extend(item)
        elif isinstance(item, dict):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, Built):
            todo.extend((item.origin, item.args, item.kwargs, item.states, item.attrs, item.entries))
    return False


def _plain(value: Any) -> Any:
    """`value` as plain data for numpy, with dtype placeholders made real; any other placeholder fails."""
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Built) and _path(value.origin) in ("_codecs.encode", "builtins.bytes"):
        return _bytes(value)
    if isinstance(value, (Global, Built)):
        return _dtype(value)
    return value


def _bytes(value: Built) -> bytes:
    """Bytes as protocols 0-2 write them: _codecs.encode(text, "latin1"), or bytes() when empty."""
    args = value.args
    if _path(value.origin) == "builtins.bytes" and args == ():
        return b""
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin-1")
    raise pickle.UnpicklingError(f"unexpected bytes constructor {value!r}{args!r}")


def _dtype(value: Any) -> Any:
    """The numpy dtype joblib would see, made by numpy from the placeholder's plain arguments and states."""
    import numpy as np

    if not (isinstance(value, Built) and _path(value.cls) == "numpy.dtype"):
        raise pickle.UnpicklingError(f"expected a numpy.dtype, found {value!r}")
    dtype = np.dtype(*_plain(value.args), **_plain(value.kwargs or {}))
    for state in value.states:
        dtype.__setstate__(_plain(state))
    return dtype


@dataclass
class Walk:
    """What a walk found: every global (module, name) with where it was seen, and why it stopped early."""

    globals: dict[tuple[str, str], str] = field(default_factory=dict)
    error: str | None = None
    arrays: int = 0  # joblib arrays whose bytes were skipped or nested pickles walked
    where: str = "the pickle"


def _module_exists(module: str) -> bool:
    """Whether `module` could be imported here, found without importing (running) any of it."""
    if module in sys.modules or module in sys.builtin_module_names:
        return True
    parts, path = module.split("."), None
    for i in range(len(parts)):
        try:
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:i + 1]), path)
        except (ImportError, ValueError):
            return False
        if spec is None or (i < len(parts) - 1 and spec.submodule_search_locations is None):
            return False
        path = spec.submodule_search_locations
    return True


class _Walker(pickle._Unpickler):  # the pure-Python unpickler, so every opcode can be redirected
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: IO[bytes], walk: Walk, *, joblib: bool, torch: bool, stop_at_missing: bool = False):
        super().__init__(file)
        self.file, self.walk, self.joblib, self.torch = file, walk, joblib, torch
        self.stop_at_missing = stop_at_missing
        self.wrapper_seen = False

    def find_class(self, module: str, name: str) -> Global:
        if self.proto < 3 and self.fix_imports:  # pickle's renames of Python 2 names
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if self.stop_at_missing and not _module_exists(module):
            verdict = classify(module, name)
            if not verdict or verdict[0] != CRITICAL:
                raise ModuleNotFoundError(f"no module named {module!r}, where pickle.load stops too")
        self.walk.globals.setdefault((module, name), self.walk.where)
        found = Global(module, name)
        self.wrapper_seen |= found.path == WRAPPER
        return found

    def get_extension(self, code: int) -> None:  # the stock one caches in copyreg's process-wide cache
        key = copyreg._inverted_registry.get(code)
        if not key:
            raise pickle.UnpicklingError(f"unregistered extension code {code}")
        self.append(self.find_class(*key))

    def persistent_load(self, pid: Any) -> Built:
        if not self.torch:  # pickle.load and joblib.load refuse persistent ids too
            raise pickle.UnpicklingError("unsupported persistent id encountered")
        return Built(None, (pid,))  # a torch storage

    def _create(self, origin: Any, args: Any, kwargs: Any = None, *, init: bool = True) -> Built:
        if not isinstance(origin, (Global, Built)):
            raise pickle.UnpicklingError(f"{type(origin).__name__} object is not callable")
        cls = args[0] if _path(origin) in CONSTRUCTORS and args else origin
        if self.joblib and self.wrapper_seen:
            self._refuse_wrapper_aliases(origin, args, kwargs, cls)
        built = Built(origin, args, kwargs, cls)
        if _path(cls) == WRAPPER and origin is cls and init:  # NumpyArrayWrapper(...) runs its __init__
            if not 4 <= len(args) <= 6 or kwargs:
                raise pickle.UnpicklingError("NumpyArrayWrapper() takes 4 to 6 positional arguments")
            built.attrs = {**WRAPPER_DEFAULTS, **dict(zip(WRAPPER_INIT, args))}
        return built

    def _refuse_wrapper_aliases(self, origin: Any, args: Any, kwargs: Any, cls: Any) -> None:
        """joblib reads array bytes after a BUILD on any wrapper instance, however it got onto the stack. A call
        handed a wrapper could hand it back under another identity (numpy.max of an object array), so the
        only calls followed are those that make one, as joblib writes it."""
        handed = [args, kwargs]
        if _path(origin) in CONSTRUCTORS and _path(cls) == WRAPPER:
            handed = [args[1:], kwargs]
            if _path(origin) == "copyreg._reconstructor" and (len(args) != 3 or _path(args[1]) != "builtins.object"):
                raise pickle.UnpicklingError("NumpyArrayWrapper rebuilt on another base class")
        elif _path(origin) != WRAPPER:
            handed.append(origin)
        if _holds_wrapper(handed):
            raise pickle.UnpicklingError(f"a NumpyArrayWrapper is handed to {origin!r}: where joblib would "
                                         "read array bytes cannot be followed")

    def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ
        self.append(self._create(klass, tuple(args), init=bool(args)))

    def load_reduce(self) -> None:
        args = self.stack.pop()
        if not isinstance(args, tuple):
            raise pickle.UnpicklingError("REDUCE arguments must be a tuple")
        self.stack[-1] = self._create(self.stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._create(self.stack[-1], tuple(args), init=False)
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self.stack[-1] = self._create(self.stack[-1], tuple(args), dict(kwargs), init=False)
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def load_build(self) -> None:
        inst = self.stack[-2]
        if isinstance(inst, Global):  # legitimate pickles never set attributes of a class or function
            raise pickle.UnpicklingError(f"BUILD would set attributes of the global {inst.path}")
        if not isinstance(inst, Built):  # a plain dict or list: the stock code fails as pickle.load does
            return pickle._Unpickler.load_build(self)
        state = self.stack.pop()
        inst.states.append(state)
        if self.joblib and _path(inst.cls) == WRAPPER:
            _set_attributes(inst.attrs, state)
            self.stack[-1] = self._read_array(inst.attrs)
    dispatch[pickle.BUILD[0]] = load_build

    def _read_array(self, attrs: dict[str, Any]) -> Built:
        """Consume what joblib 1.6's NumpyArrayWrapper.read_array reads after the wrapper's BUILD."""
        import numpy as np

        if "shape" not in attrs or "dtype" not in attrs:
            raise pickle.UnpicklingError("NumpyArrayWrapper without a shape or dtype")
        shape, dtype = attrs["shape"], _dtype(attrs["dtype"])
        # joblib's arithmetic, int64 overflow included
        count = 1 if len(shape) == 0 else int(np.multiply.reduce([np.int64(x) for x in shape]))
        if dtype.hasobject:  # joblib pickles object arrays as a nested stream, read by a plain unpickler
            _Walker(self.file, self.walk, joblib=False, torch=False).load()
        else:
            if attrs.get("numpy_array_alignment_bytes") is not None:
                padding = int.from_bytes(self.file.read(1), "little")
                if padding:
                    self.file.read(padding)
            if dtype.itemsize == 0 or count < 0:
                raise pickle.UnpicklingError(f"joblib cannot read an array of {count} x {dtype.itemsize} bytes")
            _skip(self.file, count * dtype.itemsize)
        self.walk.arrays += 1
        return Built(Global("numpy", "ndarray"))


def _set_attributes(attrs: dict[str, Any], state: Any) -> None:
    """pickle's default BUILD on an object without __setstate__: a dict state, then a slot state."""
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    for part in (state, slots):
        if part:
            if not isinstance(part, dict):
                raise pickle.UnpicklingError("NumpyArrayWrapper state is not a dict")
            attrs.update((k, v) for k, v in part.items() if isinstance(k, str))


def _skip(file: IO[bytes], size: int) -> None:
    while size > 0:
        chunk = file.read(min(size, SKIP_CHUNK))
        if not chunk:
            raise pickle.UnpicklingError(f"the file ends {size} bytes before the end of a joblib array")
        size -= len(chunk)


def walk_pickle(stream: IO[bytes], *, joblib: bool = False, torch: bool = False, stop_at_missing: bool = False,
                where: str = "the pickle") -> Walk:
    """Walk every pickle in `stream` (which needs `peek`) to its STOP and on to EOF, recording each global.
    joblib: also read what joblib.load reads between opcodes; torch: accept persistent ids (storages);
    stop_at_missing: stop, as pickle.load would, at a module that does not exist here (unless CRITICAL)."""
    walk = Walk(where=where)
    try:
        while True:
            _Walker(stream, walk, joblib=joblib, torch=torch, stop_at_missing=stop_at_missing).load()
            if not stream.peek(1):
                return walk
    except Exception as exc:  # whatever stops the walk makes the file unscannable
        walk.error = f"{type(exc).__name__}: {exc}" if str(exc) else f"{type(exc).__name__} before the end"
    return walk


class _Inflate(io.RawIOBase):
    """One zlib or gzip stream, read as joblib's BinaryZlibFile reads it; data after it is an error."""

    def __init__(self, raw: IO[bytes], wbits: int):
        self._raw, self._zlib, self._out = raw, zlib.decompressobj(wbits), b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if self._zlib.eof:
                if self._zlib.unused_data or self._raw.read(1):
                    raise ValueError("data after the end of the compressed stream")
                return 0
            data = self._zlib.unconsumed_tail or self._raw.read(SKIP_CHUNK)
            if not data:
                raise EOFError("the compressed stream is truncated")
            self._out = self._zlib.decompress(data, 1 << 16)
        n = min(len(buffer), len(self._out))
        buffer[:n], self._out = self._out[:n], self._out[n:]
        return n


def _decompressed(raw: IO[bytes], kind: str) -> IO[bytes]:
    if kind in ("zlib", "gzip"):
        return io.BufferedReader(_Inflate(raw, zlib.MAX_WBITS if kind == "zlib" else 31), SKIP_CHUNK)
    if kind == "bz2":
        return bz2.BZ2File(raw)
    if kind in ("lzma", "xz"):
        return lzma.LZMAFile(raw)
    raise ValueError(f"{kind} compression is not scanned: save with joblib.dump's zlib, gzip, bz2, lzma or "
                     "xz compression, or none")


def walk_pickle_file(path: Path) -> Walk:
    """Walk a .pkl/.joblib file as joblib.load reads it, decompressing what joblib would (stdlib only). When
    joblib's view differs from pickle.load's (compressed, or array bytes skipped), pickle.load's view is
    walked too and its globals are added: bytes joblib skips are opcodes to pickle.load. That view of a real
    joblib file ends in garbage (an object array's nested pickle reads the outer memo), so it stops where
    pickle.load would, at a module that does not exist, and its errors are not findings."""
    with path.open("rb") as raw:
        head = raw.read(8)
        raw.seek(0)
        kind = next((name for name, magic in COMPRESSIONS if head.startswith(magic)), None)
        try:
            stream = _decompressed(raw, kind) if kind else raw
        except ValueError as exc:
            return Walk(error=str(exc))
        walk = walk_pickle(stream, joblib=True)
    if kind or walk.arrays:
        with path.open("rb") as raw:
            plain = walk_pickle(raw, stop_at_missing=True, where="the bytes pickle.load would read")
        for key, where in plain.globals.items():
            walk.globals.setdefault(key, where)
    return walk


# --- issues -----------------------------------------------------------------------------------------------

def _walk_issues(walk: Walk, source: str) -> list[Issue]:
    issues = []
    for (module, name), where in walk.globals.items():
        if verdict := classify(module, name):
            severity, why = verdict
            title = "Dangerous global" if severity == CRITICAL else "Global not on the allow-list:"
            issues.append(Issue(title=f"{title} {module}.{name}", severity=severity, source=source,
                                scanner=SCANNER, description=f"{where} imports {module}.{name}, which {why}"))
    if walk.error:
        issues.append(Issue(title="Unscannable pickle", severity=HIGH, source=source, scanner=SCANNER,
                            description=f"{walk.where} cannot be walked to its end ({walk.error}); "
                            "a file the scan cannot read is refused"))
    return issues


def _with_scanners(path: Path, source: str, ours: list[Issue], *, keep: Any) -> list[Issue]:
    """`ours` plus modelscan/picklescan's issues that `keep` accepts; one finding named by both is one issue."""
    by_global = {i.title.rsplit(" ", 1)[-1]: i for i in ours if i.title.startswith(("Dangerous", "Global"))}
    result = list(ours)
    try:
        theirs = pickle_issues(path, source)
    except Exception as exc:  # picklescan raises on some malformed files (an empty one)
        theirs = [Issue(title="modelscan/picklescan failed", severity=HIGH, source=source, scanner="picklescan",
                        description=f"{type(exc).__name__}: {exc}")]
    for issue in theirs:
        if not keep(issue):
            continue
        mine = by_global.get(issue.title.rsplit(" ", 1)[-1])
        if mine and issue.severity == CRITICAL:
            mine.severity = CRITICAL
            if issue.scanner not in mine.scanner:
                mine.scanner += f"+{issue.scanner}"
        elif mine is None:
            result.append(issue)
    return result


def _known_gap(issue: Issue) -> bool:
    """The scanners' failures on joblib arrays and their "unknown" scikit-learn globals."""
    return (issue.title in ("modelscan error", "picklescan could not parse the file", "modelscan/picklescan failed")
            or issue.title.startswith("Unknown import"))


def _pickle_issues(path: Path, source: str) -> list[Issue]:
    walk = walk_pickle_file(path)
    return _with_scanners(path, source, _walk_issues(walk, source),
                          keep=lambda i: walk.error is not None or not _known_gap(i))


def _torch_issues(path: Path, source: str) -> list[Issue]:
    def refuse(why: str) -> list[Issue]:
        return [Issue(title="Unscannable PyTorch file", severity=HIGH, source=source, scanner=SCANNER,
                      description=why)]

    with path.open("rb") as fh:  # torch.load tells the formats apart by these bytes, not by a zip directory
        is_zip = fh.read(4) == b"PK\x03\x04" and zipfile.is_zipfile(fh)
    if not is_zip:
        return refuse("not a zip archive, so a legacy torch pickle; unscannable: save with torch.save's zip "
                      "format or TorchScript")
    issues = []
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith((".pkl", ".debug_pkl"))]
            if not members:
                return refuse("the zip archive holds no pickle: not a torch.save or TorchScript file")
            for member in members:  # infolist, not names: a duplicated name is walked each time
                with archive.open(member) as fh:
                    walk = walk_pickle(fh, torch=True, where=f"the archive member {member.filename}")
                issues += _walk_issues(walk, source)
    except ZIP_ERRORS as exc:
        return refuse(f"the zip archive cannot be read: {exc}")
    return _with_scanners(path, source, issues, keep=lambda i: i.severity == CRITICAL)


KERAS_MODULE = re.compile(r"keras(_\w+)?(\.|$)")


def _layer_issues(config: Any, source: str) -> list[Issue]:
    """Lambda layers and objects from outside keras/keras_* anywhere in a Keras model config."""
    issues, todo = [], deque([config])
    while todo:
        node = todo.popleft()
        if isinstance(node, list):
            todo.extend(node)
        if not isinstance(node, dict):
            continue
        todo.extend(node.values())
        kind, module, config = node.get("class_name"), node.get("module"), node.get("config")
        name = config.get("name") if isinstance(config, dict) else None
        label = f"{kind} {name!r}" if name else str(kind)
        if kind == "Lambda":
            issues.append(Issue(title="Keras Lambda layer", severity=HIGH, source=source, scanner=SCANNER,
                                description=f"the layer {label} runs Python code when loaded; Keras refuses "
                                "it with safe_mode=True"))
        if isinstance(kind, str) and isinstance(module, str) and not KERAS_MODULE.match(module):
            issues.append(Issue(title=f"Keras custom object {module}.{kind}", severity=HIGH, source=source,
                                scanner=SCANNER, description=f"{label} comes from {module}, outside keras: "
                                "loading the model imports and runs that code"))
    return issues


def _keras_issues(path: Path, source: str) -> list[Issue]:
    def refuse(why: str) -> list[Issue]:
        return [Issue(title="Invalid Keras file", severity=HIGH, source=source, scanner=SCANNER, description=why)]

    if not zipfile.is_zipfile(path):
        return refuse("a .keras file is a zip archive; this is not one")
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return refuse("the archive has no config.json")
            with archive.open("config.json") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
    except ZIP_ERRORS as exc:
        return refuse(f"the zip archive cannot be read: {exc}")
    if len(raw) > MAX_CONFIG_BYTES:
        return refuse(f"config.json is over {MAX_CONFIG_BYTES} bytes")
    try:
        return _layer_issues(json.loads(raw), source)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return refuse(f"config.json is not valid JSON: {exc}")


def _h5_issues(path: Path, source: str) -> list[Issue]:
    def issue(severity: str, title: str, why: str) -> list[Issue]:
        return [Issue(title=title, severity=severity, source=source, scanner=SCANNER, description=why)]

    size = path.stat().st_size
    offsets = [0] + [512 << k for k in range(48) if 512 << k < size]  # where HDF5 allows its superblock
    with path.open("rb") as fh:
        if not any(fh.seek(o) == o and fh.read(8) == HDF5_SIGNATURE for o in offsets):
            return issue(HIGH, "Invalid HDF5 file", "the HDF5 signature is missing")
    try:
        import h5py
    except ImportError:
        return issue(MEDIUM, "Keras HDF5 model not inspected", "h5py is not installed, so the layers of the "
                     "model config were not checked for Lambda layers and custom objects")
    try:
        with h5py.File(path, "r") as f:
            config = f.attrs.get("model_config")
    except Exception as exc:  # a malformed file is the finding
        return issue(HIGH, "Invalid HDF5 file", f"h5py cannot read it: {type(exc).__name__}: {exc}")
    if config is None:
        return []  # weights only: no layer is deserialised from it
    try:
        return _layer_issues(json.loads(config), source)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        return issue(HIGH, "Invalid Keras HDF5 model", f"model_config is not valid JSON: {exc}")


def classic_issues(path: Path, source: str) -> list[Issue]:
    """The issues of one classic model file, by its suffix; nothing in the file is imported, called or loaded."""
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return _pickle_issues(path, source)
    if suffix in TORCH_SUFFIXES:
        return _torch_issues(path, source)
    if suffix == ".keras":
        return _keras_issues(path, source)
    if suffix == ".h5":
        return _h5_issues(path, source)
    return [Issue(title="Unsupported file type", severity=HIGH, source=source, scanner=SCANNER,
                  description=f"{suffix or 'no suffix'}: a classic model is a .pkl, .pickle, .joblib, .pt, "
                  ".pth, .keras or .h5 file")]
