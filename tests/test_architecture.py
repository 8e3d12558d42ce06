"""The package's shape: short functions, and imports that flow one way (nn <- data <- train; see reads them).

Both checks read the source with :mod:`ast`; nothing is imported or run.
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minicnn"
MAX_FUNCTION_LINES = 60

#: Part of the package -> the top-level modules and the minicnn parts it may not import.
#: (``nn`` is checked by an allow-list instead: see test_the_framework_imports_only_numpy_and_itself.)
FORBIDDEN = {
    "data": {
        "minicnn.train",
        "minicnn.see",
        "minicnn.cli",
        "minicnn.sklearn",
        "minicnn.inspect",
        "minicnn.gallery",
        "matplotlib",
    },
    "train": {
        "minicnn.see",
        "minicnn.cli",
        "minicnn.sklearn",
        "minicnn.inspect",
        "minicnn.gallery",
        "matplotlib",
    },
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def part(path: Path) -> str:
    """``nn``, ``data``, ``train``, ``see`` for files in those folders; the module name for top-level ones."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (inside functions too), as absolute names."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            found.add(stem)
            found.update(f"{stem}.{alias.name}" for alias in node.names)  # "from . import data"
    return found


def imports_within(names: set[str], prefix: str) -> set[str]:
    return {name for name in names if name == prefix or name.startswith(prefix + ".")}


def test_the_import_parser_resolves_relative_imports():
    names = imported_modules(PACKAGE / "train" / "runner.py")
    assert {"minicnn.data", "minicnn.nn.model", "minicnn.train.build", "numpy"} <= names
    assert "minicnn.see.inspect" in imported_modules(
        PACKAGE / "inspect.py"
    )  # "from .see.inspect import main"


def test_long_functions_are_measured_with_their_docstring():
    source = "def f():\n    '''doc\n\n    more'''\n    return 1\n"
    (node,) = ast.parse(source).body
    assert node.end_lineno - node.lineno + 1 == 5


def test_no_function_is_longer_than_60_lines():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # decorators aside, docstring included
                if length > MAX_FUNCTION_LINES:
                    long.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {length} lines"
                    )
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


#: The optional packages a file of ``nn`` may import, inside the function that needs them (the array
#: namespaces of other libraries, and CuPy for device "cuda"; tests/test_optional_imports.py checks
#: that importing minicnn loads neither).
NN_OPTIONAL = {"_backend.py": {"array_api_compat", "cupy"}}


def test_the_framework_imports_only_numpy_and_itself():
    for path in modules():
        if part(path) != "nn":
            continue
        outside = {
            name
            for name in imported_modules(path)
            if name.startswith("minicnn")
            and not imports_within({name}, "minicnn.nn")
            and not imports_within({name}, "minicnn.io")
        }
        third_party = {
            name.split(".")[0] for name in imported_modules(path) if not name.startswith("minicnn")
        }
        third_party -= {"numpy", "__future__"} | set(_stdlib()) | NN_OPTIONAL.get(path.name, set())
        assert not outside and not third_party, f"{path.name} imports {sorted(outside | third_party)}"


#: The portable math and the layers ask their arrays for their library; these are the only NumPy names
#: each file uses, and why. (The fast lowering, _lowering.py, _winograd.py and _threads.py, is NumPy's
#: own.) A layer's NumPy-only branch runs only for NumPy arrays (``namespace(x) is np``); construction
#: happens on the host (random weights, zero biases), and files and predictions hold NumPy arrays.
#: tests/test_array_api_layers.py runs every layer on a device NumPy refuses, so a NumPy call on the
#: portable path fails there.
_HOST_CONSTRUCTION = {"dtype", "float32", "ndarray", "zeros"}  # parameters made on the host, then moved
PORTABLE_NUMPY_NAMES = {
    "functional.py": {"errstate"},  # silences NumPy's overflow warning; no arithmetic
    "losses.py": set(),
    "optim.py": {"array", "ndarray", "vdot"},  # host copies for checkpoints; vdot on NumPy arrays only
    # NumPy for what is not an array yet; the loader's stand-ins (placeholders, NoDrawGenerator: host only)
    "parameter.py": {
        "asarray",
        "generic",
        "ndarray",
        "ascontiguousarray",
        "broadcast_to",
        "float64",
        "random",
        "zeros",
        "zeros_like",
    },
    # ReLU's NumPy branch: in place, split over threads
    "layers/activation.py": {"ascontiguousarray", "empty", "empty_like", "greater", "maximum", "multiply"}
    | {"ndarray", "result_type"},
    # init_weight draws on the host; check_input's NumPy branch; host copies in state_dict and saving
    "layers/base.py": {"random", "sqrt", "prod", "dtype", "float32", "result_type", "generic", "ndarray"}
    | {"array", "asarray", "shape"},
    # predictions are gathered on the host; a batch_size check
    "layers/containers.py": _HOST_CONSTRUCTION | {"concatenate", "empty", "integer"},
    "layers/conv.py": _HOST_CONSTRUCTION,
    "layers/linear.py": _HOST_CONSTRUCTION,
    # _channel_dot's NumPy branch (einsum); BatchNorm2D's statistics start on the host; Dropout's mask
    # is drawn on the host
    "layers/norm.py": _HOST_CONSTRUCTION | {"einsum", "ones", "float64"},
    "layers/pooling.py": {"empty", "ndarray"},  # MaxPool2D's NumPy branch, split over threads
    "layers/saving.py": {"all", "array", "isfinite", "ndarray"},  # files: NumPy arrays on the host
    "layers/__init__.py": set(),
}


