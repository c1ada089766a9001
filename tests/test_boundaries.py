"""Which package may import which (docs/ARCHITECTURE.md, "Import rules"), checked two ways:

- statically: every `import` in every module, wherever it is written (module level, inside a
  function, under `if TYPE_CHECKING:`), read from the source with `ast`;
- at run time: importing every module of one side loads nothing forbidden of the other.

The rules:
1. `customify` never imports `textual`, nor `tui` — except cli.py, which may import `tui.launch`
   (the dashboard's one entry point) and nothing else of it.
2. `tui` imports nothing of `customify` but `customify.schemas` and `customify.render.spec`.
3. The renderer (`customify.render`) imports nothing of `customify` outside it; it owns its input
   types. (Today's known exceptions are listed in RENDER_EXCEPTIONS and must shrink, never grow.)
4. No import circles inside `tui` or `customify` (type-only and lazy imports count): screens get the client and
   state, not the app; the parts of `customify` get what they use of the Runtime (a callable, values, a Protocol
   of their own), and never import customify/runtime.py, the root that imports them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TUI_ENTRY = "tui.launch"  # what cli.py may import of tui
TUI_MAY_IMPORT = {"customify", "customify.schemas", "customify.render", "customify.render.spec"}
# importer → imported, with the reason it is still there; remove a line when it goes (a stale one fails).
RENDER_EXCEPTIONS = {
    ("customify.render.pool", "customify.storage"): "the render helper writes its files with storage.write_atomic",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" not in path.parts:
            yield module_name(path), path


def imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every module `name` imports anywhere in its source (lazy and type-only imports included), with the line.
    `from a import b` yields both `a` and `a.b` (b may be a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..render import y
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            for alias in node.names:
                if alias.name != "*":
                    yield f"{base}.{alias.name}", node.lineno


def within(imported: str, package: str) -> bool:
    return imported == package or imported.startswith(package + ".")


def is_module(name: str) -> bool:
    """`from customify import schemas` names a module; `from tui.launch import launch` names a function."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def test_customify_never_imports_textual_and_only_cli_imports_tui_launch() -> None:
    bad = []
    for name, path in modules("customify"):
        for imported, line in imports(name, path):
            if within(imported, "textual"):
                bad.append(f"{name}:{line} imports {imported}")
            elif within(imported, "tui") and is_module(imported) and imported != "tui":
                if not (name == "customify.cli" and imported == TUI_ENTRY):
                    bad.append(f"{name}:{line} imports {imported}")
            elif imported == "tui":
                bad.append(f"{name}:{line} imports tui")
    assert not bad, "customify may import only tui.launch, and only from cli.py:\n" + "\n".join(bad)


def test_tui_imports_only_the_schemas_of_customify() -> None:
    bad = [
        f"{name}:{line} imports {imported}"
        for name, path in modules("tui")
        for imported, line in imports(name, path)
        if within(imported, "customify") and is_module(imported) and imported not in TUI_MAY_IMPORT
    ]
    assert not bad, "tui may import only customify.schemas and customify.render.spec:\n" + "\n".join(bad)


def test_the_renderer_imports_nothing_of_customify_outside_it() -> None:
    found = {
        (name, imported): line
        for name, path in modules("customify/render")
        for imported, line in imports(name, path)
        if within(imported, "customify") and not within(imported, "customify.render") and is_module(imported)
    }
    new = [
        f"{name}:{line} imports {imported}"
        for (name, imported), line in found.items()
        if (name, imported) not in RENDER_EXCEPTIONS
    ]
    assert not new, "customify.render imports only customify.render.*:\n" + "\n".join(new)
    stale = [pair for pair in RENDER_EXCEPTIONS if pair not in found]
    assert not stale, f"no longer imported: remove from RENDER_EXCEPTIONS: {stale}"


@pytest.mark.parametrize(
    "source",
    [
        "from customify import cli\ndef f():\n    import tui.app\n",
        "from customify import cli\ndef f():\n    from tui.client import ApiClient\n",
        "import typing\nif typing.TYPE_CHECKING:\n    from tui import widgets\n",
        "class A:\n    def f(self):\n        import textual.app\n",
    ],
)
def test_the_walk_sees_lazy_and_type_only_imports(tmp_path: Path, source: str) -> None:
    path = tmp_path / "x.py"
    path.write_text(source)
    seen = {imported for imported, _ in imports("customify.x", path)}
    assert seen & {"tui.app", "tui.client", "tui.widgets", "textual.app"}


def test_relative_imports_resolve_to_their_package(tmp_path: Path) -> None:
    path = tmp_path / "pool.py"
    path.write_text("from . import products\nfrom ..storage import write_atomic\n")
    assert {"customify.render.products", "customify.storage"} <= {i for i, _ in imports("customify.render.pool", path)}


def test_at_run_time_core_loads_no_textual_and_tui_loads_only_schemas() -> None:
    code = """
import importlib, pkgutil, sys
import customify
for m in pkgutil.walk_packages(customify.__path__, 'customify.'):
    if '.migrations.' not in m.name and m.name != 'customify.__main__':
        importlib.import_module(m.name)
assert not any(n == 'textual' or n.startswith('textual.') for n in sys.modules), 'customify imported textual'
assert not any(n == 'tui' or n.startswith('tui.') for n in sys.modules), 'customify imported tui'
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    code = f"""
import importlib, pkgutil, sys
import tui
for m in pkgutil.walk_packages(tui.__path__, 'tui.'):
    importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if (n == 'customify' or n.startswith('customify.'))
             and n not in {sorted(TUI_MAY_IMPORT)!r})
assert not bad, f'tui imported {{bad}}'
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def import_graph(package: str) -> dict[str, set[str]]:
    """Module → the modules of `package` it imports (anywhere in its source, type-only imports included)."""
    names = {name for name, _ in modules(package)}
    graph: dict[str, set[str]] = {}
    for name, path in modules(package):
        graph[name] = {imported for imported, _ in imports(name, path) if imported in names and imported != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that is on one (depth-first search), shortest path first."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    for start in sorted(graph):
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        visited: set[str] = set()
        while stack:
            node, path = stack.pop(0)
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    if frozenset(path) not in seen:
                        seen.add(frozenset(path))
                        found.append([*path, start])
                elif nxt not in visited:
                    visited.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    return found


def test_cycles_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_tui_has_no_import_cycles() -> None:
    graph = import_graph("tui")
    # `tui/__init__.py` re-exports the app for `from tui import Dashboard`: a package importing its own
    # modules is not a circle a reader walks (every `tui.x` loads `tui` first), so the package node is left out.
    graph.pop("tui", None)
    for targets in graph.values():
        targets.discard("tui")
    assert set(graph) >= {"tui.app", "tui.screens", "tui.feed", "tui.state"}
    found = cycles(graph)
    assert not found, "import circles in tui (type-only imports count too):\n" + "\n".join(
        " → ".join(cycle) for cycle in found
    )


def test_customify_has_no_import_cycles() -> None:
    """The package nodes stay in: unlike `tui`, no package of customify is imported back by a module it imports."""
    graph = import_graph("customify")
    assert set(graph) >= {"customify.runtime", "customify.tasks", "customify.status", "customify.heartbeats"}
    assert {"customify.tasks", "customify.status", "customify.heartbeats"} <= graph["customify.runtime"]  # the root
    found = cycles(graph)
    assert not found, (
        "import circles in customify (type-only and lazy imports count too; a part gets what it uses of the "
        "Runtime, it never imports customify.runtime):\n" + "\n".join(" → ".join(cycle) for cycle in found)
    )
