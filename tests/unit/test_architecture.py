"""The import graph of meshnode/, protocol/ and netsim/ has no circle, and only the CLI
imports the node.

Every import counts: module level, inside functions, under ``if TYPE_CHECKING:``. A circle
closed by a lazy import still couples the two modules both ways, it only hides it from the
interpreter. Edges go to the module named (``from meshnode.crdt import SceneReplica`` is an
edge to ``meshnode.crdt``, ``from meshnode.crdt import replica`` one to
``meshnode.crdt.replica``), not to every parent package Python also runs.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("meshnode", "protocol", "netsim")


# The entry points that build a Node; nothing else may import meshnode.node.
NODE_IMPORTERS = {"meshnode.cli_node"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # ``import a.b.c`` names a.b.c; a name imported from a module is not a module.
            if target in modules:
                found.add(target)
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, name, modules) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path = [start]
        todo = [iter(sorted(graph[start]))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                todo.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(sorted(graph[nxt])))
    return None


def test_the_graph_sees_lazy_and_type_checking_imports() -> None:
    graph = import_graph()
    assert "meshnode.node" in graph["meshnode.cli_node"]  # imported inside _up()
    # The snapshot codec works on plain exported content: it never reaches for the replica.
    assert "meshnode.crdt.snapshot" in graph["meshnode.crdt.replica"]
    assert "meshnode.crdt.replica" not in graph["meshnode.crdt.snapshot"]


def test_find_cycle_reports_the_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_only_the_entry_point_imports_the_node() -> None:
    importers = {m for m, deps in import_graph().items() if "meshnode.node" in deps}
    assert importers <= NODE_IMPORTERS, (
        f"{sorted(importers - NODE_IMPORTERS)} import meshnode.node: give them a narrow port "
        "(a Protocol or a dataclass of callables) instead of the Node")
