"""helpers.evaluate: ROUGE-L, answer extraction, exam prompts, log-likelihood scoring, summary tables."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch


from helpers import evaluate
from helpers.eval_sets import load_exam
from helpers.evaluate import (
    OPTION_LETTERS, build_mc_prompt, category_table, extract_choice, mc_accuracy_table, mc_prompts,
    rouge_l_chars, score_choices, score_choices_naive, score_mc_generate, score_mc_loglik, score_offline,
    score_with_judge,
)

ROOT = Path(__file__).resolve().parents[1]

FIX = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer): a random tiny Qwen2 in fp32, full precision, built in a private temp dir."""
    from helpers.models import load_model, load_tokenizer
    from helpers.tiny import build_tiny_model

    path = str(build_tiny_model("qwen2", root=tmp_path_factory.mktemp("tiny-models")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: extra threads only add contention on a shared 2-core machine
    yield load_model(path, quantization="none", compute_dtype="float32"), load_tokenizer(path)
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def exam():
    return load_exam(FIX / "eval_exam_sample.jsonl")


def by_hand(model, tokenizer, context: str, option: str) -> float:
    """log P(option | context) from one plain forward pass over the concatenated text."""
    full = tokenizer(context + option, add_special_tokens=False)["input_ids"]
    n_ctx = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    assert full[:n_ctx] == tokenizer(context, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([full])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    targets = torch.tensor(full[n_ctx:])
    return float(logprobs[n_ctx - 1:len(full) - 1].gather(1, targets[:, None]).sum())


# ------------------------------------------------------------------------------ log-likelihoods

def test_loglik_matches_independent_computation(tiny, exam, monkeypatch):
    model, tok = tiny
    contexts = mc_prompts(exam, shots=1, dev_df=exam)  # contexts of different lengths: padding matters
    expected = np.array([[by_hand(model, tok, c, letter) for letter in OPTION_LETTERS] for c in contexts])
    general = score_choices(model, tok, contexts, batch_size=4, fast=False)
    with monkeypatch.context() as patch:  # single-token letters must take the one-pass fast path
        patch.setattr(evaluate, "_score_general", lambda *a: pytest.fail("general path with one-token options"))
        fast = score_choices(model, tok, contexts, batch_size=4)
    naive = score_choices_naive(model, tok, contexts)
    np.testing.assert_allclose(fast, expected, atol=1e-4)
    np.testing.assert_allclose(general, expected, atol=1e-4)
    np.testing.assert_allclose(naive, expected, atol=1e-4)
    np.testing.assert_allclose(fast, general, atol=1e-5)


def test_multi_token_options_take_the_general_path(tiny, exam, monkeypatch):
    model, tok = tiny
    options = ("甲", "选项乙", "第三个选项比较长", "D")
    assert len({len(tok(o, add_special_tokens=False)["input_ids"]) for o in options}) > 1
    monkeypatch.setattr(evaluate, "_score_single_token", lambda *a: pytest.fail("fast path with long options"))
    contexts = mc_prompts(exam)
    got = score_choices(model, tok, contexts, letters=options, batch_size=3)
    expected = [[by_hand(model, tok, c, o) for o in options] for c in contexts]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_batch_size_does_not_change_scores(tiny, exam):
    model, tok = tiny
    contexts = mc_prompts(exam, shots=2, dev_df=exam)
    np.testing.assert_allclose(score_choices(model, tok, contexts, batch_size=1),
                               score_choices(model, tok, contexts, batch_size=6), atol=1e-5)


@pytest.fixture
def favour_c(tiny, exam):
    """Bias the lm_head so the token that spells "C" after "答案：" wins by a wide margin."""
    model, tok = tiny
    context = mc_prompts(exam.head(1))[0]
    n_ctx = len(tok(context, add_special_tokens=False)["input_ids"])
    c_ids = tok(context + "C", add_special_tokens=False)["input_ids"][n_ctx:]
    assert len(c_ids) == 1
    bias = torch.zeros(model.config.vocab_size)
    bias[c_ids[0]] = 50.0
    handle = model.lm_head.register_forward_hook(lambda module, args, out: out + bias)
    yield model, tok
    handle.remove()


def test_loglik_picks_the_forced_answer(favour_c, exam):
    model, tok = favour_c
    out = score_mc_loglik(model, tok, exam, batch_size=4)
    assert list(out.columns) == ["item_id", "subject", "mode", "shots", "pred", "answer", "correct",
                                 "ll_A", "ll_B", "ll_C", "ll_D"]
    assert set(out["pred"]) == {"C"} and set(out["mode"]) == {"loglik"}
    assert (out["ll_C"] > -1e-3).all()  # nearly all probability mass
    assert list(out["correct"]) == [a == "C" for a in exam["answer"]]


def test_generate_mode_picks_the_forced_answer(favour_c, exam):
    model, tok = favour_c
    out = score_mc_generate(model, tok, exam, template="raw", max_new_tokens=3, progress=False)
    assert set(out["pred"]) == {"C"} and set(out["mode"]) == {"generate"}
    assert out["reply"].str.startswith("C").all()


def test_generate_mode_with_chat_template_and_shots(tiny, exam):
    model, tok = tiny
    out = score_mc_generate(model, tok, exam.head(2), shots=1, dev_df=exam, max_new_tokens=2, progress=False)
    assert list(out["shots"]) == [1, 1] and out["pred"].map(lambda p: set(p) <= set("ABCD")).all()


# --------------------------------------------------------------------------------------- prompts

def test_build_mc_prompt_layout(exam):
    row, shots = exam.iloc[0], exam.iloc[[1, 2]]
    prompt = build_mc_prompt(row, shots)
    assert prompt.startswith("以下是关于医学的单项选择题，请直接给出正确答案的选项。\n\n我国的根本大法是\nA. 民法典\n")
    assert "D. 行政法\n答案：B\n\n" in prompt and "答案：B\n\n人体最大的腺体是\nA. 胰\nB. 肝\nC. 脾\nD. 甲状腺\n答案：" in prompt
    assert prompt.endswith("D. 甲状腺\n答案：")
    assert build_mc_prompt(row, eval_suffix="先思考，再决定").endswith("D. 甲状腺\n先思考，再决定\n答案：")


def test_mc_prompts_never_use_the_question_as_its_own_shot(exam):
    prompts = mc_prompts(exam, shots=1, dev_df=exam)
    for prompt, question in zip(prompts, exam["question"]):
        assert prompt.count(question) == 1
    # psychology has 2 items: each gets the other one as its same-subject exemplar
    assert "短时记忆的容量约为" in prompts[3] and "提出经典条件反射的是" in prompts[5]


def test_mc_prompts_need_enough_dev_items(exam):
    with pytest.raises(ValueError, match="dev_df"):
        mc_prompts(exam, shots=2)


# ------------------------------------------------------------------------------ extract_choice

@pytest.mark.parametrize("reply,expected", [
    ("B", "B"), ("答案是B", "B"), ("答案：C", "C"), ("答案为 D。", "D"), ("B. 宪法", "B"), ("(C)", "C"),
    ("（Ｃ）", "C"), ("选D", "D"), ("应该选择A", "A"), ("A和C", "AC"), ("答案：A、C", "AC"), ("CA", "AC"),
    ("CCCC", "C"), ("The answer is B.", "B"), ("", ""), ("我不知道", ""), ("Dogs are animals", ""),
    ("首先分析A选项不对，所以答案是C", "C"), ("【B】", "B"), ("我认为是 B 和 D", "BD"),
])
def test_extract_choice(reply, expected):
    assert extract_choice(reply) == expected


# ------------------------------------------------------------------------------------- ROUGE-L

@pytest.mark.parametrize("cand,ref,expected", [
    ("abc", "abc", 1.0),
    ("a b\tc\n", "abc", 1.0),  # whitespace is removed
    ("我爱北京", "我爱上海", 0.5),  # LCS 2: P = R = 1/2
    ("今天天气很好", "今天很好", 0.8),  # LCS 4: P = 2/3, R = 1
    ("ABCBDAB", "BDCABA", 8 / 13),  # LCS 4: P = 4/7, R = 4/6
    ("abc", "xyz", 0.0), ("", "abc", 0.0), ("abc", "", 0.0), ("  ", " ", 0.0),
])
def test_rouge_l_chars_exact(cand, ref, expected):
    assert rouge_l_chars(cand, ref) == pytest.approx(expected, abs=1e-12)


def _lcs_table(a: str, b: str) -> int:
    prev = [0] * (len(b) + 1)
    for ch in a:
        cur = [0]
        for j, other in enumerate(b):
            cur.append(prev[j] + 1 if ch == other else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def test_bit_parallel_lcs_matches_dynamic_programming():
    rng = random.Random(0)
    for _ in range(300):
        a = "".join(rng.choice("甲乙丙丁ab") for _ in range(rng.randint(1, 40)))
        b = "".join(rng.choice("甲乙丙丁ab") for _ in range(rng.randint(1, 40)))
        lcs = _lcs_table(a, b)
        expected = 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))  # F1 = 2*LCS / (|a| + |b|)
        assert rouge_l_chars(a, b) == pytest.approx(expected)


# ------------------------------------------------------------------------ scorers and tables

ANSWERS = pd.DataFrame({"item_id": ["1", "2", "3"], "category": ["math", "code", "math"],
                        "question": ["1+1=?", "写代码", "2+2=?"], "reference": ["2", "print(1)", "4"],
                        "response": ["2", "", "答案是5"]})


def test_score_offline():
    out = score_offline(ANSWERS)
    assert list(out.columns) == ["item_id", "category", "scorer", "score"]
    assert list(out["score"]) == [1.0, 0.0, 0.0] and set(out["scorer"]) == {"rouge_l_chars"}


def test_score_with_judge(monkeypatch):
    from helpers import judge
    from helpers.judge import JudgeSettings

    seen = []
    monkeypatch.setattr(judge, "judge_many", lambda settings, items, progress=True: seen.extend(items) or
                        [{"score": 0.1 * (i + 1)} for i in range(len(items))])
    out = score_with_judge(ANSWERS, JudgeSettings(base_url="http://127.0.0.1:9", model="judge-x"))
    assert seen[1] == {"category": "code", "question": "写代码", "reference": "print(1)", "response": ""}
    assert list(out["scorer"].unique()) == ["judge:judge-x"]
    assert out["score"].tolist() == pytest.approx([0.1, 0.2, 0.3])


def test_category_table_keeps_scorers_apart():
    rouge = pd.DataFrame({"item_id": list("abcd"), "category": ["math", "code", "math", "open qa"],
                          "scorer": "rouge_l_chars", "score": [1.0, 1.0, 1.0, 1.0]})
    judged = rouge.assign(scorer="judge:m", score=0.0)
    table = category_table(pd.concat([judged, rouge]), n_boot=200)
    assert list(table.columns) == ["scorer", "category", "n", "mean", "ci_low", "ci_high", "n_unscored"]
    assert list(table["category"]) == ["code", "math", "open qa", "avg"] * 2  # canonical order, avg last
    avg = table[table["category"] == "avg"].set_index("scorer")["mean"]
    assert avg.to_dict() == {"judge:m": 0.0, "rouge_l_chars": 100.0}


def test_mc_accuracy_table():
    df = pd.DataFrame({"item_id": list("abcdef"), "subject": ["law", "medicine", "law", "law", "medicine", "x"],
                       "mode": "loglik", "shots": 0, "correct": [True, False, True, False, True, True]})
    table = mc_accuracy_table(df, n_boot=200)
    assert list(table["subject"]) == ["medicine", "law", "x", "avg"]
    means = table.set_index("subject")["mean"]
    assert means["medicine"] == 50.0 and means["law"] == pytest.approx(200 / 3)
    assert means["avg"] == pytest.approx((50 + 200 / 3 + 100) / 3)  # mean of subjects, as the paper averages
    assert (table["ci_low"] <= table["mean"]).all() and (table["mean"] <= table["ci_high"]).all()


# ------------------------------------------------------------------ items without a reference (#7.2)

NO_REF = pd.DataFrame({"item_id": ["1", "2", "3", "4"], "category": ["math", "generation", "generation", "rewrite"],
                       "question": ["1+1=?", "写诗", "写信", "改写"], "reference": ["2", "", None, "  "],
                       "response": ["2", "一首诗", "", "改好了"]})


def test_items_without_a_reference_have_no_offline_score():
    out = score_offline(NO_REF)
    assert out["score"].iloc[0] == 1.0 and out["score"].iloc[1:].isna().all()  # not a structural 0


def test_category_table_counts_unscored_items_and_leaves_them_out_of_the_mean():
    rouge = score_offline(pd.concat([NO_REF, NO_REF.assign(item_id=["5", "6", "7", "8"],
                                                           response=["3", "x", "y", "z"])]))
    judged = rouge.assign(scorer="judge:m", score=0.5)  # a reference-free judge scores every item
    table = category_table(pd.concat([rouge, judged]), n_boot=200)
    assert list(table.columns) == ["scorer", "category", "n", "mean", "ci_low", "ci_high", "n_unscored"]
    r = table[table["scorer"] == "rouge_l_chars"].set_index("category")
    assert list(r.index) == ["math", "generation", "rewrite", "avg"]
    assert r.loc["math", ["n", "mean", "n_unscored"]].tolist() == [2, 50.0, 0]
    assert r.loc["generation", "n"] == 0 and r.loc["generation", "n_unscored"] == 4
    assert r.loc[["generation", "rewrite"], ["mean", "ci_low", "ci_high"]].isna().all().all()  # "n/a"
    assert r.loc["avg", ["n", "mean", "n_unscored"]].tolist() == [2, 50.0, 6]  # scored categories only
    j = table[table["scorer"] == "judge:m"].set_index("category")
    assert j["n_unscored"].sum() == 0 and j.loc["avg", ["n", "mean"]].tolist() == [8, 50.0]


def test_category_table_when_nothing_could_be_scored():
    table = category_table(score_offline(NO_REF.iloc[1:]), n_boot=50)
    assert list(table["category"]) == ["generation", "rewrite", "avg"]
    assert table["mean"].isna().all() and list(table["n_unscored"]) == [2, 1, 3]


# ------------------------------------------------------------ no letter is never correct (#7.3)

def test_a_reply_without_a_letter_is_never_correct(monkeypatch, exam):
    items = exam.head(2).assign(answer=["A", "B"])
    monkeypatch.setattr(evaluate, "chat", lambda *a, **k: ["我不知道", "答案是B"])
    out = score_mc_generate(None, None, items, progress=False)
    assert list(out["pred"]) == ["", "B"] and list(out["correct"]) == [False, True]


@pytest.mark.parametrize("key", ["", None, "E", "答案"])
def test_an_invalid_answer_key_is_refused_not_matched(monkeypatch, exam, key):
    items = exam.head(2).assign(answer=[key, "B"])
    monkeypatch.setattr(evaluate, "chat", lambda *a, **k: ["我不知道", "B"])
    with pytest.raises(ValueError, match="without a valid answer key"):
        score_mc_generate(None, None, items, progress=False)


# ------------------------------------------------------------------ any subject set (#7.1)

def test_tables_for_subjects_outside_mmcu():
    df = pd.DataFrame({"item_id": list("abcd"), "subject": ["agronomy", "agronomy", "chinese_history", "arts"],
                       "mode": "loglik", "shots": 0, "correct": [True, False, True, True]})
    table = mc_accuracy_table(df, n_boot=100)
    assert list(table["subject"]) == ["agronomy", "arts", "chinese_history", "avg"]
    assert table.set_index("subject").loc["avg", "mean"] == pytest.approx((50 + 100 + 100) / 3)
