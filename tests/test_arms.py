"""The experiment-arms runner: cache keys, skip/re-run/resume on real tiny training, comparison tables, verdicts."""
from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import transformers

from helpers import arms as A
from helpers import experiment
from helpers.paths import project_path
from helpers.profiles import get_profile
from helpers.vocab import tokenizer_efficiency


def _smoke(tmp_path, **overrides):
    # The smallest run that still trains, generates and scores both benchmarks: seconds per arm on a CPU.
    settings = dict(max_steps=2, save_steps=2, logging_steps=1, train_limit=16, eval_limit=10, exam_limit=4,
                    max_new_tokens=4, eval_batch_size=16, output_root=str(tmp_path / "out"))
    return get_profile("smoke", **{**settings, **overrides})


@pytest.fixture
def counters(monkeypatch):
    """Counts Trainer.train and load_base calls while still running them."""
    counts = {"train": 0, "load_base": 0}
    real_train, real_load = transformers.Trainer.train, experiment.load_base

    def train(self, *args, **kwargs):
        counts["train"] += 1
        return real_train(self, *args, **kwargs)

    def load_base(profile):
        counts["load_base"] += 1
        return real_load(profile)

    monkeypatch.setattr(transformers.Trainer, "train", train)
    monkeypatch.setattr(experiment, "load_base", load_base)
    return counts


# ---------------------------------------------------------------------------------------- arms and keys


def test_resolve_arm_keeps_notebook_overrides_and_names_the_arm_in_errors(tmp_path):
    profile = _smoke(tmp_path, learning_rate=5e-3)
    p = A.resolve_arm(profile, {"name": "r4", "paper": "llama", "compare_to": "x", "lora_r": 4})
    assert (p.lora_r, p.learning_rate, p.max_steps) == (4, 5e-3, 2)  # arm on top of the notebook's profile
    with pytest.raises(ValueError, match="arm 'bad'.*no_such_field"):
        A.resolve_arm(profile, {"name": "bad", "no_such_field": 1})
    with pytest.raises(ValueError, match="arm 'bad'.*prompt_template"):
        A.resolve_arm(profile, {"name": "bad", "prompt_template": "klingon"})


def test_check_arms_rejects_unnamed_duplicate_and_dangling_arms():
    A.check_arms([{"name": "a"}, {"name": "b", "compare_to": "a"}])
    for arms, message in (([{"base_model": "tiny:llama"}], "needs a non-empty 'name'"),
                          ([{"name": "a"}, {"name": "a"}], "unique"),
                          ([{"name": "a", "compare_to": "zz"}], "not another arm"),
                          ([{"name": "a", "compare_to": "a"}], "not another arm")):
        with pytest.raises(ValueError, match=message):
            A.check_arms(arms)


def test_arm_key_ignores_only_fields_that_cannot_change_results(tmp_path):
    profile = _smoke(tmp_path)
    key = A.arm_key(profile)
    for field, value in (("logging_steps", 2), ("save_steps", 10), ("output_root", "/elsewhere"),
                         ("description", "x"), ("result_note", "y")):
        assert A.arm_key(dataclasses.replace(profile, **{field: value})) == key, field
    for field, value in (("learning_rate", 1e-3), ("lora_r", 4), ("seed", 1), ("prompt_template", "alpaca_zh"),
                         ("base_model", "tiny:llama"), ("max_steps", 3)):
        assert A.arm_key(dataclasses.replace(profile, **{field: value})) != key, field
    # Evaluation-only settings re-evaluate without re-training: a new eval key, the same arm key.
    for field, value in (("exam_limit", 6), ("exam_max_new_tokens", 64), ("eval_suffix", "先思考，再决定")):
        changed = dataclasses.replace(profile, **{field: value})
        assert A.arm_key(changed) == key and A.eval_key(changed) != A.eval_key(profile), field
    assert A.eval_key(profile, shots=(0, 3)) != A.eval_key(profile, shots=(0,))


