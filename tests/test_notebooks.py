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
    assert m["reload_matches_tuned"] is True and 0 <= m["merged_matches_adapter_pct"] <= 100
    assert m["merged_max_logprob_diff"] < 0.1  # exact up to fp16 rounding (a wrong merge is off by whole nats)
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


def _check_peft_methods(m):
    import pandas as pd

    from helpers.arms import VERDICTS
    from helpers.peft_methods import FIGURE2_CLAIMS, METHOD_SETTINGS

    assert set(m["arms"]) == set(m["methods"]) == set(METHOD_SETTINGS)  # every Table 4 row and every extra arm
    larger = {"SadapterP-l": "SadapterP", "SadapterH-l": "SadapterH", "P-adapter-l": "P-adapter",
              "AdaLoRA reallocating": "AdaLoRA"}
    for name, entries in m["arms"].items():
        for key in ("tuned/belle/rouge_l_chars", "tuned/exam/generate/0-shot", "tuned/exam/loglik/0-shot"):
            _check_triple(entries[key]["mean"])
            assert entries[key]["against"] == (None if name == "LoRA" else larger.get(name, "LoRA"))
            if name != "LoRA":
                _check_triple(entries[key]["diff"], -100, 100)
    for name, method in m["methods"].items():  # what trained is what method_table counts for the base
        assert method["trainable_params"] == method["method_table_params"] > 0, name
        assert method["train_s"] > 0 and method["peak_memory_mb"] > 0 and method["first"] > 0 and method["last"] > 0
    table4 = pd.read_csv(PROJECT_ROOT / "data_samples/paper/table4_peft_methods.csv", dtype={1: str})
    for row in table4.itertuples():  # Table 4's counts, reproduced on Bloom-7b1's architecture in the notebook
        printed = row.trainable_params_millions
        assert round(m["table4_on_bloom_7b1_m"][row.method], len(printed.partition(".")[2])) == float(printed)
    paper_run, reallocated = m["adalora_ranks"]["AdaLoRA"], m["adalora_ranks"]["AdaLoRA reallocating"]
    assert paper_run["min"] == paper_run["max"] == 12  # never reallocated: every matrix keeps init_r
    assert reallocated["total"] == 8 * reallocated["matrices"] and reallocated["min"] < 12  # pruned to target_r
    assert set(m["figure2_claims"]) == {claim for claim, *_ in FIGURE2_CLAIMS}
    assert m["n_verdicts"] == len(m["verdicts"]) == 2 * (len(METHOD_SETTINGS) - 1)
    assert set(m["verdicts"].values()) <= set(VERDICTS) and m["verdicts"]["DoRA vs LoRA / belle"] == VERDICTS[5]
    assert m["n_instructions"] == 30 and m["n_exam"] == 24 and "cannot test this finding" in m["conclusion"]["text"]


