"""Every notebook in notebooks/ (found by glob): static gates, then a smoke run checked by its results."""
from __future__ import annotations

import ast
import json
import math
import re
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
    assert any("check_environment(profile)" in c.source for c in _code_cells(nb)), "an environment cell"


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
        assert not Path(fig).resolve().is_relative_to(PROJECT_ROOT / "figures"), "a test run never writes figures/"


def _check_quickstart(m):
    assert m["loss_last"] < m["loss_first"] - 0.3, "the loss falls on smoke"
    assert m["steps"] == 30 and m["four_bit_layers"] > 0
    assert 0 < m["trainable_params"] < m["total_params"] and m["tokens_seen"] > 0
    # smoke's train_limit (64) is left out apart from the skips (issue 7.15): used + skipped = the 64 taken
    assert m["examples_read"] == 220 and m["examples_kept"] + sum(m["skipped_by_reason"].values()) == 64
    assert m["new_steps"] == 30 and m["train_seconds"] > 0 and m["tokens_per_s"] > 0
    assert 0 < m["memory_before_mb"] <= m["memory_after_mb"] and 0 < m["memory_share_pct"] <= 100
    assert ("RSS" in m["memory_kind"]) == (m["gpu"] == "none (CPU)")  # on a CPU the figure says it is RSS
    assert m["reload_matches_tuned"] is True and m["merged_matches_adapter_pct"] == 100
    assert m["planned_fits"] is True and 0.67 < m["planned_peak_gib"] < 2  # the planner's verdict: CUDA context + a bit


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
    assert m["adapter_source"].startswith("notebook 00")
    assert m["exam_subjects"] == ["medicine", "psychology", "law", "education"]


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


_BAR = re.compile(r"^(?P<desc>[^|]*?):\s*(?P<pct>\d+)%\|")
_BARE_DECIMAL = re.compile(r"<td[^>]*>\s*-?\d+\.\d+\s*</td>")  # a mean shown without its interval


def _unfinished_bars(cell) -> dict:
    """Progress bars whose last state in the saved output is not 100%, by description."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    last = {}
    for line in re.split(r"[\r\n]+", text):
        if m := _BAR.match(line.strip()):
            last[m["desc"]] = int(m["pct"])
    return {desc: pct for desc, pct in last.items() if pct != 100}


def _check_outputs(nb):
    """What a reader of the executed notebook sees: no error, no frozen widget, every table says smoke and every
    mean in a table carries its interval (counts and text may stand alone)."""
    outputs = [o for c in _code_cells(nb) for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert not [o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})], \
        "widget progress bars are saved frozen at 0%: headless runs use text bars"
    assert not [b for c in _code_cells(nb) if (b := _unfinished_bars(c))], "every progress bar ends at 100%"
    tables = [h for o in outputs if "<table" in (h := o.get("data", {}).get("text/html", ""))]
    assert all("profile: smoke" in t and "not a result" in t for t in tables), "every table says it is smoke"
    assert not [t for t in tables if _BARE_DECIMAL.search(t)], "every table of means shows mean [low, high]"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_on_smoke(path, executed):
    notebook, results = executed(path)
    _check_common(results, path.stem)
    CHECKS.get(path.stem, lambda m: None)(results["metrics"])
    _check_outputs(nbformat.read(notebook, as_version=4))



def test_evaluation_saves_scores_before_drawing_any_figure():
    """A plotting error must never lose a scored run: 08 writes its CSVs and results JSON first."""
    cells = _code_cells(nbformat.read(PROJECT_ROOT / "notebooks" / "08_evaluation.ipynb", as_version=4))
    first = {key: next(i for i, c in enumerate(cells) if key in c.source)
             for key in ("record_results(", "to_csv(", "save_figure(", "fig = ")}
    assert max(first["record_results("], first["to_csv("]) < min(first["save_figure("], first["fig = "])


def _write_exam_folder(folder: Path) -> list[str]:
    """A CMMLU-style folder: one subject MMCU has (college_medicine -> medicine), one it lacks."""
    folder.mkdir()
    for stem in ("college_medicine", "high_school_physics"):
        rows = [f"{i},{stem}题{i}？,甲{i},乙{i},丙{i},丁{i},{'ABCD'[i % 4]}" for i in range(6)]
        (folder / f"{stem}.csv").write_text("\n".join([",Question,A,B,C,D,Answer", *rows]) + "\n", encoding="utf-8")
    return ["medicine", "high_school_physics"]


def _write_belle_with_open_items(path: Path) -> int:
    """A Belle-format set whose open categories have empty references, as 369 of Belle's 1,000 do."""
    items = [{"question": f"写一首关于春天的短诗，第{i}首。", "std_answer": "", "class": "generation"}
             for i in range(3)]
    items += [{"question": f"{i}加{i}等于几？", "std_answer": f"等于{2 * i}。", "class": "math"} for i in range(4)]
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return 3


def _missing_references_are_unscored() -> bool:
    import pandas as pd

    from helpers.evaluate import score_offline

    probe = pd.DataFrame({"item_id": ["x"], "category": ["generation"], "response": ["诗"], "reference": [""]})
    return bool(math.isnan(score_offline(probe)["score"].iat[0]))


@pytest.mark.notebook
def test_evaluation_runs_on_any_exam_set(tmp_path):
    """issue 7.1/7.2: subjects come from the data (the paper's bars only where MMCU has them), an adapter is trained
    when none exists, and items without a reference show as n/a instead of 0."""
    import papermill as pm

    subjects, n_open = _write_exam_folder(tmp_path / "cmmlu"), _write_belle_with_open_items(tmp_path / "belle.json")
    results = tmp_path / "08.json"
    path = PROJECT_ROOT / "notebooks" / "08_evaluation.ipynb"
    overrides = {"output_root": str(tmp_path / "outputs"), "exam_data": str(tmp_path / "cmmlu"), "eval_limit": 0}
    pm.execute_notebook(str(path), str(tmp_path / path.name), cwd=str(path.parent), progress_bar=False,
                        parameters={"PROFILE": "smoke", "RESULTS_PATH": str(results), "SHOTS": [0],
                                    "OVERRIDES": overrides | {"eval_data": str(tmp_path / "belle.json")}})
    m = json.loads(results.read_text(encoding="utf-8"))
    _check_common(m, "08_evaluation")
    metrics = m["metrics"]
    assert sorted(metrics["exam_subjects"]) == sorted(subjects) and metrics["n_exam"] == 12
    assert metrics["adapter_source"].startswith("trained here") and metrics["n_instructions"] == 7
    _check_outputs(nbformat.read(tmp_path / path.name, as_version=4))
    if not _missing_references_are_unscored():
        pytest.xfail("score_offline still scores an empty reference as 0 (EVAL: CONTRACTS interface 5)")
    assert metrics["belle_n_unscored"] == n_open
