"""Our log-likelihood exam scoring equals lm-evaluation-harness's on the same tiny model, items and prompt.

The task YAML below is lm-eval's `cmmlu` template (header, question, "A. .."-"D. ..", "答案：", choices A-D,
first-n exemplars from the dev split) run over local files, with one change of method made explicit:
`target_delimiter: ""`. lm-eval's stock cmmlu / ceval-valid tasks keep the default " ", i.e. they score
" A" after "答案：" and write exemplars as "答案： A"; score_mc_loglik scores "A" ("答案：A", as Chinese exams
are written). With the delimiter aligned, contexts, per-item log-likelihoods, choices and accuracy agree.
"""
from __future__ import annotations

import json

import lm_eval
import numpy as np
import pytest

from helpers.eval_sets import load_exam
from helpers.evaluate import OPTION_LETTERS, SUBJECT_NAMES_ZH, mc_prompts, score_mc_loglik

QUESTIONS = [  # (question, A, B, C, D, answer): single-answer items, as lm-eval's doc_to_target needs
    ("正常成人的心率范围约为每分钟多少次", "20~40", "60~100", "120~160", "180~220", "B"),
    ("人体最大的器官是", "皮肤", "肝脏", "肺", "心脏", "A"),
    ("缺乏维生素C可引起", "夜盲症", "佝偻病", "坏血病", "脚气病", "C"),
    ("胰岛素由哪种细胞分泌", "α细胞", "δ细胞", "PP细胞", "β细胞", "D"),
    ("红细胞的主要功能是", "运输氧气", "凝血", "免疫", "分泌激素", "A"),
    ("成人正常体温（腋下）约为", "34℃", "36~37℃", "39℃", "41℃", "B"),
]
DEV = [
    ("血液pH值约为", "6.4", "7.4", "8.4", "5.4", "B"),
    ("骨骼肌属于", "横纹肌", "平滑肌", "心肌", "以上都不是", "A"),
    ("负责气体交换的器官是", "胃", "肾", "肺", "脾", "C"),
]


def _cmmlu_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",Question,A,B,C,D,Answer"] + [f"{i}," + ",".join(r) for i, r in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_fp32(tiny_dir):
    from helpers.models import load_model, load_tokenizer

    path = str(tiny_dir("qwen2"))
    return load_model(path, quantization="none", compute_dtype="float32"), load_tokenizer(path)


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    """CMMLU's layout (test/ and dev/ folders of <subject>.csv), loaded by our loader."""
    root = tmp_path_factory.mktemp("cmmlu") / "data"
    _cmmlu_csv(root / "test" / "clinical_knowledge.csv", QUESTIONS)
    _cmmlu_csv(root / "dev" / "clinical_knowledge.csv", DEV)
    return load_exam(root), load_exam(root, split="dev")


def _lm_eval_task(name, exam_df, dev_df, shots, folder):
    """lm-eval's cmmlu template over the same items, as an inline task config."""
    data = {}
    for split, df in (("test", exam_df), ("dev", dev_df)):
        data[split] = str(folder / f"{name}-{split}.jsonl")
        records = df.assign(subject_zh=df["subject"].map(SUBJECT_NAMES_ZH)).to_dict("records")
        (folder / f"{name}-{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return {
        "task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": data},
        "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
        "num_fewshot": shots, "output_type": "multiple_choice",
        "description": "以下是关于{{subject_zh}}的单项选择题，请直接给出正确答案的选项。\n\n",
        "doc_to_text": "{{question}}\nA. {{A}}\nB. {{B}}\nC. {{C}}\nD. {{D}}\n答案：",
        "doc_to_choice": list(OPTION_LETTERS), "doc_to_target": "{{['A', 'B', 'C', 'D'].index(answer)}}",
        "target_delimiter": "",  # the one difference of method: lm-eval's stock tasks use " "
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }


@pytest.fixture(scope="module")
def lm_eval_out(tiny_fp32, exam, tmp_path_factory):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    model, tok = tiny_fp32
    folder = tmp_path_factory.mktemp("lm-eval-data")
    tasks = [_lm_eval_task(f"zh_exam_{k}shot", *exam, k, folder) for k in (0, 2)]
    return lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tok, batch_size=4), tasks=tasks, log_samples=True,
        bootstrap_iters=0, task_manager=TaskManager(include_defaults=False))  # no index of its 10k built-in tasks


@pytest.mark.parametrize("shots", [0, 2])
def test_loglik_scoring_equals_lm_eval(tiny_fp32, exam, lm_eval_out, shots):
    model, tok = tiny_fp32
    exam_df, dev_df = exam
    task = f"zh_exam_{shots}shot"
    samples = sorted(lm_eval_out["samples"][task], key=lambda s: s["doc_id"])
    ours = score_mc_loglik(model, tok, exam_df, shots=shots, dev_df=dev_df, batch_size=4)
    # the same prompt, character for character, and the same continuations
    contexts = [s["arguments"][0][0] for s in samples]
    assert contexts == mc_prompts(exam_df, shots=shots, dev_df=dev_df)
    assert all([a[1] for a in s["arguments"]] == list(OPTION_LETTERS) for s in samples)
    # per-item log-likelihoods and choices, then accuracy
    theirs = np.array([[ll for ll, _ in s["filtered_resps"]] for s in samples])
    np.testing.assert_allclose(ours[[f"ll_{x}" for x in OPTION_LETTERS]].to_numpy(), theirs, atol=1e-4)
    assert list(ours["pred"]) == [OPTION_LETTERS[i] for i in theirs.argmax(axis=1)]
    assert list(ours["correct"].astype(float)) == [s["acc"] for s in samples]
    assert ours["correct"].mean() == pytest.approx(lm_eval_out["results"][task]["acc,none"])


def test_run_lm_eval_reports_percent_with_intervals(tiny_fp32, monkeypatch):
    """The notebook-08 hook: lm-eval's own tasks (cmmlu, ceval-valid need the hub, so its result is faked)."""
    from helpers.evaluate import run_lm_eval

    calls = []

    def fake_evaluate(model, tasks, num_fewshot, limit, log_samples):
        calls.append((type(model).__name__, tasks, num_fewshot, limit))
        return {"results": {"cmmlu": {"acc,none": 0.25, "acc_stderr,none": "N/A", "acc_norm,none": 0.3},
                            "cmmlu_agronomy": {"acc,none": 0.5, "acc_stderr,none": 0.05}},
                "n-samples": {"cmmlu_agronomy": {"original": 169, "effective": 10}}}

    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_evaluate)
    table = run_lm_eval(*tiny_fp32, tasks=("cmmlu",), num_fewshot=5, limit=10).set_index("task")
    assert calls == [("HFLM", ["cmmlu"], 5, 10)]
    assert table.loc["cmmlu_agronomy", ["n", "accuracy", "ci_low", "ci_high"]].tolist() == pytest.approx(
        [10, 50.0, 50 - 1.96 * 5, 50 + 1.96 * 5])
    assert table.loc["cmmlu", "accuracy"] == 25.0 and np.isnan(table.loc["cmmlu", "ci_low"])  # no stderr: no CI
    assert table.loc["cmmlu", "acc_norm"] == pytest.approx(30.0)
