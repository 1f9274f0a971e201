"""helpers.rationale: final answers of CoT-style replies and the worked example across arms."""
import pandas as pd
import pytest

from helpers.rationale import final_answer, worked_example


@pytest.mark.parametrize("text, answer", [
    ("第一步，3×8=24。\n第二步，36-24=12。\n\n所以答案是：12元。", "12元"),
    ("宽为8厘米……答：面积是96平方厘米，周长是40厘米。", "面积是96平方厘米，周长是40厘米"),
    ("先算再说，答案为 42", "42"),
    ("答案：A\n解析：……", "A"),
    ("答案是B，不过答案：C", "C"),  # the last one counts
    ("我不知道", ""),
    ("回答：我不知道", ""),  # "回答：" and "解答：" are not "答："
    ("", ""),
])
def test_final_answer(text, answer):
    assert final_answer(text) == answer


def answers_frame():
    rows = []
    for model, reply in (("instructions", "12元"), ("instructions + CoT", "第一步……所以答案是：12元")):
        rows += [{"item_id": "0", "category": "code", "question": "写个函数", "reference": "", "response": "def f(): pass",
                  "model": model},
                 {"item_id": "1", "category": "math", "question": "36-3×8=?", "reference": "36-24=12。答：12元。",
                  "response": reply, "model": model}]
    return pd.DataFrame(rows)


def test_worked_example_picks_a_math_item_answered_by_every_arm():
    out = worked_example(answers_frame())
    assert list(out["model"]) == ["instructions", "instructions + CoT"] and set(out["question"]) == {"36-3×8=?"}
    assert list(out["final_answer"]) == ["", "12元"] and list(out["reference_answer"]) == ["12元", "12元"]
    assert list(out["n_chars"]) == [3, len("第一步……所以答案是：12元")]


def test_worked_example_by_id_and_errors():
    assert set(worked_example(answers_frame(), item_id="0")["question"]) == {"写个函数"}
    with pytest.raises(ValueError, match="not among the answers"):
        worked_example(answers_frame(), item_id="9")
    with pytest.raises(ValueError, match="no 'summary' item"):
        worked_example(answers_frame(), category="summary")


def test_worked_example_reads_the_runners_answers_tuned_belle_replies_by_arm():
    # run_arms' run["answers"]: every stage and prompt set, labelled by arm, with what each arm was asked.
    tuned = answers_frame().rename(columns={"model": "arm"}).assign(stage="tuned", set="belle")
    tuned["asked"] = tuned["question"] + ["", "", "", "\n先思考，再决定"]
    base = tuned.assign(stage="base", response="base reply")
    extra = tuned.assign(set="harmful", category="math", item_id="h1", question="别的问题")
    out = worked_example(pd.concat([base, tuned, extra], ignore_index=True))
    assert list(out.columns[:2]) == ["arm", "item_id"] and list(out["item_id"]) == ["1", "1"]
    assert list(out["arm"]) == ["instructions", "instructions + CoT"] and "base reply" not in set(out["response"])
    assert list(out["asked"]) == ["36-3×8=?", "36-3×8=?\n先思考，再决定"] and list(out["final_answer"]) == ["", "12元"]
