"""The package's layering: no import cycle, and no module imports from a layer above its own.

Every import counts, those inside functions included: a function-local import defers the cost, not the
dependency. A module's layer comes from `LAYERS`; a module that is not listed fails the test, so a new
module is placed in the layering when it is added. Modules may import from their own layer (acyclically)
and from any layer below. The command-line scripts (``experiments/``) sit above all of these.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "starlight_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1]

# Bottom to top. Names are relative to the package; "" is the package itself (the public API facade).
LAYERS = (
    ("foundation", {"files"}),
    ("data", {"data", "data.base", "data.images", "data.matfiles", "data.pairs", "data.pipeline", "data.sidd",
              "data.sidd_tfds", "data.starlight_mat", "data.synthetic", "data.batches"}),
    ("physics and networks", {"noiselist", "isp", "noise", "validation", "patches", "models", "models.unet",
                              "models.discriminator"}),
    ("generator and statistics", {"generator", "baselines", "metrics", "metrics.kld", "metrics.residual_stats",
                                  "metrics.image_quality", "structure", "isp_fit", "torch_import", "compare",
                                  "data_init"}),
    ("training", {"training", "losses", "parallel", "perceptual", "run_config", "configs"}),
    ("run folder", {"checkpoint", "run_folder"}),
    ("loop, evaluation and applications", {"train_loop", "evaluation", "evaluation.samples", "evaluation.scoring",
                                           "evaluation.parameters", "evaluation.report", "plots", "denoise",
                                           "denoise.io", "denoise.model", "denoise.train", "denoise.benchmark",
                                           "denoise.benchmark_config", "denoise.benchmark_report"}),
    ("interfaces", {"", "cli"}),  # the API facade and the CLIs' helpers: nothing in the package imports them
)


def module_files(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """``{dotted module name: file}`` of every module of ``package`` under ``root``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_edges(root: pathlib.Path, package: str) -> list[tuple[str, str, int]]:
    """``(importer, imported, line)`` for every import between modules of ``package``.

    ``from pkg import name`` is an import of the submodule ``pkg.name`` when there is one, else of ``pkg``
    itself (its ``__init__``); ``import a.b.c`` is an import of ``a.b.c``. The implicit execution of a
    package's ``__init__`` when one of its submodules is imported is not counted (every submodule import
    would otherwise be one of the package's facade).
    """
    files = module_files(root, package)
    edges = []
    for mod, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_package else mod.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in files else src for a in node.names]
            for target in targets:
                while target and target not in files and "." in target:  # import a.b.Name -> a.b
                    target = target.rsplit(".", 1)[0]
                if target in files and target != mod:
                    edges.append((mod, target, node.lineno))
    return sorted(set(edges))


def find_cycles(nodes, edges) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    graph = {n: sorted({b for a, b, _ in edges if a == n}) for n in nodes}
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return comps


def layering_errors(root: pathlib.Path, package: str, layers) -> list[str]:
    """Everything wrong with ``package``'s layering, one message per problem (empty: all is well)."""
    files = module_files(root, package)
    level, names = {}, {}
    errors = []
    for i, (layer, members) in enumerate(layers):
        for rel in members:
            mod = f"{package}.{rel}" if rel else package
            if mod in level:
                errors.append(f"{mod} is listed in two layers: {names[mod]!r} and {layer!r}")
            level[mod], names[mod] = i, layer
    errors += [f"{m} ({files[m].relative_to(root)}) has no layer: add it to LAYERS in tests/test_layers.py"
               for m in files if m not in level]
    errors += [f"{m} is listed in LAYERS but there is no such module" for m in level if m not in files]
    edges = import_edges(root, package)
    for a, b, line in edges:
        if a in level and b in level and level[b] > level[a]:
            errors.append(f"{files[a].relative_to(root)}:{line}: {a} (layer {names[a]!r}) imports {b} "
                          f"from the higher layer {names[b]!r}")
    for comp in find_cycles(files, edges):
        inside = [f"{a} -> {b} (line {line})" for a, b, line in edges if a in comp and b in comp]
        errors.append(f"import cycle of {len(comp)} modules: " + "; ".join(inside))
    return errors


def test_the_package_is_layered_without_cycles():
    errors = layering_errors(ROOT, PACKAGE, LAYERS)
    assert not errors, "\n".join(errors)


# ------------------------------------------------------------------------------------------------------
# The checker itself, on a made-up package: it must see what it is there to see
# ------------------------------------------------------------------------------------------------------
def _package(tmp_path, modules: dict[str, str]) -> pathlib.Path:
    for name, text in {"__init__": "", **modules}.items():
        path = tmp_path / "pkg" / (name.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


LOW_HIGH = (("low", {"", "low", "sub", "sub.a"}), ("high", {"high"}))


@pytest.mark.parametrize("source", [
    "def f():\n    from pkg.high import g\n",  # a function-local import
    "def f():\n    from . import high\n",  # relative
    "import pkg.high\n",
    "from pkg import high as h\n",
])
def test_checker_finds_an_import_from_a_higher_layer(tmp_path, source):
    root = _package(tmp_path, {"low": source, "high": "X = 1\n", "sub/__init__": "", "sub.a": ""})
    errors = layering_errors(root, "pkg", LOW_HIGH)
    assert len(errors) == 1 and "pkg.low (layer 'low') imports pkg.high from the higher layer 'high'" in errors[0]


def test_checker_finds_a_cycle_through_function_local_imports_and_a_package_init(tmp_path):
    root = _package(tmp_path, {"low": "def f():\n    from pkg.sub import A\n",
                               "sub/__init__": "from pkg.sub.a import A\n", "sub.a": "from pkg import low\nA = 1\n",
                               "high": ""})
    errors = layering_errors(root, "pkg", LOW_HIGH)
    assert errors == ["import cycle of 3 modules: pkg.low -> pkg.sub (line 2); pkg.sub -> pkg.sub.a (line 1); "
                      "pkg.sub.a -> pkg.low (line 1)"]


def test_checker_allows_same_layer_and_downward_imports_and_sees_submodules_of_a_package(tmp_path):
    # ``from pkg.sub import a`` imports the submodule pkg.sub.a, not pkg.sub's __init__ (which imports
    # pkg.low: counted as an import of the __init__, it would close a cycle).
    root = _package(tmp_path, {"low": "from pkg.sub import a\n", "sub/__init__": "from pkg import low\n",
                               "sub.a": "", "high": "from pkg import low\nfrom pkg.sub.a import *\n"})
    assert layering_errors(root, "pkg", LOW_HIGH) == []


def test_checker_refuses_modules_without_a_layer_and_stale_entries(tmp_path):
    root = _package(tmp_path, {"low": "", "high": "", "sub/__init__": "", "sub.a": "", "new": ""})
    errors = layering_errors(root, "pkg", LOW_HIGH + (("gone", {"old"}),))
    assert any(e.startswith("pkg.new (pkg/new.py) has no layer") for e in errors)
    assert "pkg.old is listed in LAYERS but there is no such module" in errors
    assert len(errors) == 2
