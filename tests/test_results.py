"""Results files: plain numbers, figures added after the scores, and the batch runner's printed summary."""
from __future__ import annotations

import importlib.util

import numpy as np

from helpers.paths import PROJECT_ROOT
from helpers.profiles import get_profile
from helpers.results import add_figures, plain, read_results, record_results


def test_plain_turns_numpy_scalars_into_python_numbers():
    value = plain({"a": np.float64(0.25), "b": [np.int64(3), (np.float32(1.5),)], "c": "x"})
    assert value == {"a": 0.25, "b": [3, [1.5]], "c": "x"} and type(value["b"][0]) is int
    assert repr(plain(np.float64(0.25))) == "0.25"


def test_scores_are_written_first_and_figures_added_later(tmp_path):
    path = tmp_path / "r.json"
    record_results(path, notebook="08_x", profile=get_profile("smoke"), measured="m",
                   metrics={"n": np.int64(3), "mean": np.float64(float("nan"))})
    assert read_results(path)["metrics"] == {"n": 3, "mean": None} and read_results(path)["figures"] == []
    add_figures(path, [tmp_path / "a.png"], elapsed_s=2.0)
    add_figures(path, [tmp_path / "a.png", tmp_path / "b.png"])
    results = read_results(path)
    assert results["figures"] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")] and results["elapsed_s"] == 2.0


def test_the_batch_runner_prints_the_summary_table(tmp_path, monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("run_cookbook", PROJECT_ROOT / "scripts" / "run_cookbook.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    monkeypatch.setattr(runner, "ROOT", tmp_path)  # no notebooks there: an empty run, written under tmp_path
    (tmp_path / "notebooks").mkdir()
    assert runner.main(["--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "| notebook | measured | numbers | profile | time |" in out and "# Cookbook run, profile `smoke`" in out
    assert "| **total** (0 notebooks) | | | | 0 s (0.0 min) |" in out
