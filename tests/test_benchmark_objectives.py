"""`benchmarks/objectives.py --quick` end to end: a click-only and a watch model on the tiny built-in data, their
served lists scored under the planted truth, the diversity sweep, and the JSON, plot and result line it writes."""

import json
import math

import pytest


@pytest.mark.slow
def test_objectives_benchmark_quick_run_writes_finite_numbers(tmp_path, capsys):
    from benchmarks import objectives

    out = tmp_path / "out"
    result = objectives.main(["--quick", "--out", str(out), "--data-dir", str(tmp_path / "data")])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out / "objectives.png").stat().st_size > 0
    saved = json.loads((out / "objectives.json").read_text(encoding="utf-8"))
    for key in ("watch_time_change", "clicks_change", "click_auc_diff"):
        assert saved["versus_click_only"][key] == pytest.approx(result["versus_click_only"][key])
    assert last["json"] == str(out / "objectives.json")

    assert set(saved["models"]) == {"click-only", "watch (mmoe)"}
    for name, model in saved["models"].items():
        test = model["test"]
        keys = ["click_auc", "oracle_click_auc", "oracle_watch_auc"] + (["watch_auc"] if "watch" in name else [])
        for key in keys:
            assert 0.0 <= test[key] <= 1.0, (name, key, test[key])
        if "watch" in name:
            assert -1.0 <= test["watch_pearson"] <= 1.0
    assert set(saved["lists"]) == {"click-only", "click-only, click prob x duration", "watch (mmoe)",
                                   "watch (mmoe), weights (1, 0)"}
    for name, served in saved["lists"].items():
        assert 0.0 < served["clicks"] <= 10.0, name
        assert 0.0 < served["watched_fraction"] <= served["clicks"], name
        assert served["watch_s"] > 0.0 and math.isfinite(served["watch_s"]), name
        assert 1.0 <= served["topics"] <= 10.0, name
        assert -1.0 <= served["ils"] <= 1.0, name
    for name, sweep in saved["diversity"].items():
        grid = [p["diversity"] for p in sweep["points"]]
        assert grid == sorted(grid) and set(round(i / 10, 1) for i in range(11)) <= set(grid)
        for point in sweep["points"]:
            assert point["clicks"] > 0.0 and 1.0 <= point["topics"] <= 10.0 and -1.0 <= point["ils"] <= 1.0
        best = sweep["best"]
        # The operating point keeps at least 97 % of the plain list's expected clicks.
        assert best["clicks"] >= 0.97 * sweep["points"][0]["clicks"] - 1e-12
        assert best["topic_gain"] >= 0.0
    for name, points in saved["tradeoff"].items():
        assert len(points) >= 2 and all(p["clicks"] > 0.0 and p["watch_s"] > 0.0 for p in points), name
    # MMR at diversity 0 serves the plain order.
    assert all(saved["mmr_at_zero_is_plain_order"].values())
    for key in ("watch_time_change", "clicks_change", "click_auc_diff", "topic_gain", "watch_auc", "oracle_watch_auc"):
        assert math.isfinite(last[key]), key
    assert isinstance(last["watch_time_target_met"], bool) and isinstance(last["topic_target_met"], bool)
