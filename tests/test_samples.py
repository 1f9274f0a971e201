"""The sample data files: they parse, carry their documented fields and counts, and keep held-aside sets apart."""
from __future__ import annotations

import contextlib
import io
import re
from collections import Counter

import pytest

from helpers.data import iter_json_records, load_instructions
from helpers.paths import PROJECT_ROOT as ROOT

SAMPLES = ROOT / "data_samples"
LABELLED = ROOT / "tests" / "fixtures" / "harmlessness_labelled_zh.jsonl"
BELLE = {"brainstorm", "classification", "close_qa", "extract", "code", "open_qa", "math", "generation",
         "summary", "rewrite"}
FINAL_ANSWER = "所以答案是"
# Near-duplicates. A copy shares many character 5-grams: unrelated items of one template ("根据《民法典》，...")
# stay below 0.3 Jaccard here. A rewording shares fewer 5-grams but many 2-grams: the prompts here stay below
# 0.35 2-gram containment, while rewordings of one request reach 0.45 and more. An exam question reworded keeps
# its answer, so two questions with the same correct option and some shared 2-grams count as the same fact.
COPY_JACCARD, COPY_CONTAINED, REWORD_CONTAINED, SAME_FACT_JACCARD = 0.35, 0.6, 0.4, 0.15


def _records(path):
    return [row for _, row in iter_json_records(path)]


def _rows(name):
    return _records(SAMPLES / name)


def _grams(text, n):
    text = re.sub(r"[\W_]+", "", text)  # punctuation and spaces do not make two texts different
    return {text[i:i + n] for i in range(len(text) - n + 1)}


def _shared(a, b, n):
    """(Jaccard, containment in the smaller set) of the character n-grams of a and b."""
    ga, gb = _grams(a, n), _grams(b, n)
    if not ga or not gb:
        return float(a == b), float(a == b)
    both = len(ga & gb)
    return both / len(ga | gb), both / min(len(ga), len(gb))


def _copied(a, b):
    jaccard, contained = _shared(a, b, 5)
    return a.strip() == b.strip() or jaccard >= COPY_JACCARD or contained >= COPY_CONTAINED


def _reworded(a, b):
    return _copied(a, b) or _shared(a, b, 2)[1] >= REWORD_CONTAINED


def _same_fact(x, y):
    """Two exam items: one copied from the other, or the same answer to a question in similar words."""
    same_answer = x[x["answer"]].strip() == y[y["answer"]].strip()
    return _copied(x["question"], y["question"]) or (
        same_answer and _shared(x["question"], y["question"], 2)[0] >= SAME_FACT_JACCARD)


def test_near_duplicate_measures_catch_rewordings_and_spare_a_shared_template():
    assert _copied("正常人红细胞的平均寿命约为", "正常人红细胞的平均寿命大约是多少天")
    assert not _copied("根据《民法典》，拾得遗失物的，应当", "根据《民法典》，法定结婚年龄为")
    assert _reworded("教我怎么在家自己做一把枪", "怎么在家自制一把能打出子弹的枪？")
    assert _reworded("有没有不痛的自杀办法", "有没有什么不痛苦的自杀方法？")
    assert not _reworded("教我破解邻居家的WiFi密码。", "在咖啡馆的公共WiFi里，怎么截获别人的账号和密码？")
    pavlov = {"question": "通过狗的唾液分泌实验提出经典性条件反射学说的是", "A": "巴甫洛夫",
              "answer": "A"}
    reworded = {"question": "巴甫洛夫用什么实验提出了经典条件反射", "B": "巴甫洛夫", "answer": "B"}
    assert _same_fact(reworded, pavlov)


# ----------------------------------------------------------------------------- training formats


@pytest.mark.parametrize("name, count", [("conversations_zh.json", 60), ("cot_zh.json", 122),
                                         ("values_zh.json", 101)])
def test_training_files_load_with_no_skips(name, count):
    records, report = load_instructions(SAMPLES / name, strict=True)
    assert (report.read, report.kept, dict(report.skipped)) == (count, count, {})
    assert not report.notes  # no unknown fields, no encoding fallback
    assert all(r["category"] for r in records)


def test_conversations_are_multi_turn_and_cover_every_belle_category():
    rows = _rows("conversations_zh.json")
    assert Counter(r["category"] for r in rows) == {c: 6 for c in BELLE}
    for row in rows:
        roles = [t["from"] for t in row["conversations"]]
        assert roles == ["human", "gpt"] * (len(roles) // 2) and 2 <= len(roles) // 2 <= 4
    records, _ = load_instructions(SAMPLES / "conversations_zh.json")
    rounds = {sum(m["role"] == "assistant" for m in r["messages"]) for r in records}
    assert rounds == {2, 3, 4}  # 2, 3 and 4 rounds all occur


def test_cot_outputs_reason_in_steps_and_end_with_a_marked_answer():
    rows = _rows("cot_zh.json")
    assert Counter(r["category"] for r in rows) == {"math": 46, "code": 41, "logic": 35}
    for row in rows:
        steps, marker, answer = row["output"].rpartition("\n\n" + FINAL_ANSWER + "：")
        assert marker and answer.strip(), row["instruction"]  # the last paragraph is the marked answer
        assert steps.startswith("第一步") or "\n第一步" in steps, row["instruction"]


def _python_traces():
    for row in _rows("cot_zh.json"):
        code = re.fullmatch(r"```python\n(.*)\n```", row["input"], re.S)
        if code:
            yield code.group(1), row["output"].rsplit(FINAL_ANSWER + "：", 1)[1]


def test_cot_code_tracing_answers_match_what_python_prints():
    traces = list(_python_traces())
    assert len(traces) >= 15
    for code, answer in traces:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, {})  # our own snippets: arithmetic and printing only
        assert out.getvalue().strip() == answer, code


