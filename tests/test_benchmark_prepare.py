"""`benchmarks/prepare.py` end to end on a small log: the Beam pipeline and the benchmark's own
single-process numpy/pyarrow reference must write the same tables (an independent check of `prepare`),
and the script must print its JSON result line."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_prepare_benchmark_runs_and_beam_agrees_with_the_reference(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "prepare.py"), "--events", "20000",
                           "--profile", "never", "--json", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["same_output"] is True
    run = result["results"]["20000"]
    assert run["beam"]["rows"] == run["reference"]["rows"]
    assert sum(run["beam"]["rows"].values()) == 20000