def _check_data_types(m):
    from helpers.arms import VERDICTS
    from helpers.eval_sets import BELLE_CATEGORIES, EXAM_SUBJECTS

    names = ["self-instruct", "conversations", "task collection", "exam", "mixture"]
    assert list(m["arms"]) == names and list(m["gains"]) == ["untuned base", *names]
    for name in names:
        for key in ("tuned/belle/rouge_l_chars", "tuned/exam/generate/0-shot"):
            _check_triple(m["arms"][name][key]["mean"])
            gain = m["gains"][name][key]  # every arm against the untuned base, item by item
            assert gain["against"] == "untuned base" and gain["verdict"] in VERDICTS
            _check_triple(gain["diff"], -100, 100)
            entry = m["arms"][name][key]
            if name != "self-instruct":  # and every other arm against the self-instruct arm
                assert entry["against"] == "self-instruct" and entry["verdict"] in VERDICTS
                _check_triple(entry["diff"], -100, 100)
    for name, benches in m["groups"].items():  # tables 6/7: every category and subject with its interval
        assert list(benches["belle"]) == [*BELLE_CATEGORIES, "avg"]
        assert list(benches["exam"]) == [*EXAM_SUBJECTS, "avg"]
        for triple in [*benches["belle"].values(), *benches["exam"].values()]:
            _check_triple(triple)
        assert benches["belle"]["avg"][0] == pytest.approx(m["gains"][name]["tuned/belle/rouge_l_chars"]["mean"][0])
    for name, sources in m["data"].items():  # what each arm trained on adds up, source by source
        assert [s["read"] == s["used"] + s["skipped"] + s["left_out"] for s in sources] == [True] * len(sources)
        assert sum(s["used"] + s["skipped"] for s in sources) == 32 and all(s["used"] > 0 for s in sources)
    assert [len(m["data"][n]) for n in names] == [1, 1, 1, 1, 2] and m["data"]["self-instruct"][0]["read"] == 220
    assert len(m["heatmaps"]["paper"]) == 2 and {"belle", "exam"} <= set(m["heatmaps"])
    assert all(Path(p).stat().st_size > 10_000 for p in [*m["heatmaps"]["paper"], m["heatmaps"]["belle"]])
    assert m["n_verdicts"] == len(m["verdicts"]) == 5 * 2 + 4 * 2 and set(m["verdicts"].values()) <= set(VERDICTS)
    assert m["verdicts"]["exam vs untuned base / exam"] == VERDICTS[5]  # the paper gives COIG-exam no MMCU average
    assert m["n_instructions"] == 30 and m["n_exam"] == 24 and "cannot test this finding" in m["conclusion"]["text"]


def _check_vocabulary(m):
    from helpers.arms import VERDICTS

    original, expanded, pretrained = "original vocabulary", "+ Chinese vocabulary", "+ Chinese vocabulary, pre-trained"
    assert set(m["arms"]) == {original, expanded, pretrained}
    assert set(m["vocab_check"]) == set(m["new_tokens"]) == {expanded, pretrained}
    assert len(m["tokenizer"]) == 2 * 2  # two expanded arms x two held-aside texts
    for key, tok in m["tokenizer"].items():  # Chinese text gets shorter: tokens per Han character fall
        assert tok["tokens_per_han_after"] < 0.7 * tok["tokens_per_han_before"], key
        assert 30 < tok["length_reduction_pct"] < 100, key
    for name, check in m["vocab_check"].items():  # after save and reload, on the 4-bit base
        assert check["ok"] is True and check["old_rows_kept"] is True and m["new_tokens"][name] > 1000
        assert check["old_ids_kept"] == check["old_tokens"] > 0
        assert check["tokenizer_len"] == check["saved_tokenizer_len"] == check["old_tokens"] + m["new_tokens"][name]
        assert check["model_rows"] == check["config_vocab_size"] == check["saved_config_vocab_size"]
        assert check["tokenizer_len"] <= check["model_rows"] < check["tokenizer_len"] + 64
    for name, entries in m["arms"].items():
        for key in ("tuned/belle/rouge_l_chars", "tuned/exam/generate/0-shot", "tuned/exam/loglik/0-shot"):
            _check_triple(entries[key]["mean"])
    pairs = {(expanded, original): m["arms"][expanded], (pretrained, expanded): m["arms"][pretrained],
             (pretrained, original): m["pretrained_vs_original"][pretrained]}
    for (arm, against), entries in pairs.items():
        for key, bench in (("tuned/belle/rouge_l_chars", "belle"), ("tuned/exam/generate/0-shot", "exam")):
            assert entries[key]["against"] == against
            _check_triple(entries[key]["diff"], -100, 100)
            assert entries[key]["verdict"] == m["verdicts"][f"{arm} vs {against} / {bench}"]  # the pair's own verdict
    assert m["n_verdicts"] == len(m["verdicts"]) == 3 * 2 and m["n_instructions"] == 30 and m["n_exam"] == 24
    assert set(m["verdicts"].values()) <= set(VERDICTS) and "cannot test this finding" in m["conclusion"]["text"]


