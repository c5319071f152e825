"""The README opens with the two set-up commands, and CI runs exactly the test one."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text.split("---")[0]
    return re.findall(r"```bash\n(.+?)\n```", head, flags=re.S)


def test_readme_opens_with_run_and_test_commands():
    run, test = _readme_commands()[:2]
    assert "pip install -e ." in run and run.strip().endswith("tfrec-video quickstart")
    assert 'pip install -e ".[test]"' in test and "pytest" in test


def test_ci_runs_the_readme_test_command():
    test = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # The README chains venv creation, install and pytest with &&; CI runs each step on its own line.
    for step in [s.strip() for s in test.split("&&")]:
        if step.startswith(". .venv"):
            assert ". .venv/bin/activate" in ci
        else:
            assert step in ci, f"CI does not run the README step {step!r}"


def test_top_level_layout():
    for name in ("setup.cfg", "setup.py", "tfrec_video", "tests", "notebooks", "saved_models", "README.md",
                 ".ci", "benchmarks"):
        assert (ROOT / name).exists(), name
    tracked = [p.name for p in (ROOT / "saved_models").iterdir()]
    assert "README.md" in tracked


def test_readme_python_example_runs(tmp_path):
    import os
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.findall(r"```python\n(.+?)\n```", text, flags=re.S)[0]
    env = dict(os.environ, TFREC_VIDEO_CACHE=str(tmp_path / "cache"), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "saved_models" / "video_rec" / "1" / "saved_model.pb").is_file()