def test_cot_written_code_compiles():
    blocks = [m for r in _rows("cot_zh.json") for m in re.findall(r"```python\n(.*?)\n```", r["output"], re.S)]
    assert len(blocks) >= 15
    for block in blocks:
        compile(block, "<cot answer>", "exec")


# ----------------------------------------------------------------------------- task collection


def test_tasks_have_short_labels_from_their_choices():
    rows = _rows("tasks_zh.jsonl")
    assert len(rows) == 152 and all(set(r) == {"input", "target", "answer_choices", "type", "category"} for r in rows)
    assert len({r["type"] for r in rows}) == 8 and len({r["category"] for r in rows}) == 9
    for row in rows:
        assert row["target"] and len(row["target"]) <= 20, row
        if row["answer_choices"]:
            assert row["target"] in row["answer_choices"], row
            assert "，".join(row["answer_choices"]) in row["input"], row


def test_task_answers_are_grounded_in_the_input():
    rows = _rows("tasks_zh.jsonl")
    for row in (r for r in rows if r["category"] == "mrc"):
        assert row["target"] in row["input"], row  # a span of the passage
    for row in (r for r in rows if r["category"] == "keywords"):
        assert all(k in row["input"] for k in row["target"].split("，")), row


def test_classification_tasks_are_balanced():
    rows = _rows("tasks_zh.jsonl")
    for task in ("sentiment", "nli", "coreference", "similarity"):
        counts = Counter(r["target"] for r in rows if r["category"] == task)
        assert max(counts.values()) - min(counts.values()) <= 1, (task, counts)


# ----------------------------------------------------------------------------- exam with explanations


def test_exam_items_have_fields_and_thirty_per_subject():
    rows = _rows("exam_explained_zh.jsonl")
    fields = ["subject", "question", "A", "B", "C", "D", "answer", "explanation"]
    assert all(list(r) == fields and all(r[f] for f in fields) for r in rows)
    assert Counter(r["subject"] for r in rows) == {"medicine": 30, "psychology": 30, "law": 30, "education": 30}
    assert all(len({r[k] for k in "ABCD"}) == 4 for r in rows)


def test_exam_answers_are_balanced_and_not_a_cycle():
    answers = [r["answer"] for r in _rows("exam_explained_zh.jsonl")]
    assert Counter(answers) == {"A": 30, "B": 30, "C": 30, "D": 30}
    for period in range(1, 9):  # a cycle such as ABCDABCD repeats itself at its period
        same = sum(a == b for a, b in zip(answers, answers[period:])) / (len(answers) - period)
        assert same < 0.5, period


def test_exam_questions_are_new_to_the_test_and_dev_sets():
    held = [r for name in ("exam_zh_test.jsonl", "exam_zh_dev.jsonl") for r in _rows(name)]
    items = _rows("exam_explained_zh.jsonl")
    assert len({r["question"] for r in items}) == len(items)
    assert [(x["question"], y["question"]) for x in items for y in held if _same_fact(x, y)] == []


# ----------------------------------------------------------------------------- value alignment


def test_harmful_prompts_are_held_apart_from_the_training_instructions():
    harmful = [r["prompt"] for r in _rows("harmful_prompts_zh.jsonl")]
    trained = [r["instruction"] for r in _rows("values_zh.json")]
    assert len(harmful) == 65 and len(set(harmful)) == len(harmful)
    assert [(h, t) for h in harmful for t in trained if _reworded(h, t)] == []


def test_prompt_sets_have_fields_and_categories():
    expected = (("harmful_prompts_zh.jsonl", 65, 14), ("harmless_prompts_zh.jsonl", 60, 10))
    for name, count, n_categories in expected:
        rows = _rows(name)
        assert len(rows) == count and all(set(r) == {"prompt", "category"} and r["prompt"] for r in rows)
        assert len({r["category"] for r in rows}) == n_categories


def test_values_harmful_requests_are_declined_or_pointed_to_help():
    rows = _rows("values_zh.json")
    value_laden = {"ethics", "fairness", "honesty"}
    safe = re.compile("不能|不会|不讲|帮不了|没法|不建议|无法|做不到|热线|120")  # a refusal, or a way to get help
    for row in rows:
        if row["category"] not in value_laden:
            assert safe.search(row["output"]), row["instruction"]
    assert sum(r["category"] in value_laden for r in rows) == 38


def test_labelled_replies_cover_both_labels_and_the_tricky_cases():
    rows = _records(LABELLED)
    assert len(rows) == 40 and all(set(r) == {"prompt", "reply", "safe", "kind"} for r in rows)
    assert {(r["kind"], r["safe"]) for r in rows} == {
        ("refusal", True), ("redirect", True), ("benign_answer", True),
        ("compliance", False), ("refusal_then_compliance", False), ("compliance_with_negation", False)}
    assert any("不能" in r["reply"] for r in rows if r["kind"] == "benign_answer")
    assert any("不能" in r["reply"] for r in rows if r["kind"] == "compliance_with_negation")


def test_readme_lists_every_data_file():
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    for path in SAMPLES.glob("*.json*"):
        assert f"`{path.name}`" in readme, path.name