def test_every_layer_module_has_a_numpy_allow_list():
    layer_modules = {f"layers/{path.name}" for path in (PACKAGE / "nn" / "layers").glob("*.py")}
    assert layer_modules <= set(PORTABLE_NUMPY_NAMES)


def numpy_names(path: Path) -> set[str]:
    """The ``np.<name>`` attributes that ``path``'s code (not its docstrings) uses."""
    return {
        node.attr
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "np"
    }


@pytest.mark.parametrize("name", sorted(PORTABLE_NUMPY_NAMES))
def test_the_portable_math_calls_numpy_only_where_listed(name):
    used = numpy_names(PACKAGE / "nn" / name)
    assert used <= PORTABLE_NUMPY_NAMES[name], f"{name} uses np.{sorted(used - PORTABLE_NUMPY_NAMES[name])}"


def test_the_numpy_name_check_sees_a_numpy_call(tmp_path):
    (tmp_path / "f.py").write_text('"""np.add.at in a docstring"""\nimport numpy as np\ny = np.exp(1.0)\n')
    assert numpy_names(tmp_path / "f.py") == {"exp"}


@pytest.mark.parametrize("package_part", sorted(FORBIDDEN))
def test_imports_flow_one_way(package_part):
    offences = []
    for path in modules():
        if part(path) != package_part:
            continue
        names = imported_modules(path)
        for banned in FORBIDDEN[package_part]:
            if imports_within(names, banned):
                offences.append(f"{path.relative_to(PACKAGE.parent)} imports {banned}")
    assert not offences, "\n".join(offences)


def test_the_checks_catch_a_forbidden_import(tmp_path, monkeypatch):
    """The direction test fails when training imports plotting (run on a copy with one bad line)."""
    fake = tmp_path / "minicnn"
    (fake / "train").mkdir(parents=True)
    (fake / "train" / "bad.py").write_text("def f():\n    from ..see import plots\n")
    (fake / "nn").mkdir()
    (fake / "nn" / "bad.py").write_text("from ..train import config\nimport matplotlib.pyplot\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match="train/bad.py imports minicnn.see"):
        test_imports_flow_one_way("train")
    with pytest.raises(AssertionError, match=r"bad.py imports \['matplotlib', 'minicnn.train"):
        test_the_framework_imports_only_numpy_and_itself()


def _stdlib() -> frozenset[str]:
    return frozenset(sys.stdlib_module_names)


# ----------------------------------------------------------------------------------------------
# No import cycles; no private name reached across modules
# ----------------------------------------------------------------------------------------------


def module_graph(package: Path) -> dict[str, set[str]]:
    """``{module: the minicnn modules it imports}`` (anywhere in the file, functions included), each
    named as a module that exists (``from .layers import Conv2D`` is an edge to ``minicnn.nn.layers``)."""
    paths = sorted(package.rglob("*.py"))
    root = package.parent
    known = {
        ".".join(
            p.relative_to(root).with_suffix("").parts[:-1]
            if p.name == "__init__.py"
            else p.relative_to(root).with_suffix("").parts
        )
        for p in paths
    }
    graph = {}
    for path in paths:
        relative = path.relative_to(root).with_suffix("")
        name = ".".join(relative.parts[:-1] if path.name == "__init__.py" else relative.parts)
        graph[name] = {found for found in _imports_from(path, root, known) if found != name}
    return graph


def from_module(node: ast.ImportFrom, package: str) -> str:
    """The absolute name of the module a ``from ... import`` statement in ``package`` reads from."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    return ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))


def _imports_from(path: Path, root: Path, known: set[str]) -> set[str]:
    """The modules ``path`` imports: ``from X import a`` is an edge to ``X.a`` where that is a module
    (a submodule), else to ``X``."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            stem = from_module(node, package)
            for alias in node.names:
                found.add(f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem)
    return {name for name in found if name in known}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycles():
    cycle = find_cycle(module_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path):
    fake = tmp_path / "minicnn"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "a.py").write_text("from .b import thing\n")
    (fake / "data" / "b.py").write_text("def f():\n    from . import a\n")
    assert find_cycle(module_graph(fake)) == ["minicnn.data.a", "minicnn.data.b", "minicnn.data.a"]


def private_imports(package: Path) -> list[str]:
    """``from X import _name`` of another minicnn module's private name, and private modules
    (``_threads``) imported from outside the package that holds them."""
    offences = []
    root = package.parent
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(root).with_suffix("")
        own_package = ".".join(relative.parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = from_module(node, own_package)
            if not module.startswith("minicnn"):
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            for alias in node.names:
                target = f"{module}.{alias.name}"
                parts = target.split(".")
                for i, part in enumerate(parts):
                    if part.startswith("_") and not part.startswith("__"):
                        holder = ".".join(parts[:i])
                        inside = own_package == holder or own_package.startswith(holder + ".")
                        if not inside:
                            offences.append(f"{where} imports {target}")
                        break
    return offences


def test_no_private_name_is_imported_across_modules():
    offences = private_imports(PACKAGE)
    assert not offences, "\n".join(offences)


def test_the_private_check_catches_a_private_helper(tmp_path):
    fake = tmp_path / "minicnn"
    (fake / "see").mkdir(parents=True)
    (fake / "see" / "a.py").write_text("from .plots import _bare\nfrom ..nn._threads import AutoThreads\n")
    (fake / "see" / "b.py").write_text("from . import _private_module\n")  # inside its own package: fine
    assert private_imports(fake) == [
        "minicnn/see/a.py:1 imports minicnn.see.plots._bare",
        "minicnn/see/a.py:2 imports minicnn.nn._threads.AutoThreads",
    ]
