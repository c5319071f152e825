"""`tfrec-video quickstart` end to end at a tiny size, through the real command line."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REQUIRED_KEYS = [
    ("retrieval", "recall@100"), ("retrieval", "oracle_recall@100"), ("retrieval", "ndcg@10"),
    ("ranking", "auc"), ("ranking", "oracle_auc"), ("ranking", "logloss"),
    ("cold_start", "recall@100"), ("warm_start", "recall@100"), ("popularity", "recall@100"),
    ("cold_start", "id_only_recall@100"),
]


def _cli(args, cwd, env):
    return subprocess.run([sys.executable, "-m", "tfrec_video.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("quickstart")
    env = dict(os.environ, TFREC_VIDEO_CACHE=str(work / "cache"))
    result = _cli(["quickstart", "--tiny"], work, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, env, result


@pytest.mark.slow
def test_quickstart_trains_reports_and_exports(quickstart_run):
    work, _, result = quickstart_run
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    for section, key in REQUIRED_KEYS:
        assert section in report and key in report[section], (section, key)
    assert 0.0 < report["ranking"]["oracle_auc"] <= 1.0
    assert report["ranking"]["logloss"] > 0
    assert report["counts"]["test_clicks"] > 0
    assert (work / "saved_models" / "video_rec" / "1" / "saved_model.pb").is_file()
    assert sorted(report["export"]["signatures"]) == ["embed_query", "embed_video", "rank", "recommend_diverse",
                                                      "recommend_excluding", "retrieve", "retrieve_excluding",
                                                      "serving_default"]
    assert len(report["export"]["fresh_process_recommendation"]) == 10
    # The metrics table is printed.
    assert "retrieval.recall@100" in result.stdout and "ranking.auc" in result.stdout
    assert "cold_start.id_only_recall@100" in result.stdout
    assert "baseline_s" in report["timings"]
    # The ranking stage's report: each head's epoch, calibration, the served list against retrieval's,
    # and the click-MLP baseline.
    training = report["training"]
    assert training["selection"]["retrieval_epoch"] >= 1 and training["selection"]["ranking_epoch"] >= 1
    assert training["calibration"]["scale"] > 0 and training["list_blend"]["order"] in ("blend", "retrieval", "clicks")
    assert 0.0 <= report["ranking"]["ece"] <= 1.0 and 0.0 < report["ranking"]["mlp_baseline_auc"] <= 1.0
    assert 0.0 <= report["serving"]["hr@10"] <= 1.0 and 0.0 <= report["retrieval"]["hr@10"] <= 1.0
    assert "serving.hr@10" in result.stdout and "ranking.ece" in result.stdout
    # Leave-one-out beside the impression protocol, each named, with both plain two-towers.
    loo = report["leave_one_out"]
    assert loo["protocol"] == "leave_one_out" and report["counts"]["protocol"] == "impressions"
    assert loo["list"] == "served" and loo["events"] > 0
    for key in ("hr@10", "ndcg@10", "retrieval_hr@10", "id_only_hr@10", "history_mean_hr@10", "popularity_hr@10"):
        assert 0.0 <= loo[key] <= 1.0, key
    assert "leave_one_out.history_mean_hr@10" in result.stdout


@pytest.mark.slow
def test_second_quickstart_reuses_data_and_adds_a_version(quickstart_run):
    work, env, _ = quickstart_run
    datasets = sorted(p.name for p in (work / "cache").iterdir() if not p.name.startswith("."))
    result = _cli(["quickstart", "--tiny", "--report", "second/report.json"], work, env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (work / "cache").iterdir() if not p.name.startswith(".")) == datasets
    versions = sorted(p.name for p in (work / "saved_models" / "video_rec").iterdir())
    assert versions == ["1", "2"], versions  # no temporary directory left behind either
    assert (work / "second" / "report.json").is_file()


def test_console_script_is_installed():
    script = pathlib.Path(sys.executable).parent / "tfrec-video"
    if not script.exists() and shutil.which("tfrec-video") is None:
        pytest.skip("package not installed with pip (running from a source tree)")
    result = subprocess.run([str(script) if script.exists() else "tfrec-video", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    assert "quickstart" in result.stdout and "generate-data" in result.stdout


def test_cli_reports_bad_arguments_without_traceback(tmp_path):
    result = _cli(["quickstart", "--tiny", "--epochs", "0"], tmp_path,
                  dict(os.environ, TFREC_VIDEO_CACHE=str(tmp_path / "cache")))
    assert result.returncode == 2
    assert "epochs" in result.stderr and "Traceback" not in result.stderr