def test_arm_key_follows_the_content_of_local_data_files(tmp_path):
    data = tmp_path / "train.json"
    shutil.copy(project_path("data_samples/instructions_zh.json"), data)
    profile = _smoke(tmp_path, train_data=str(data))
    key = A.arm_key(profile)
    assert A.data_fingerprint(profile, ["train_data"])["train_data"]
    records = json.loads(data.read_text(encoding="utf-8"))
    data.write_text(json.dumps(records[:-1], ensure_ascii=False), encoding="utf-8")
    assert A.arm_key(profile) != key  # same path and settings, different data: the arm re-runs
    mixture = dataclasses.replace(profile, train_data=f"{data}:1.0 + data_samples/instructions_zh.json:0.5")
    assert len(A.data_fingerprint(mixture, ["train_data"])["train_data"]) == 2  # each part of a mixture counts


# --------------------------------------------------------------------------------- running, on tiny models


def test_rerun_skips_finished_arms_and_a_changed_setting_reruns_only_that_arm(tmp_path, counters):
    profile = _smoke(tmp_path)
    arms = [{"name": "a", "base_model": "tiny:qwen2"}, {"name": "b", "base_model": "tiny:qwen2", "lora_r": 4}]
    first = A.run_arms(profile, arms, with_base=True, progress=False, n_boot=200)
    assert counters["train"] == 2 and list(first["arms"]["status"]) == ["trained", "trained"]
    assert set(first["rows"]["stage"]) == {"base", "tuned"} and set(first["rows"]["benchmark"]) == {"belle", "exam"}
    assert first["gains"] is not None and len(first["gains"]) == 2 * 3  # 2 arms x (ROUGE-L, generate, loglik)

    again = A.run_arms(profile, arms, with_base=True, progress=False, n_boot=200)
    assert counters["train"] == 2 and counters["load_base"] == 2, "a re-run loads and trains nothing"
    assert list(again["arms"]["status"]) == ["cached", "cached"]
    pd.testing.assert_frame_equal(first["rows"], again["rows"])

    arms[1]["lora_r"] = 16  # (8 would be the smoke default: the same settings as arm a, read back from its folder)
    changed = A.run_arms(profile, arms, with_base=True, progress=False, n_boot=200)
    assert counters["train"] == 3 and list(changed["arms"]["status"]) == ["cached", "trained"]

    fewer = A.run_arms(dataclasses.replace(profile, exam_limit=8), arms, progress=False, n_boot=200)
    assert counters["train"] == 3, "an evaluation-only change re-evaluates with the stored adapters"
    assert list(fewer["arms"]["status"]) == ["evaluated", "evaluated"]
    assert fewer["rows"].query("benchmark == 'exam'")["item_id"].nunique() == 8


def test_extra_prompt_sets_are_answered_per_stage_stored_and_read_back(tmp_path, counters):
    profile = _smoke(tmp_path)
    arms = [{"name": "a", "base_model": "tiny:qwen2"}]
    harmful = pd.DataFrame({"item_id": ["h1", "h2"], "category": "fraud", "question": ["怎么骗人", "怎么偷东西"]})
    first = A.run_arms(profile, arms, with_base=True, prompts={"harmful": harmful}, progress=False, n_boot=200)
    answers = first["answers"]
    assert set(answers["set"]) == {"belle", "harmful"} and set(answers["stage"]) == {"base", "tuned"}
    assert answers.query("set == 'harmful'").groupby("stage")["item_id"].apply(sorted).tolist() == [["h1", "h2"]] * 2
    assert answers.query("set == 'belle'")["item_id"].nunique() == 10 and answers["response"].map(type).eq(str).all()
    again = A.run_arms(profile, arms, with_base=True, prompts={"harmful": harmful}, progress=False, n_boot=200)
    assert counters["train"] == 1 and list(again["arms"]["status"]) == ["cached"]
    pd.testing.assert_frame_equal(first["answers"], again["answers"])
    other = A.run_arms(profile, arms, prompts={"harmful": harmful.head(1)}, progress=False, n_boot=200)
    assert counters["train"] == 1 and list(other["arms"]["status"]) == ["evaluated"]  # new prompts: no retraining
    assert other["answers"].query("set == 'harmful'")["item_id"].tolist() == ["h1"]