def _check_chain_of_thought(m):
    from helpers.arms import VERDICTS

    against = {"instructions": None, "+ CoT data": "instructions", "+ CoT data, CoT* prompt": "+ CoT data"}
    counts = {"belle": 30, "belle:code": 3, "belle:math": 3, "exam": 24,
              **{f"exam:{s}": 6 for s in ("medicine", "psychology", "law", "education")}}
    judged = {"belle", "belle:code", "belle:math", "exam", "exam:education"}  # the measures table 8 reports
    assert list(m["arms"]) == list(against)
    for name, entries in m["arms"].items():
        assert {key.split("/")[1]: entry["n"] for key, entry in entries.items()} == counts
        for key, entry in entries.items():
            _check_triple(entry["mean"])
            assert entry["against"] == against[name]
            if against[name]:
                _check_triple(entry["diff"], -100, 100)
            assert ("verdict" in entry) == (against[name] is not None and key.split("/")[1] in judged), key
            assert entry.get("verdict", VERDICTS[0]) in VERDICTS
    assert m["n_verdicts"] == len(m["verdicts"]) == 2 * len(judged) and set(m["verdicts"].values()) <= set(VERDICTS)
    # The CoT* arm: the CoT arm's adapter evaluated again (not trained), and the only one asked with the cue.
    assert m["same_adapter"] == {"+ CoT data, CoT* prompt": True}
    assert m["status"] == {"instructions": "trained", "+ CoT data": "trained", "+ CoT data, CoT* prompt": "evaluated"}
    assert m["cue_counts"] == {name: {"asked": 30, "with_cue": 30 if name.endswith("CoT* prompt") else 0}
                               for name in against}
    example = m["worked_example"]  # the first Belle math item, the same for every arm
    assert example["reference"] == "面积是96平方厘米，周长是40厘米"  # final_answer read the reference's "答：..."
    assert set(example["final_answers"]) == set(against)
    assert all(n > 0 for n in example["n_chars"].values())
    assert m["n_instructions"] == 30 and m["n_exam"] == 24 and "cannot test this finding" in m["conclusion"]["text"]


def _check_human_values(m):
    from helpers.arms import VERDICTS

    arms = {"without values", "with values"}
    assert set(m["arms"]) == set(m["safety"]) == arms
    for entries in m["arms"].values():
        for key in ("tuned/belle/rouge_l_chars", "tuned/exam/generate/0-shot"):
            _check_triple(entries[key]["mean"])
    for name, entries in m["safety"].items():  # smoke has no judge: the rule's rows only
        assert set(entries) == {"tuned/harmful/refusal_rule", "tuned/harmless/refusal_rule"}
        for key, entry in entries.items():
            _check_triple(entry["mean"])  # a rate in [0, 100] inside its interval
            assert entry["n"] == (65 if "/harmful/" in key else 60)
            if name == "with values":  # paired against the arm without value data, with a verdict
                assert entry["against"] == "without values" and entry["verdict"] in VERDICTS
                _check_triple(entry["diff"], -100, 100)
    assert m["safety"]["with values"]["tuned/harmless/refusal_rule"]["verdict"] == VERDICTS[5]  # no expected sign
    assert m["held_aside"] == {"prompts_checked": {a: 125 for a in arms}, "leaks": 0, "n_harmful": 65,
                               "n_harmless": 60}
    rule = m["rule"]
    _check_triple(rule["false_positive_rate"])
    _check_triple(rule["agreement"])
    assert rule["n_benign_replies"] == 60 and rule["n_labelled"] == 40
    assert m["n_verdicts"] == len(m["verdicts"]) == 4 and set(m["verdicts"].values()) <= set(VERDICTS)
    assert m["judge"] == "none" and "cannot test this finding" in m["conclusion"]["text"]


CHECKS = {"00_quickstart": _check_quickstart, "08_evaluation": _check_evaluation,
          "01_choosing_a_base": _check_choosing_a_base, "02_peft_methods": _check_peft_methods,
          "03_data_types": _check_data_types, "04_chain_of_thought": _check_chain_of_thought,
          "05_vocabulary": _check_vocabulary, "06_prompt_language": _check_prompt_language,
          "07_human_values": _check_human_values}


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
