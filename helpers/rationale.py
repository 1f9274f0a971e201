"""Finding 04's worked example: one reasoning question with every arm's rationale and final answer side by side.

evaluate_model already keeps each arm's replies (its "answers" frame, one row per Belle-style item, labelled
by `model`), and run_arms stores them per arm and stage (run["answers"]), so the example costs no extra
generation: it is a view of replies the arms gave anyway.
"""
from __future__ import annotations

import re

import pandas as pd

__all__ = ["final_answer", "worked_example"]

# "所以答案是：12元" (the CoT samples' last line), "答案为 12", "答：12周后..." (the eval references' last line).
_FINAL = re.compile(r"(?:答案\s*(?:是|为)?|(?<![回解])答)\s*[:：]\s*|答案\s*(?:是|为)\s*")


def final_answer(text: str) -> str:
    """The rest of the line after the last "答案是" / "答案：" / "答：" of a reply; "" when it names none."""
    text = str(text or "")
    found = list(_FINAL.finditer(text))
    if not found:
        return ""
    return text[found[-1].end():].split("\n", 1)[0].strip().rstrip("。.")


def _tuned_replies(answers: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """(replies to Belle-eval after tuning, the column naming each arm) of run["answers"] or stacked answers."""
    if "stage" in answers:  # run_arms' answers: every stage and prompt set, labelled by arm
        answers = answers[answers["stage"] == "tuned"]
    if "set" in answers:
        answers = answers[answers["set"] == "belle"]
    return answers, ("arm" if "arm" in answers else "model")


def worked_example(answers: pd.DataFrame, *, category: str = "math", item_id=None) -> pd.DataFrame:
    """One item's replies from every arm: arm (or model), item_id, question, asked, response, final_answer,
    reference_answer, n_chars.

    `answers` is run_arms' run["answers"] (its tuned replies to Belle-eval are used) or the arms' answers frames
    stacked (pd.concat of evaluate_model(...)["answers"], labelled by `model`); the item is `item_id`, or else the
    first item of `category` in file order that every arm answered.
    """
    answers, label = _tuned_replies(answers)
    if item_id is None:
        pool = answers[answers["category"] == category]
        arms = answers[label].nunique()
        full = pool.groupby("item_id", sort=False)[label].nunique()
        if not (full == arms).any():
            raise ValueError(f"no {category!r} item answered by all {arms} arm(s); pick another category or item_id")
        item_id = full[full == arms].index[0]
    rows = answers[answers["item_id"] == item_id]
    if rows.empty:
        raise ValueError(f"item_id {item_id!r} is not among the answers")
    return pd.DataFrame({label: rows[label].to_numpy(), "item_id": rows["item_id"].to_numpy(),
                         "question": rows["question"].to_numpy(),
                         "asked": rows.get("asked", rows["question"]).to_numpy(),
                         "response": rows["response"].to_numpy(),
                         "final_answer": [final_answer(r) for r in rows["response"]],
                         "reference_answer": [final_answer(r) for r in rows["reference"].fillna("")],
                         "n_chars": [len(str(r)) for r in rows["response"]]})