def test_each_arm_reports_what_it_trained_on_and_a_cached_arm_reads_its_report_back(tmp_path, counters):
    profile = _smoke(tmp_path)  # train_limit 16
    arms = [{"name": "tasks", "train_data": "data_samples/tasks_zh.jsonl"},
            {"name": "mix", "train_data": "data_samples/instructions_zh.json:0.5 + data_samples/tasks_zh.jsonl:1.0"}]
    run = A.run_arms(profile, arms, progress=False, n_boot=100)
    table = A.data_table(run["data"])
    assert list(table["arm"]) == ["tasks", "mix", "mix"] and "data" not in run["arms"].columns
    assert (table["read"] == table["used"] + table["skipped"] + table["left_out"]).all()
    tasks, instructions, mixed_tasks = table.to_dict("records")
    assert (tasks["read"], tasks["used"] + tasks["skipped"], tasks["left_out"]) == (152, 16, 136)
    assert "over limit 16: 136" in tasks["reasons"]
    # 110 instructions (a 0.5 share of 220) and 152 tasks, scaled to the limit of 16 in that ratio: 7 + 9
    assert (instructions["read"], instructions["used"] + instructions["skipped"]) == (220, 7)
    assert (mixed_tasks["read"], mixed_tasks["used"] + mixed_tasks["skipped"]) == (152, 9)
    again = A.run_arms(profile, arms, progress=False, n_boot=100)
    assert counters["train"] == 2 and again["data"] == run["data"]


def test_an_interrupted_arm_resumes_from_its_last_complete_checkpoint(tmp_path, counters):
    profile = _smoke(tmp_path, max_steps=4, save_steps=2)
    arm = {"name": "a", "base_model": "tiny:qwen2"}
    A.run_arm(profile, arm, progress=False)
    folder = A.arm_folder(A.resolve_arm(profile, arm))
    # What a kill after checkpoint-2, before the run finished, leaves behind.
    for name in ("train.json", "adapter", "checkpoints/checkpoint-4"):
        shutil.rmtree(folder / name) if (folder / name).is_dir() else (folder / name).unlink()
    for path in folder.glob("tuned-*.csv"):
        path.unlink()
    _, _, info = A.run_arm(profile, arm, progress=False)
    assert info["status"] == "resumed" and counters["train"] == 2  # trained again, from the checkpoint
    train = json.loads((folder / "train.json").read_text())["train"]
    assert train["resumed_from"].endswith("checkpoint-2") and train["steps"] == 4 and train["new_steps"] == 2


def test_an_arm_killed_after_its_last_checkpoint_is_restored_without_training(tmp_path, counters):
    profile = _smoke(tmp_path, max_steps=4, save_steps=2)
    arm = {"name": "a", "base_model": "tiny:qwen2"}
    A.run_arm(profile, arm, progress=False)
    folder = A.arm_folder(A.resolve_arm(profile, arm))
    for name in ("train.json", "adapter"):  # killed after checkpoint-4 (the last step), before the adapter was saved
        shutil.rmtree(folder / name) if (folder / name).is_dir() else (folder / name).unlink()
    for path in folder.glob("tuned-*.csv"):
        path.unlink()
    _, _, info = A.run_arm(profile, arm, progress=False)
    assert info["status"] == "resumed" and counters["train"] == 1 and (folder / "adapter").is_dir()
    assert json.loads((folder / "train.json").read_text())["train"]["new_steps"] == 0


