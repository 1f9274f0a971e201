"""Every notebook in notebooks/ (found by glob): static gates, then a smoke run checked by its results."""
from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import nbformat
import pytest

from helpers.paths import PROJECT_ROOT

NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IDS = [nb.stem for nb in NOTEBOOKS]


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_static_gates(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    first = next(line for line in params[0].source.splitlines() if line.strip())
    assert first.startswith('PROFILE = "smoke"'), "PROFILE first, defaulting to smoke"
    assert "RESULTS_PATH" in params[0].source
    assert not any(c.get("outputs") or c.get("execution_count") for c in _code_cells(nb)), "committed without outputs"
    for cell in _code_cells(nb):
        ast.parse(cell.source)  # plain Python: no shell escapes or magics that break outside IPython
        assert len(cell.source.splitlines()) <= 25, "long cells belong in helpers/"
        assert "class " not in cell.source and "sys.path" not in cell.source
    assert "colab.research.google.com" in nb.cells[0].source, "Open-in-Colab badge on top"
    assert "google.colab" in _code_cells(nb)[0].source, "a guarded Colab install cell first"


@pytest.fixture(scope="session")
def executed(tmp_path_factory):
    """Run each notebook once with papermill on smoke; returns {stem: (executed notebook path, results dict)}."""
    import papermill as pm

    out = tmp_path_factory.mktemp("runs")
    done = {}

    def run(path: Path):
        if path.stem not in done:
            results = out / f"{path.stem}.json"
            pm.execute_notebook(str(path), str(out / path.name), cwd=str(path.parent), progress_bar=False,
                                parameters={"PROFILE": "smoke", "RESULTS_PATH": str(results),
                                            "OVERRIDES": {"output_root": str(out / "outputs")}})
            done[path.stem] = (out / path.name, json.loads(results.read_text(encoding="utf-8")))
        return done[path.stem]

    return run


def _numbers(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _check_common(results, stem):
    assert results["notebook"] == stem and results["profile"] == "smoke"
    assert "not a result" in results["result_note"]  # smoke numbers are labelled as plumbing
    assert results["metrics"] and all(math.isfinite(x) for x in _numbers(results["metrics"]))
    assert results["figures"], "every notebook plots its result"
    for fig in results["figures"]:
        assert Path(fig).exists() and Path(fig).stat().st_size > 5000 and "/smoke/" in fig


def _check_quickstart(m):
    assert m["loss_last"] < m["loss_first"] - 0.3, "the loss falls on smoke"
    assert m["steps"] == 30 and m["four_bit_layers"] > 0
    assert 0 < m["trainable_params"] < m["total_params"] and m["tokens_seen"] > 0
    assert m["examples_read"] == 220 and m["examples_kept"] + sum(m["skipped_by_reason"].values()) == 220


def _check_evaluation(m):
    assert m["belle_scorer"] == "rouge_l_chars" and m["n_instructions"] == 20 and m["n_exam"] == 24
    assert 0 <= m["belle_avg_base"] <= 100 and 0 <= m["belle_avg_tuned"] <= 100
    assert m["belle_diff_ci_low"] <= m["belle_diff"] <= m["belle_diff_ci_high"]
    keys = {f"{model}/{mode}/{k}-shot"
            for model in ("base", "tuned") for mode in ("generate", "loglik") for k in (0, 3)}
    assert set(m["exam_avg"]) == keys
    for mean, low, high in m["exam_avg"].values():
        assert 0 <= low <= mean <= high <= 100
    assert all(0 <= v <= 100 for v in m["no_letter_rate"].values())


def _check_triple(triple, low=0, high=100):
    assert low <= triple[1] <= triple[0] <= triple[2] <= high, triple  # [mean, ci_low, ci_high]: the mean inside


def _check_choosing_a_base(m):
    from helpers.arms import VERDICTS

    gains = m["gains"]
    assert set(gains) == {"llama", "bloom", "qwen2"} and set(m["tokenizers"]) == set(gains)
    for arm, entries in gains.items():
        assert {"belle/rouge_l_chars", "exam/generate/0-shot", "exam/loglik/0-shot"} <= set(entries)
        for key, entry in entries.items():
            assert entry["against"] == "base"
            for name in ("base", "mean"):
                _check_triple(entry[name])
            _check_triple(entry["diff"], -100, 100)
            assert "loglik" in key or entry["verdict"] in VERDICTS  # verdicts on the paper's way of scoring
        tok = m["tokenizers"][arm]
        assert tok["chars_per_token"] > 0 and 0 <= tok["byte_fallback_share"] <= 1 and tok["n_chars"] > 1000
    assert m["n_verdicts"] == len(m["verdicts"]) == 3 * 2 + 2 * 2  # gains per base, and two bases vs the first
    assert set(m["verdicts"].values()) <= set(VERDICTS) and "cannot test this finding" in m["conclusion"]["text"]


def _check_prompt_language(m):
    from helpers.arms import VERDICTS

    assert set(m["arms"]) == {f"{base} · {lang}" for base in ("llama", "bloom") for lang in ("English", "Chinese")}
    for name, entries in m["arms"].items():
        for key in ("tuned/belle/rouge_l_chars", "tuned/exam/generate/0-shot"):
            _check_triple(entries[key]["mean"])
            if name.endswith("Chinese"):  # each Chinese-template arm against the same base with English
                assert entries[key]["against"] == name.replace("Chinese", "English")
                _check_triple(entries[key]["diff"], -100, 100)
                assert entries[key]["verdict"] in VERDICTS
    assert m["n_verdicts"] == len(m["verdicts"]) == 2 * 2 and m["n_instructions"] == 30 and m["n_exam"] == 24
    assert "cannot test this finding" in m["conclusion"]["text"]


CHECKS = {"00_quickstart": _check_quickstart, "08_evaluation": _check_evaluation,
          "01_choosing_a_base": _check_choosing_a_base, "06_prompt_language": _check_prompt_language}


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_on_smoke(path, executed):
    notebook, results = executed(path)
    _check_common(results, path.stem)
    CHECKS.get(path.stem, lambda m: None)(results["metrics"])
    nb = nbformat.read(notebook, as_version=4)
    outputs = [o for c in _code_cells(nb) for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o.get("data", {}).get("text/html", "") for o in outputs]
    tables = [h for h in html if "<table" in h and "<progress" not in h]  # the Trainer's live loss table aside
    assert all("profile: smoke" in t and "not a result" in t for t in tables), "every table says it is smoke"

