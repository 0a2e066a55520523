"""The folders are the architecture: imports go one way, between layers and inside them.

    _core  ←  adapters, models, tasks  ←  generation  ←  evaluation  ←  audit, trainers, toy  ←  serve  ←  cli

Every import counts, function-level ones included (a lazy import is still a dependency). A module
may import its own layer's package (``adapters.model`` → ``adapters.svd``) and lower layers only;
siblings of one layer do not import each other, and no import circle exists inside a package.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tinylora"
RANK = {"_core": 0, "adapters": 1, "models": 1, "tasks": 1, "generation": 2, "evaluation": 3, "audit": 4,
        "trainers": 4, "toy": 4, "serve": 5, "cli": 6}


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Absolute tinylora modules imported by ``name`` (a package's submodules count as modules)."""
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue  # `if TYPE_CHECKING:` imports never run
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "tinylora":
                mod = node.module
            else:
                continue
            if mod == "tinylora" and all(a.name.startswith("__") for a in node.names):
                continue  # __version__: a constant, not a module
            subs = {f"{mod}.{a.name}" for a in node.names} & known
            out |= subs or {mod}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "tinylora"}
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_folder_is_a_layer():
    for name in _modules():
        layer = _layer(name)
        assert layer is None or layer in RANK or name in ("tinylora.__main__",), f"{name} is in no layer"


def test_imports_only_go_down():
    mods = _modules()
    known = set(mods)
    bad = []
    for name, path in mods.items():
        src = _layer(name)
        if src is None or name == "tinylora.__main__":
            continue  # the package's lazy facade (tinylora.attach …) and python -m tinylora
        for target in _imports(name, path, known):
            dst = _layer(target)
            if target == "tinylora":
                if src != "cli":
                    bad.append(f"{name} imports the facade 'tinylora' (import the module itself)")
                continue
            if dst == src:
                continue
            if RANK[dst] >= RANK[src]:
                bad.append(f"{name} ({src}, layer {RANK[src]}) imports {target} ({dst}, layer {RANK[dst]})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_circles():
    mods = _modules()
    known = set(mods)
    graph = {n: {t for t in _imports(n, p, known) if t in known and t != n} for n, p in mods.items()}
    graph["tinylora"] = set()  # the facade imports lazily, by name, on first attribute access
    seen, stack, cycles = set(), [], []

    def visit(n):
        if n in stack:
            cycles.append(" → ".join(stack[stack.index(n):] + [n]))
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            visit(t)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    assert not cycles, "import circles:\n" + "\n".join(cycles)