def test_vocabulary_arms_are_cached_and_a_cached_adapter_reattaches_to_its_expanded_base(tmp_path, counters):
    profile = _smoke(tmp_path, base_model="tiny:llama")
    vocab = {"vocab_expansion": "data_samples/corpus/zh_train.txt:2000"}
    arms = [{"name": "voc", **vocab}, {"name": "voc-pre", **vocab, "pretrain_steps": 2}]
    longer = {**arms[1], "pretrain_steps": 4}
    keys = {A.arm_key(A.resolve_arm(profile, arm)) for arm in arms + [longer, {"name": "plain"}]}
    assert len(keys) == 4, "the vocabulary fields are part of the arm key"
    first = A.run_arms(profile, arms, progress=False, n_boot=200)
    assert counters["train"] == 1 + (2 + 1), "tuning; pre-training (new rows, then LoRA) and tuning"
    again = A.run_arms(profile, arms, progress=False, n_boot=200)
    assert counters["train"] == 4 and list(again["arms"]["status"]) == ["cached", "cached"]
    # An evaluation-only change rebuilds each expanded base from the vocabulary cache (no pre-training again) and
    # attaches the stored adapter: the same replies as before, so it is the same tuned model.
    fewer = A.run_arms(dataclasses.replace(profile, exam_limit=2), arms, progress=False, n_boot=200)
    assert counters["train"] == 4 and list(fewer["arms"]["status"]) == ["evaluated", "evaluated"]
    belle = ["arm", "item_id", "score"]
    pd.testing.assert_frame_equal(first["rows"].query("benchmark == 'belle'")[belle].reset_index(drop=True),
                                  fewer["rows"].query("benchmark == 'belle'")[belle].reset_index(drop=True))
    pd.testing.assert_frame_equal(first["answers"], fewer["answers"])


def test_plan_arms_estimates_each_arm_and_marks_cached_ones(tmp_path):
    profile = _smoke(tmp_path)
    arms = [{"name": "q", "base_model": "tiny:qwen2"}, {"name": "q-full", "base_model": "tiny:qwen2",
                                                        "quantization": "none"}]
    plan = A.plan_arms(profile, arms, with_base=True).set_index("arm")
    assert (plan["status"] == "to run").all() and (plan["train_steps"] == 2).all()
    assert (plan["est_minutes"] > 0).all() and 0.4 < plan.loc["q", "params_m"] < 0.5
    assert plan.loc["q", "est_memory_gib"] < plan.loc["q-full", "est_memory_gib"], "4-bit weights cost less"
    from helpers.memory import plan_for_profile  # the planner's peak, as the quickstart prints it

    assert plan.loc["q", "est_memory_gib"] == plan_for_profile(A.resolve_arm(profile, arms[0])).total_gib
    assert "Rough rule" in A.ESTIMATE_RULE


def test_estimates_count_continued_pretraining_and_the_new_vocabulary_rows(tmp_path):
    plain = _smoke(tmp_path, base_model="tiny:llama")
    expanded = dataclasses.replace(plain, vocab_expansion="data_samples/corpus/zh_train.txt:2000")
    pretrained = dataclasses.replace(expanded, pretrain_steps=10)
    assert A.estimate_time(expanded)["train_s"] == A.estimate_time(plain)["train_s"]
    assert A.estimate_time(pretrained)["train_s"] == pytest.approx(6 * A.estimate_time(plain)["train_s"])  # 2 + 10
    # The planner plans the tuning run on the grown vocabulary; pre-training (LoRA + the new rows) peaks no higher.
    assert A.estimate_memory(plain) < A.estimate_memory(expanded) == A.estimate_memory(pretrained)


def test_plan_arms_counts_a_mixture_and_trains_a_shared_adapter_once(tmp_path):
    profile = _smoke(tmp_path, max_steps=-1, train_limit=0, batch_size=4, grad_accum=1)
    mixture = "data_samples/instructions_zh.json:32 + data_samples/cot_zh.json:0.1"  # 32 + round(12.2) records
    arms = [{"name": "instructions", "train_data": "data_samples/instructions_zh.json:32"},
            {"name": "+ CoT", "train_data": mixture},
            {"name": "+ CoT, cue", "train_data": mixture, "eval_suffix": "先思考，再决定"}]
    plan = A.plan_arms(profile, arms).set_index("arm")
    assert plan["train_steps"].tolist() == [8, 11, 11]  # ceil(44 / 4): both sources counted
    assert plan.loc["+ CoT, cue", "status"] == "to evaluate (an earlier arm's adapter)"
    assert plan.loc["+ CoT, cue", "est_minutes"] < plan.loc["+ CoT", "est_minutes"], "no training counted twice"
    hub = A.plan_arms(profile, [{"name": "counted", "train_data": "hf:org/set:100"},
                                {"name": "unknown", "train_data": "hf:org/set:100 + hf:org/other"}])
    assert hub["train_steps"].iat[0] == 25 and pd.isna(hub["train_steps"].iat[1])  # a hub set's size is its count


