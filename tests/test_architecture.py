"""The package's layering, checked from its source with `ast` (every import, at module level or inside a function).

Data flows one way: text -> tokenizer -> model -> generation / engine -> tokenizer; pipeline, corpus, server, parity
and the CLI are glue on those public stages. The rules below keep that true; a new module falls under the rule of
the layer it joins.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "seq2seq_kit"

# layer -> what it must never import (module names relative to the package; "models" covers models.*)
FORBIDDEN = {
    "models": ["generation", "loading", "hub", "modeling", "summarization", "corpus", "cli", "engine", "server",
               "parity", "tokenizer"],
    "generation": ["models", "modeling", "loading", "hub", "summarization", "corpus", "cli", "engine", "server",
                   "parity", "tokenizer"],
    "hub": ["models", "generation", "modeling", "loading", "config", "summarization", "corpus", "cli", "engine",
            "server", "parity", "tokenizer"],
    "tokenizer": ["models", "generation", "modeling", "loading", "summarization", "corpus", "cli", "engine", "server",
                  "parity"],
    "family_tokenizers": ["models", "generation", "modeling", "loading", "summarization", "corpus", "cli", "engine",
                          "server", "parity"],
    "tokenizer_classes": ["models", "generation", "modeling", "loading", "summarization", "corpus", "cli", "engine",
                          "server", "parity", "hub", "tokenizer", "family_tokenizers"],   # read by both tokenizers
    "loading": ["generation", "summarization", "corpus", "cli", "engine", "server", "parity", "tokenizer"],
    "engine": ["summarization", "corpus", "cli", "server", "parity", "hub", "loading", "tokenizer"],
    "summarization": ["corpus", "cli", "server", "parity"],
    "long_documents": ["models", "modeling", "loading", "hub", "tokenizer", "engine", "summarization", "corpus", "cli",
                       "server", "parity"],   # glue on the pipeline's public stages, which it is handed
    "kernel_choice": ["generation", "loading", "hub", "modeling", "summarization", "corpus", "cli", "engine", "server",
                      "parity", "tokenizer"],   # measures the models' kernels; loading-layer glue, no files but its cache
    "translation": ["corpus", "cli", "server", "parity"],
    "corpus": ["cli", "server", "parity"],
    "server": ["cli", "corpus", "parity"],
    "parity": ["cli", "corpus", "server"],
}
LAYERS = sorted({layer for rules in FORBIDDEN.values() for layer in rules} | set(FORBIDDEN))
# the C library's and OpenMP's knobs, the CUDA graph capture that models/ and generation/ share, the ModelOutput
# base of generate's and forward's outputs, the Ray address check that corpus/ and server/ share, and the warnings
# that point at the user's line: leaves that import no other module of the package
FORBIDDEN |= {leaf: LAYERS for leaf in ("cpu_memory", "cpu_threads", "cuda_capture", "model_output",
                                        "ray_cluster", "user_warnings")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module relative to the package, names imported from it, line) for every in-package import."""
    here = module_name(path).split(".") if module_name(path) else []
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
                target = ".".join(base + (node.module.split(".") if node.module else []))
            elif node.module and node.module.startswith("seq2seq_kit"):
                target = node.module.removeprefix("seq2seq_kit").lstrip(".")
            else:
                continue
            names = [a.name for a in node.names]
            if not node.module:                                          # `from . import x`: x is a module
                out += [((target + "." + n).lstrip("."), [], node.lineno) for n in names]
            else:
                out.append((target, names, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name.removeprefix("seq2seq_kit").lstrip("."), [], node.lineno)
                    for a in node.names if a.name.startswith("seq2seq_kit")]
    return out


SOURCES = sorted(PACKAGE.rglob("*.py"))
GRAPH = {module_name(p): imports(p) for p in SOURCES}


def layer_of(module: str) -> str:
    return module.split(".")[0]


def within(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def layer_violations(name: str, found: list[tuple[str, list[str], int]]) -> list[str]:
    """The imports of module `name` (imports()'s list) that its layer's rule forbids."""
    rules = FORBIDDEN.get(layer_of(name), []) if name else []
    return [f"line {line}: imports {target}" for target, _, line in found for banned in rules if within(target, banned)]


def private_imports(name: str, found: list[tuple[str, list[str], int]]) -> list[str]:
    """The private names (_x) module `name` imports from other modules."""
    return [f"line {line}: {n} from {target}" for target, names, line in found for n in names
            if n.startswith("_") and not n.startswith("__") and target != name]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p) or "seq2seq_kit")
def test_layer_rules(path):
    name = module_name(path)
    broken = layer_violations(name, GRAPH[name])
    assert not broken, f"seq2seq_kit.{name} breaks the layering: " + "; ".join(broken)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p) or "seq2seq_kit")
def test_no_private_names_across_modules(path):
    name = module_name(path)
    bad = private_imports(name, GRAPH[name])
    assert not bad, f"seq2seq_kit.{name} imports private names of other modules: " + "; ".join(bad)


def resolve(target: str) -> str | None:
    """An import target -> the package module it loads (a package's __init__, or the module itself)."""
    while target and target not in GRAPH:
        target = target.rpartition(".")[0]
    return target if target in GRAPH else None


def test_no_import_cycles():
    edges = {m: {t for t in (resolve(x) for x, _, _ in deps) if t is not None and t != m and t != ""}
             for m, deps in GRAPH.items()}
    # a module's import of its own package's __init__ is how Python loads it, not a cycle of ours
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                cycle = stack[stack.index(t):] + [t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_the_rules_can_fail(tmp_path):
    """The checker itself finds a forbidden import and a private one (a test that cannot fail is a defect)."""
    global PACKAGE
    fake = tmp_path / "seq2seq_kit"
    (fake / "models").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "models" / "__init__.py").write_text("")
    (fake / "models" / "net.py").write_text("from ..generation import search\nfrom ..hub import _secret\n")
    saved, PACKAGE = PACKAGE, fake
    try:
        name, found = module_name(fake / "models" / "net.py"), imports(fake / "models" / "net.py")
    finally:
        PACKAGE = saved
    assert name == "models.net" and found == [("generation", ["search"], 1), ("hub", ["_secret"], 2)]
    assert layer_violations(name, found) == ["line 1: imports generation", "line 2: imports hub"]
    assert private_imports(name, found) == ["line 2: _secret from hub"]
