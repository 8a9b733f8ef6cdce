"""The layer rule, read from the source: `api` → `weft` services → Prefect → `flows` → `tasks` → `weft`
core. Routers are HTTP only and never import another router; no route handler is called as a plain
function (shared work lives in `weft` services); `weft` imports no upper layer; flows do not import
other flows, task modules not each other's tasks (each layer's `common`/`names` helpers excepted)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROUTERS = sorted((ROOT / "api" / "routers").glob("*.py"))
ROUTE_METHODS = {"get", "post", "put", "patch", "delete", "head", "options", "api_route", "websocket"}


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def imported_modules(module: ast.Module) -> list[tuple[int, str]]:
    """Every module an `import` or `from ... import` names (with `from a import b`, also `a.b`)."""
    found = []
    for node in ast.walk(module):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def route_handlers(module: ast.Module) -> set[str]:
    """The functions a router module registers: decorated with `@<router>.get(...)` and the like, or
    passed to `add_api_route` / `add_api_websocket_route`."""
    names = set()
    for node in ast.walk(module):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                call = decorator.func if isinstance(decorator, ast.Call) else decorator
                if isinstance(call, ast.Attribute) and call.attr in ROUTE_METHODS:
                    names.add(node.name)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr in ("add_api_route", "add_api_websocket_route") and len(node.args) >= 2):
            endpoint = node.args[1]
            if isinstance(endpoint, ast.Name):
                names.add(endpoint.id)
    return names


def test_no_router_imports_another_router():
    offenders = []
    for path in ROUTERS:
        for line, name in imported_modules(tree(path)):
            if name == "api.routers" or name.startswith("api.routers."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offenders, "routers never import routers (move the shared code to a weft service):\n" + \
        "\n".join(offenders)


def test_no_route_handler_is_called_as_a_function():
    handlers = {name: path for path in ROUTERS for name in route_handlers(tree(path))}
    assert {"post_step", "cancel_workflow"} - set(handlers) == {"post_step"}  # the walk finds real handlers
    offenders = []
    for path in sorted((ROOT / "api").rglob("*.py")):
        for node in ast.walk(tree(path)):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            if name in handlers and name != "handler":  # `handler`: step_endpoint's closure, never called
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {name} "
                                 f"(a route of {handlers[name].relative_to(ROOT)})")
    assert not offenders, "route handlers are FastAPI's to call; call the weft service instead:\n" + \
        "\n".join(offenders)


def offenders_of(package: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """Imports in `package` of a module under one of `forbidden` (other than those in `allowed`)."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        imports = imported_modules(tree(path))
        for line, name in imports:
            if any(at == line and other.startswith(name + ".") for at, other in imports):
                continue  # `from flows import names`: judged by `flows.names`, its own entry
            if any(name == f or name.startswith(f + ".") for f in forbidden) and \
                    not any(name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


def test_weft_imports_no_upper_layer():
    offenders = offenders_of("weft", ("api", "flows", "tasks", "blocks", "deployments"))
    assert not offenders, "weft is the core every layer shares:\n" + "\n".join(offenders)


def test_api_starts_flows_through_weft_services_only():
    offenders = offenders_of("api", ("flows", "tasks", "blocks", "deployments"))
    assert not offenders, "the API reaches flows through weft services and Prefect:\n" + "\n".join(offenders)


def test_flows_and_tasks_do_not_import_their_siblings():
    offenders = offenders_of("flows", ("flows",), allowed=("flows.common", "flows.names"))
    offenders += offenders_of("tasks", ("tasks", "flows"), allowed=("tasks.common",))
    assert not offenders, "a flow is a list of task calls; shared code goes down a layer:\n" + "\n".join(offenders)
