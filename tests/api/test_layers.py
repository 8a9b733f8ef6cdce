"""The layer rule, read from the source: routers are HTTP only and never import another router; no route
handler is called as a plain function (shared work lives in `weft` services); `weft` never imports `api`."""

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


def test_weft_never_imports_api():
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in sorted((ROOT / "weft").rglob("*.py"))
                 for line, name in imported_modules(tree(path)) if name == "api" or name.startswith("api.")]
    assert not offenders, "weft is below the API:\n" + "\n".join(offenders)