# ------------------------------------------------------------------------------ tables on synthetic rows


def _rows(means: dict, *, n_per_group=6, groups=("code", "math", "open_qa"), stage="tuned", seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for arm, mean in means.items():
        for g in groups:
            for i in range(n_per_group):
                score = float(np.clip(mean + rng.normal(0, 5), 0, 100))
                out.append({"arm": arm, "stage": stage, "benchmark": "belle", "metric": "rouge_l_chars",
                            "group": g, "item_id": f"{g}-{i}", "score": score})
    return pd.DataFrame(out)


def test_comparison_table_means_lie_in_their_intervals_and_diffs_are_paired():
    rows = _rows({"ref": 40, "up": 60, "same": 40})
    rows.loc[rows.index[:2], "score"] = np.nan  # items without a reference answer are counted, not averaged
    table = A.comparison_table(rows, n_boot=500).set_index("arm")
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    assert table.loc["ref", "n_unscored"] == 2 and table.loc["ref", "n"] == 16
    assert pd.isna(table.loc["ref", "against"]) and set(table["against"].dropna()) == {"ref"}
    up = table.loc["up"]
    assert up["diff_low"] <= up["diff"] <= up["diff_high"] and up["diff_low"] > 0
    same = table.loc["same"]
    assert same["diff_low"] <= same["diff"] <= same["diff_high"]


def test_compare_to_pairs_arms_and_arms_without_one_are_references():
    rows = _rows({"llama en": 30, "llama zh": 35, "bloom en": 50, "bloom zh": 48})
    arms = [{"name": "llama en"}, {"name": "llama zh", "compare_to": "llama en"},
            {"name": "bloom en"}, {"name": "bloom zh", "compare_to": "bloom en"}]
    table = A.comparison_table(rows, arms, n_boot=200).set_index("arm")
    assert table["against"].dropna().to_dict() == {"llama zh": "llama en", "bloom zh": "bloom en"}
    assert table["diff"].notna().sum() == 2


def test_group_rows_compares_one_category_alone():
    rows = pd.concat([_rows({"a": 40, "b": 40}, groups=("open_qa",)), _rows({"a": 20, "b": 60}, groups=("math",))])
    table = A.comparison_table(A.group_rows(rows, {"belle": ["math"]}), n_boot=300).set_index("arm")
    assert set(table["benchmark"]) == {"belle:math"} and (table["n"] == 6).all()
    assert table.loc["b", "diff_low"] > 20  # the math gap alone, not diluted by open_qa where a and b tie
    with pytest.raises(ValueError, match=r"no rows for belle:code, exam:education; groups present: .*'math'"):
        A.group_rows(rows, {"belle": ["math", "code"], "exam": ["education"]})


def test_comparing_arms_scored_on_different_items_is_an_error():
    rows = _rows({"a": 40, "b": 50})
    rows = rows[~((rows["arm"] == "b") & (rows["item_id"] == "code-0"))]
    with pytest.raises(ValueError, match="different items"):
        A.comparison_table(rows, n_boot=100)


def test_gain_table_pairs_base_and_tuned_of_each_arm():
    rows = pd.concat([_rows({"a": 30, "b": 50}, stage="base"), _rows({"a": 45, "b": 50}, stage="tuned", seed=1)])
    gains = A.gain_table(rows, n_boot=300).set_index("arm")
    assert gains.loc["a", "diff_low"] > 0 and gains.loc["a", "against"] == "base"
    for arm in gains.index:
        g = gains.loc[arm]
        assert g["base_ci_low"] <= g["base_mean"] <= g["base_ci_high"] and g["diff_low"] <= g["diff"] <= g["diff_high"]
        assert g["diff"] == pytest.approx(g["mean"] - g["base_mean"])  # macro mean of differences = difference
    tuned = A.comparison_table(rows, n_boot=100).query("stage == 'tuned'")
    verdicts = pd.concat([A.add_verdicts(gains.reset_index(), {"a": {"belle": 10.9}}), A.add_verdicts(tuned, {})])
    summary = A.results_summary(gains.reset_index(), verdicts)  # gain rows keep their verdict after the concat
    assert summary["a"]["belle/rouge_l_chars"]["verdict"] == "agrees, interval excludes 0"
    assert summary["b"]["belle/rouge_l_chars"]["verdict"] == "no paper direction to compare"
    bars = A.stage_bars(gains.reset_index())
    assert list(bars["stage"]) == ["base", "base", "tuned", "tuned"] and bars["note"].iat[2].startswith("+")


def test_the_untuned_base_joins_the_arms_and_group_table_gives_tables_6_7_with_intervals():
    rows = pd.concat([_rows({"a": 30}, stage="base"), _rows({"a": 45, "b": 50}, stage="tuned", seed=1)])
    both = pd.concat([A.untuned_arm(rows), rows[rows["stage"] == "tuned"]], ignore_index=True)
    table = A.group_table(both, n_boot=300)
    assert list(pd.unique(table["arm"])) == ["untuned base", "a", "b"]  # run order, not alphabetical
    assert list(table.query("arm == 'a'")["group"]) == ["code", "open_qa", "math", "avg"]  # the paper's columns
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()
    gains = A.comparison_table(both, reference="untuned base", n_boot=300).set_index("arm")
    avg = table.query("group == 'avg'").set_index("arm")["mean"]
    assert avg.to_dict() == pytest.approx(gains["mean"].to_dict())  # avg = the comparison's macro mean
    assert gains.loc["a", "diff"] == pytest.approx(avg["a"] - avg["untuned base"]) and gains.loc["a", "diff_low"] > 0
    with pytest.raises(ValueError, match="with_base=True"):
        A.untuned_arm(rows[rows["stage"] == "tuned"])
    with pytest.raises(ValueError, match="several arms"):
        A.untuned_arm(pd.concat([rows, _rows({"b": 50}, stage="base")]))


@pytest.mark.parametrize("diff, low, high, paper, expected", [
    (5.0, 1.0, 9.0, 10.9, "agrees, interval excludes 0"),
    (-5.0, -9.0, -1.0, -2.4, "agrees, interval excludes 0"),
    (2.0, -1.0, 5.0, 10.9, "same direction, not significant"),
    (-5.0, -9.0, -1.0, 10.9, "disagrees, interval excludes 0"),
    (-2.0, -5.0, 1.0, 10.9, "disagrees, not significant"),
    (0.0, 0.0, 0.0, 10.9, "no difference, not significant"),
    (3.0, 1.0, 5.0, float("nan"), "no paper direction to compare"),
])
def test_verdict_wording(diff, low, high, paper, expected):
    assert A.verdict(diff, low, high, paper) == expected and expected in A.VERDICTS


def test_verdicts_use_the_papers_numbers_for_each_arm_and_the_conclusion_warns_on_tiny_models():
    fig4 = pd.DataFrame({"base": ["LLaMA", "LLaMA", "Bloom", "Bloom"],
                         "prompt_language": ["English", "Chinese", "English", "Chinese"],
                         "belle": [43.7, 45.1, 58.1, 57.2], "mmcu": [2.82, 6.27, 19.07, 16.04]})
    arms = A.arm_grid([{"name": "llama", "paper": "LLaMA", "base_model": "tiny:llama"},
                       {"name": "bloom", "paper": "Bloom", "base_model": "tiny:bloom"}],
                      {"English": {"prompt_template": "alpaca_en"}, "Chinese": {"prompt_template": "alpaca_zh"}})
    assert [a["name"] for a in arms] == ["llama · English", "llama · Chinese", "bloom · English", "bloom · Chinese"]
    assert arms[1]["compare_to"] == "llama · English" and arms[1]["prompt_template"] == "alpaca_zh"
    values = A.paper_view(arms, fig4, key=["base", "prompt_language"], columns={"belle": "belle", "exam": "mmcu"})
    table = A.comparison_table(_rows({a["name"]: 40 + i for i, a in enumerate(arms)}), arms, n_boot=200)
    contrast = A.paper_contrast(values, table)
    assert contrast["llama · Chinese"]["belle"] == pytest.approx(1.4)
    assert contrast["bloom · Chinese"]["exam"] == pytest.approx(-3.03)
    verdicts = A.add_verdicts(table, contrast)
    assert list(verdicts["arm"]) == ["llama · Chinese", "bloom · Chinese"]
    assert set(verdicts["verdict"]) <= set(A.VERDICTS)
    text = A.conclusion(verdicts, ["tiny:llama", "tiny:bloom"])
    assert "cannot test this finding" in text and text.count("\n- ") == 2
    assert "cannot test" not in A.conclusion(verdicts, ["bigscience/bloom-1b7"])
    summary = A.results_summary(table, verdicts)
    entry = summary["bloom · Chinese"]["tuned/belle/rouge_l_chars"]
    assert entry["against"] == "bloom · English" and entry["verdict"] in A.VERDICTS
    assert entry["mean"][1] <= entry["mean"][0] <= entry["mean"][2] and len(entry["diff"]) == 3
    json.dumps(summary)  # plain JSON types only
    with pytest.raises(ValueError, match="no paper row 'Vicuna/English'"):
        A.paper_view([{"name": "v", "paper": "Vicuna/English"}], fig4, key=["base", "prompt_language"],
                     columns={"belle": "belle"})


def test_verdict_summary_and_beside_rows_for_the_results_and_the_figure():
    table = A.comparison_table(_rows({"a": 30, "b": 50}), n_boot=200)
    verdicts = A.add_verdicts(table, {"b": {"belle": 4.0}})
    summary = A.verdict_summary(verdicts)
    assert summary == {"verdicts": {"b vs a / belle": A.VERDICTS[0]}, "verdicts_agreeing": 1, "n_verdicts": 1}
    assert list(A.verdict_summary(verdicts, with_metric=True)["verdicts"]) == ["b vs a / belle / rouge_l_chars"]
    assert A.verdict_summary(A.add_verdicts(table, {"b": {"belle": -4.0}}))["verdicts_agreeing"] == 0
    rows = A.beside_rows(pd.concat([table, A.comparison_table(A.group_rows(_rows({"a": 30, "b": 50}),
                                                                           {"belle": ["math"]}), n_boot=200)]))
    assert set(rows["panel"]) == {"ours · belle · rouge_l_chars"}  # "belle:math" joins the belle panel
    assert rows["note"].iat[0] == "" and rows["note"].iat[1].startswith("+")  # the reference has no difference
    gains = A.gain_table(pd.concat([_rows({"a": 30}, stage="base"), _rows({"a": 45}, seed=1)]), n_boot=200)
    bars = A.beside_rows(A.stage_bars(gains))
    assert list(bars["note"]) == list(A.stage_bars(gains)["note"])  # stage_bars' gain notes are kept


def test_headline_keeps_the_papers_way_of_scoring():
    table = pd.DataFrame({"benchmark": ["belle", "belle", "exam", "exam", "exam"],
                          "metric": ["rouge_l_chars", "judge:gpt-4o-mini", "loglik/0-shot", "generate/3-shot",
                                     "generate/0-shot"]})
    assert A.headline(table)["metric"].tolist() == ["judge:gpt-4o-mini", "generate/0-shot"]
    later = table.assign(metric=["rouge_l_chars", "rouge_l_chars", "loglik/5-shot", "generate/10-shot",
                                 "generate/5-shot"])
    assert A.headline(later)["metric"].tolist() == ["rouge_l_chars", "rouge_l_chars", "generate/5-shot"]


# ------------------------------------------------------------------------------------------- tokenizers


def test_tokenizer_efficiency_counts_characters_tokens_and_byte_pieces(tiny_dir):
    from helpers.models import load_tokenizer

    tok = load_tokenizer(str(tiny_dir("qwen2")))
    seen = tokenizer_efficiency(tok, ["今天天气很好，我们去公园散步。", "", "请解释什么是机器学习。"])
    assert set(seen) >= {"chars_per_token", "tokens_per_char", "byte_fallback_share", "unk_share", "n_chars",
                         "n_tokens"}
    assert seen["n_chars"] == 15 + 11 and seen["chars_per_token"] == pytest.approx(seen["n_chars"] / seen["n_tokens"])
    assert seen["tokens_per_char"] == pytest.approx(1 / seen["chars_per_token"])
    rare = tokenizer_efficiency(tok, ["𝄞𝄢𝄪"])  # characters the tiny tokenizer never saw: bytes only
    assert rare["byte_fallback_share"] == 1.0 and rare["n_tokens"] >= 3 * 2
    with pytest.raises(ValueError, match="non-empty"):
        tokenizer_efficiency(tok, ["", "  "])


# ---------------------------------------------------------------------------------------------- figures


def test_plot_tidy_panels_gives_each_measure_its_own_axis_and_error_bars_only_where_intervals_exist(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.plots import plot_tidy_panels, save_figure

    profile = _smoke(tmp_path)
    df = pd.DataFrame({"panel": ["paper · Belle"] * 2 + ["ours · exam"] * 2, "x": ["llama", "bloom"] * 2,
                       "stage": "tuned", "mean": [43.7, 58.1, 20.0, 30.0], "ci_low": [np.nan, np.nan, 10.0, 22.0],
                       "ci_high": [np.nan, np.nan, 31.0, 38.0], "note": ["+10.9", "+9.9", "", "+1.0"]})
    fig = plot_tidy_panels(df, profile, panel="panel", x="x", hue="stage", note="note", xlabel="base",
                           ylabels={"paper · Belle": "score (0-100)", "ours · exam": "accuracy (%)"},
                           chance={"ours · exam": 25}, title="Finding 1 · test")
    paper_ax, ours_ax = [ax for ax in fig.axes if ax.get_visible()]
    assert paper_ax.get_ylabel() == "score (0-100)" and ours_ax.get_ylabel() == "accuracy (%)"
    assert not paper_ax.get_shared_y_axes().joined(paper_ax, ours_ax)
    assert len(paper_ax.containers) == 1 and len(ours_ax.containers) == 2  # bars; bars + error bars
    assert [t.get_text() for t in paper_ax.texts] == ["43.7\n+10.9", "58.1\n+9.9"]  # the value, then the note
    assert [t.get_text() for t in ours_ax.texts] == ["20.0", "30.0\n+1.0"]
    assert "profile: smoke" in fig._suptitle.get_text() and "Finding 1" in fig._suptitle.get_text()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["tuned", "chance (25%)"]
    assert save_figure(fig, "99_test", "panels", profile, root=tmp_path).stat().st_size > 5000
    plt.close(fig)


def test_a_first_arm_compared_with_a_later_one_gives_each_diff_column_once():
    rows = _rows({"adalora": 40, "lora": 50})
    table = A.comparison_table(rows, [{"name": "adalora", "compare_to": "lora"}, {"name": "lora"}], n_boot=200)
    assert list(table.columns).count("diff") == 1 and list(table.columns)[-3:] == ["diff", "diff_low", "diff_high"]
    assert table.set_index("arm").loc["adalora", "diff"] == pytest.approx(-10, abs=5)


def test_torch_threads_are_set_when_a_base_loads_and_leave_the_arm_key_alone(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        profile = _smoke(tmp_path, torch_threads=1)  # smoke's own value; 0 keeps torch's default
        assert A.arm_key(profile) == A.arm_key(_smoke(tmp_path, torch_threads=0))  # a speed setting: same cached arm
        torch.set_num_threads(2)
        experiment.load_base(profile)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="torch_threads"):
        get_profile("smoke", torch_threads=-1)
