"""Secrets and parameters: a planted judge key reaches the judge and nowhere else; bad parameters fail clearly."""
from __future__ import annotations

import pytest

from fake_openai_server import FakeJudgeServer
from helpers.paths import PROJECT_ROOT

NOTEBOOK = PROJECT_ROOT / "notebooks" / "08_evaluation.ipynb"
PLANTED = "sk-planted-7f3e9a1c-do-not-leak"


def _files_containing(root, needle: bytes):
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.notebook
def test_judge_key_never_lands_in_notebooks_results_or_caches(tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("JUDGE_API_KEY", PLANTED)
    monkeypatch.setenv("ZH_COOKBOOK_CACHE", str(tmp_path / "cache"))  # the judge cache lands here
    results = tmp_path / "results.json"
    with FakeJudgeServer(api_key=PLANTED) as server:
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "executed.ipynb"), cwd=str(NOTEBOOK.parent),
                            progress_bar=False, log_output=False,
                            parameters={"PROFILE": "smoke", "RESULTS_PATH": str(results), "JUDGE_MODEL": "fake-judge",
                                        "JUDGE_BASE_URL": server.base_url, "SHOTS": [0],
                                        "OVERRIDES": {"output_root": str(tmp_path / "outputs"), "eval_limit": 10}})
        assert server.requests, "the judge was really called"
        assert all(r["headers"].get("Authorization") == f"Bearer {PLANTED}" for r in server.requests)
    assert '"belle_scorer": "judge:fake-judge"' in results.read_text()
    assert list((tmp_path / "cache").rglob("*.json")), "judge verdicts were cached"
    assert _files_containing(tmp_path, PLANTED.encode()) == []


@pytest.mark.notebook
def test_bad_notebook_parameters_fail_with_the_valid_choices(tmp_path):
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    with pytest.raises(PapermillExecutionError, match="valid profiles: smoke, colab-t4, a100"):
        pm.execute_notebook(str(NOTEBOOK), str(tmp_path / "x.ipynb"), cwd=str(NOTEBOOK.parent),
                            progress_bar=False, parameters={"PROFILE": "colab"})
