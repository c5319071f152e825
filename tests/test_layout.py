"""The package's layout: layers that import only downwards, no import cycles, modules of a readable size.

Imports are read from the source with `ast`, all of them: module level and inside
functions alike, because a lazy import is still a dependency (the `cli` <-> `train`
cycle of 0.1 was two lazy imports).
"""

import ast
import importlib
import os
import pathlib
import re
import subprocess
import sys
import warnings

import pytest

import tfrec_video
from tfrec_video import deprecated_paths

PACKAGE = pathlib.Path(tfrec_video.__file__).parent
ROOT = PACKAGE.parent

# Bottom to top, as tfrec_video/__init__.py lists them.
LAYERS = (
    ("base", ("tfrec_video", "tfrec_video.errors", "tfrec_video.config_fields", "tfrec_video.distribute",
              "tfrec_video.deprecated_paths")),
    ("data", ("tfrec_video.data",)),
    ("preparation", ("tfrec_video.preparation",)),
    ("evaluation", ("tfrec_video.evaluation",)),
    ("datasets", ("tfrec_video.datasets",)),
    ("features", ("tfrec_video.features",)),
    ("text_encoders", ("tfrec_video.text_encoders",)),
    ("towers", ("tfrec_video.towers",)),
    ("models", ("tfrec_video.models",)),
    ("training", ("tfrec_video.training",)),
    ("serving", ("tfrec_video.serving",)),
    ("media_embedding", ("tfrec_video.media_embedding",)),
    ("cli", ("tfrec_video.cli", "tfrec_video.__main__")),
)
MAX_LINES = 450
LONG_MODULES_ALLOWED = ("tfrec_video/datasets/",)


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules():
    """`{module name: path}` of every module of the package."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: pathlib.Path, known) -> set:
    """The tfrec_video modules `name` imports; `from pkg import sub` counts as importing `pkg.sub`."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return {m for m in found if m == "tfrec_video" or m.startswith("tfrec_video.")}


def import_graph():
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> int:
    best, index = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    if index is None:
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and to tfrec_video/__init__.py")
    return index


def upward_imports(graph):
    """`(importer, imported)` pairs where a lower layer imports a higher one."""
    return sorted((src, dst) for src, targets in graph.items() for dst in targets
                  if layer_of(dst) > layer_of(src))


def import_cycles(graph):
    """The strongly connected components with more than one module, or a module importing itself (Tarjan)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_module_belongs_to_a_layer():
    for name in package_modules():
        layer_of(name)


def test_no_layer_imports_a_higher_one():
    assert upward_imports(import_graph()) == []


def test_no_import_cycles():
    assert import_cycles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle():
    """The two checks above, on graphs with the faults planted: they must report them."""
    graph = import_graph()
    graph["tfrec_video.data.schema"] = graph["tfrec_video.data.schema"] | {"tfrec_video.serving.export"}
    assert ("tfrec_video.data.schema", "tfrec_video.serving.export") in upward_imports(graph)
    cyclic = {"tfrec_video.cli.main": {"tfrec_video.cli.train"}, "tfrec_video.cli.train": {"tfrec_video.cli.main"},
              "tfrec_video.cli.embed": set()}
    assert import_cycles(cyclic) == [["tfrec_video.cli.main", "tfrec_video.cli.train"]]
    assert import_cycles({"tfrec_video.x": {"tfrec_video.x"}}) == [["tfrec_video.x"]]


def test_lazy_and_relative_imports_are_seen(tmp_path):
    source = tmp_path / "tfrec_video" / "data" / "example.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from tfrec_video.cli import main\n    from . import files\n    from .. import errors\n")
    found = imports_of("tfrec_video.data.example", source, {"tfrec_video.data.files", "tfrec_video.errors"})
    assert found == {"tfrec_video.cli", "tfrec_video.data.files", "tfrec_video.errors"}


def test_no_module_outside_datasets_exceeds_450_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES
            and not str(p.relative_to(ROOT)).startswith(LONG_MODULES_ALLOWED)}
    assert long == {}


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "may import" in doc.lower(), f"{init.relative_to(ROOT)}: say what the subpackage may import"


def test_the_readme_layout_names_every_subpackage_and_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", layout))
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        for folder in relative.parts[:-1]:
            assert f"{folder}/" in layout, f"README layout lacks the folder {folder}/"
        if path.stem not in ("__init__", "__main__"):
            assert path.stem in words or path.name in layout, f"README layout lacks {relative}"


def test_the_top_level_holds_only_the_base_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "config_fields.py", "deprecated_paths.py", "distribute.py",
                   "errors.py"]


@pytest.mark.parametrize("old", sorted(deprecated_paths.MOVED))
def test_old_module_paths_import_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    assert any(old in m and deprecated_paths.REMOVED_IN in m for m in messages), messages
    # The warning points at the code that imported the old path, not at importlib.
    assert [w.filename for w in caught if old in str(w.message)] == [__file__]
    new = [importlib.import_module(name) for name in deprecated_paths.MOVED[old]]
    if len(new) == 1:
        assert module is new[0]
    else:
        for part in new:
            public = [k for k in vars(part) if not k.startswith("_")]
            assert public and all(getattr(module, k) is getattr(part, k) for k in public)


def test_old_names_keep_working_through_the_aliases():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from tfrec_video.data.io import list_files, read_table  # noqa: F401
        from tfrec_video.export import export_saved_model
        from tfrec_video.schema import impressions_schema
    from tfrec_video.data.schema import impressions_schema as new_schema
    from tfrec_video.serving import export_saved_model as new_export

    assert export_saved_model is new_export and impressions_schema is new_schema


def test_python_dash_m_of_the_old_train_module_runs_the_train_command():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="always::DeprecationWarning")
    old = subprocess.run([sys.executable, "-m", "tfrec_video.train", "--help"], capture_output=True, text=True,
                         env=env, timeout=300)
    new = subprocess.run([sys.executable, "-m", "tfrec_video", "train", "--help"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert old.returncode == 0 and new.returncode == 0, old.stderr + new.stderr
    assert "--config" in old.stdout and old.stdout == new.stdout
    assert "python -m tfrec_video train" in old.stderr
