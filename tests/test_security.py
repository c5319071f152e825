"""No input is ever executed: no pickle, no eval/exec, no yaml.load; numpy files load without pickle.

A source scan, so that a later change cannot bring one in unnoticed, plus the behaviour it guards:
a YAML config with a Python tag is refused, and a model directory is JSON plus a TF checkpoint.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from tfrec_video.errors import ConfigError
from tfrec_video.training.run_config import load_run_config

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "tfrec_video").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
# Calls that execute code or deserialise objects from data.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            yield node, name


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_code_execution_or_unsafe_deserialisation(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                                                    else [])
            assert not {n.split(".")[0] for n in names} & FORBIDDEN_MODULES, (path, node.lineno)
    for node, name in _calls(tree):
        if isinstance(node.func, ast.Name):
            assert name not in FORBIDDEN_CALLS, (path, node.lineno, name)
        if name in ("load", "load_all", "unsafe_load", "full_load") and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "yaml":
            pytest.fail(f"{path}:{node.lineno}: yaml.{name}; use yaml.safe_load")
        if name == "load" and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id == "np":
            keywords = {k.arg: k.value for k in node.keywords}
            value = keywords.get("allow_pickle")
            assert isinstance(value, ast.Constant) and value.value is False, \
                f"{path}:{node.lineno}: np.load needs allow_pickle=False"


@pytest.mark.bad_input
def test_a_config_with_python_tags_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "cfg.yaml"
    path.write_text(f"data: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_config(str(path))
    assert not marker.exists()
    # yaml.safe_load itself refuses the tag; a plain yaml.load with the unsafe loader would run it.
    with pytest.raises(yaml.YAMLError):
        yaml.safe_load(path.read_text())


def test_the_readme_says_savedmodels_are_code():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(r"SavedModel.{0,200}(code|program)", text, re.S | re.I)
    assert re.search(r"trust", text, re.I)
