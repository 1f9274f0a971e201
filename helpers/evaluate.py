"""Scoring: Belle-eval answers (character ROUGE-L offline, or an LLM judge) and exam multiple choice.

Multiple choice is scored two ways:
- "generate" (the paper's way): the model writes a reply and the option letters are extracted from it.
  Untuned bases rarely answer with a bare letter, which is why they score near 0 on MMCU in the paper.
- "loglik": each option letter is scored by the model's log-probability after the prompt; the highest wins.
  It measures what the model knows even when it cannot follow the answer format.
Every scorer returns a tidy DataFrame (one row per item), summarised by mc_accuracy_table / category_table.

Log-likelihood mode against lm-evaluation-harness (tests/test_lm_eval_parity.py): on the same prompt,
items and model, score_mc_loglik gives lm-eval's per-item log-likelihoods, choices and accuracy ("acc").
The prompt is the one lm-eval's `cmmlu` / `ceval-valid` tasks use (header "以下是关于<subject>的单项选择题，
请直接给出正确答案的选项。", the question, "A. ..".."D. ..", "答案："), with two differences of method:
- the letter follows "答案：" directly ("答案：A", as Chinese exams write it); lm-eval's stock tasks keep
  their default target_delimiter " ", so they score " A" (and write exemplars as "答案： A"). The parity
  test sets target_delimiter "" to score the same string.
- the subject name in the header: lm-eval names CMMLU/C-Eval subjects in Chinese (农学); we use the
  Chinese name for MMCU's four groups and the file's subject name otherwise. Exemplars: lm-eval takes the
  first k dev items of the subject's task; we take the subject's own dev items first (never the question
  itself), then other subjects' to fill up.
Both tokenize context+letter together and keep the tokens after the context, and both add the
tokenizer's own special tokens (LLaMA's BOS) to a raw prompt. run_lm_eval runs lm-eval's own tasks.
"""
from __future__ import annotations

import inspect
import re
import unicodedata

import numpy as np
import pandas as pd
import torch
from .console import tqdm

from .eval_sets import BELLE_CATEGORIES, EXAM_SUBJECTS
from .generation import chat
from .prompts import format_instructions
from .stats import summarise

__all__ = [
    "OPTION_LETTERS",
    "SUBJECT_NAMES_ZH",
    "rouge_l_chars",
    "with_eval_suffix",
    "answer_instructions",
    "score_offline",
    "score_with_judge",
    "build_mc_prompt",
    "mc_prompts",
    "extract_choice",
    "score_mc_generate",
    "score_choices",
    "score_choices_naive",
    "score_mc_loglik",
    "mc_accuracy_table",
    "category_table",
    "run_lm_eval",
]

OPTION_LETTERS = ("A", "B", "C", "D")
SUBJECT_NAMES_ZH = {"medicine": "医学", "psychology": "心理学", "law": "法律", "education": "教育"}
MC_HEADER = "以下是关于{}的单项选择题，请直接给出正确答案的选项。\n\n"


# ------------------------------------------------------------------------------------ open answers


def _lcs_length(a: str, b: str) -> int:
    # Bit-parallel LCS (Allison & Dix 1986; Hyyro 2004): bit i of v tracks row i of the DP table, and one
    # big-integer update per character of b replaces a whole column, so two 1,000-character answers
    # cost 1,000 integer operations instead of a million-cell Python loop.
    masks: dict[str, int] = {}
    for i, ch in enumerate(a):
        masks[ch] = masks.get(ch, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for ch in b:
        u = v & masks.get(ch, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def rouge_l_chars(candidate: str, reference: str) -> float:
    """Character-level ROUGE-L F1 (longest common subsequence, whitespace removed), in [0, 1]."""
    cand, ref = "".join(str(candidate or "").split()), "".join(str(reference or "").split())
    lcs = _lcs_length(cand, ref) if cand and ref else 0
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def with_eval_suffix(instruction: str, eval_suffix: str = "") -> str:
    """The instruction with an inference-time cue (CoT*: "先思考，再决定") as its last line; unchanged when the cue is ""."""
    # One path for instructions and exam questions, so the CoT* arm changes exactly this and nothing else.
    return f"{instruction}\n{eval_suffix}" if eval_suffix else instruction


def answer_instructions(model, tokenizer, items_df: pd.DataFrame, *, template: str = "auto",
                        max_new_tokens: int = 256, batch_size: int = 8, eval_suffix: str = "",
                        progress: bool = True) -> pd.DataFrame:
    """A copy of items_df with "asked" (each question as the model was given it: + eval_suffix, before the chat
    template) and "response" (the model's greedy answer)."""
    out = items_df.copy()
    out["asked"] = questions = [with_eval_suffix(q, eval_suffix) for q in items_df["question"]]
    out["response"] = chat(model, tokenizer, questions, template=template,
                           max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    return out


def score_offline(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy scores {item_id, category, scorer="rouge_l_chars", score} against each item's reference.

    An item without a reference (Belle leaves brainstorming, generation and most rewrite items without
    one) has no offline score: NaN, not a structural 0. category_table counts those as `n_unscored`.
    """
    scores = [rouge_l_chars(r, ref) if isinstance(ref, str) and ref.strip() else np.nan  # None/NaN: none
              for r, ref in zip(df["response"], df["reference"])]
    return pd.DataFrame({"item_id": df["item_id"].to_numpy(), "category": df["category"].to_numpy(),
                         "scorer": "rouge_l_chars", "score": scores})


def score_with_judge(df: pd.DataFrame, settings, *, progress: bool = True) -> pd.DataFrame:
    """Tidy scores {item_id, category, scorer="judge:<model>", score} from the LLM judge (cached on disk)."""
    from .judge import judge_many

    # An empty reference is judged reference-free (helpers.judge.needs_reference), as Belle does.
    items = df[["category", "question", "reference", "response"]].fillna({"reference": ""}).to_dict("records")
    verdicts = judge_many(settings, items, progress=progress)
    return pd.DataFrame({"item_id": df["item_id"].to_numpy(), "category": df["category"].to_numpy(),
                         "scorer": f"judge:{settings.model}", "score": [v["score"] for v in verdicts]})


# ----------------------------------------------------------------------------------- exam prompts


def _question_block(row) -> str:
    options = "\n".join(f"{k}. {row[k]}" for k in OPTION_LETTERS)
    return f"{row['question']}\n{options}\n"


def build_mc_prompt(row, shots_df: pd.DataFrame | None = None, *, eval_suffix: str = "") -> str:
    """The Chinese exam prompt: header, k solved exemplars, the question and its options, ending in "答案："."""
    subject = SUBJECT_NAMES_ZH.get(row["subject"], str(row["subject"]).replace("_", " "))
    text = MC_HEADER.format(subject)
    for _, shot in (shots_df.iterrows() if shots_df is not None else ()):
        text += _question_block(shot) + f"答案：{shot['answer']}\n\n"
    # A CoT cue (the paper's "先思考，再决定") goes on its own line just before the answer slot.
    return text + with_eval_suffix(_question_block(row).rstrip("\n"), eval_suffix) + "\n答案："


def _shot_pools(dev_df: pd.DataFrame, shots: int) -> dict:
    # Per subject: its own dev items first, then other subjects' (file order) to top up a subject with
    # fewer than k dev items; one spare so the test question itself can be dropped.
    pools = {}
    for subject in dev_df["subject"].unique():
        same = dev_df[dev_df["subject"] == subject]
        pools[subject] = pd.concat([same, dev_df.drop(same.index)]).head(shots + 1)
    return pools


def mc_prompts(exam_df: pd.DataFrame, *, shots: int = 0, dev_df: pd.DataFrame | None = None,
               eval_suffix: str = "") -> list[str]:
    """build_mc_prompt for every row, with `shots` dev exemplars of the row's subject (never the row itself)."""
    if shots and (dev_df is None or len(dev_df) < shots):
        raise ValueError(f"shots={shots} needs a dev_df with at least {shots} items (load_exam(..., split='dev'))")
    pools = _shot_pools(dev_df, shots) if shots else {}
    fallback = dev_df.head(shots + 1) if shots else None
    prompts = []
    for _, row in exam_df.iterrows():
        pool = pools.get(row["subject"], fallback)
        shot_rows = pool[pool["question"] != row["question"]].head(shots) if shots else None
        prompts.append(build_mc_prompt(row, shot_rows, eval_suffix=eval_suffix))
    return prompts


# ------------------------------------------------------------------------------ generate mode

_RUN = r"[A-D](?:\s*(?:[、,/&和与及或]|and|or)?\s*[A-D])*"  # "B", "AC", "A和C", "A、C"
_MARKED = re.compile(rf"(?:正确答案|答案|[Aa]nswer|选择|选)\s*(?:是|为|应为|应该是|is)?\s*:?\s*[(\[【]?\s*"
                     rf"({_RUN})(?![A-Za-z])")
_LEADING = re.compile(rf"^[\s(\[【]*({_RUN})(?![A-Za-z])")
_STANDALONE = re.compile(r"(?<![A-Za-z])[A-D]+(?![A-Za-z])")


def extract_choice(text: str) -> str:
    """The option letters a reply picks ("答案是B" -> "B", "A和C" -> "AC"), sorted; "" when none."""
    text = unicodedata.normalize("NFKC", str(text or ""))  # fullwidth letters, colons and brackets
    # Priority: an explicit "答案是X" (the last one: CoT replies conclude at the end), then a reply that
    # starts with letters ("B. ..."), then every standalone A-D run in the text.
    marked = _MARKED.findall(text)
    if marked:
        found = marked[-1]
    else:
        leading = _LEADING.match(text)
        found = leading.group(1) if leading else "".join(_STANDALONE.findall(text))
    return "".join(sorted(set(re.findall(r"[A-D]", found))))


def _mc_frame(exam_df: pd.DataFrame, mode: str, shots: int, preds: list[str]) -> pd.DataFrame:
    answers = exam_df["answer"].to_numpy()
    bad = [i for i, a in zip(exam_df["item_id"], answers) if not (isinstance(a, str) and re.fullmatch("[A-D]+", a))]
    if bad:  # the loaders guarantee letters; a hand-made table might not
        raise ValueError(f"exam items without a valid answer key (letters A-D): {bad[:5]}")
    # A reply with no letter ("") is wrong by construction, whatever the key.
    return pd.DataFrame({"item_id": exam_df["item_id"].to_numpy(), "subject": exam_df["subject"].to_numpy(),
                         "mode": mode, "shots": shots, "pred": preds, "answer": answers,
                         "correct": [bool(p) and p == a for p, a in zip(preds, answers)]})


def score_mc_generate(model, tokenizer, exam_df: pd.DataFrame, *, shots: int = 0, dev_df=None,
                      template: str = "auto", batch_size: int = 8, max_new_tokens: int = 8,
                      eval_suffix: str = "", progress: bool = True) -> pd.DataFrame:
    """Generation-mode accuracy (the paper's): greedy reply, extracted letters, exact set match with the key."""
    replies = chat(model, tokenizer, mc_prompts(exam_df, shots=shots, dev_df=dev_df, eval_suffix=eval_suffix),
                   template=template, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress)
    out = _mc_frame(exam_df, "generate", shots, [extract_choice(r) for r in replies])
    out["reply"] = replies
    return out


# ---------------------------------------------------------------------------- log-likelihood mode


def _tokenize_choices(tokenizer, contexts, letters, add_special_tokens):
    """Context ids, and per context the ids of each letter as it is tokenized right after that context."""
    ctx_ids = tokenizer(list(contexts), add_special_tokens=add_special_tokens)["input_ids"]
    per_letter = [tokenizer([c + letter for c in contexts], add_special_tokens=add_special_tokens)["input_ids"]
                  for letter in letters]
    alone = tokenizer(list(letters), add_special_tokens=False)["input_ids"]
    conts = []
    for i, ctx in enumerate(ctx_ids):
        # In-context form: context+letter tokenized together, minus the context. Where the tokenizer merges
        # the letter into the context's last token the prefix breaks; the letter's own tokens are used then.
        conts.append([full[i][len(ctx):] if full[i][:len(ctx)] == ctx else alone[j]
                      for j, full in enumerate(per_letter)])
    return ctx_ids, conts


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT wrappers
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _tail_logits(model, seqs: list[list[int]], pad_id: int, first: int) -> torch.Tensor:
    """Logits at positions first.. of right-padded seqs: [batch, width - first, vocab]."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(seqs):  # right padding: causal attention keeps pads out of every real position
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
    keep = width - first
    # logits_to_keep skips the lm_head on positions we never read: with a 150k vocabulary the full
    # [batch, width, vocab] tensor would dominate memory; length-sorted batches keep `keep` small.
    kwargs = {"logits_to_keep": keep} if _accepts_logits_to_keep(model) else {}
    logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **kwargs).logits
    return logits[:, -keep:]


def _score_single_token(model, ctx_ids, cont_ids, pad_id) -> np.ndarray:
    # Fast path: every option is one token, so all of them are read off the next-token distribution at
    # the context's last position -- one forward pass over the contexts, no option appended.
    last = torch.tensor([len(c) - 1 for c in ctx_ids])
    first = int(last.min())
    logits = _tail_logits(model, ctx_ids, pad_id, first)
    rows = logits[torch.arange(len(ctx_ids)), (last - first).to(logits.device)]
    targets = torch.tensor([[c[0] for c in row] for row in cont_ids], device=logits.device)
    return torch.log_softmax(rows.float(), dim=-1).gather(1, targets).cpu().numpy()


def _score_general(model, ctx_ids, cont_ids, pad_id) -> np.ndarray:
    # General path: every (context, option) sequence of the batch in one right-padded forward pass; the
    # option's tokens are gathered at the positions that predict them and summed per sequence.
    seqs, seq_of, pos, tok = [], [], [], []
    first = min(len(c) for c in ctx_ids) - 1
    for ctx, conts in zip(ctx_ids, cont_ids):
        for cont in conts:
            seq_of += [len(seqs)] * len(cont)
            pos += [len(ctx) - 1 + t - first for t in range(len(cont))]
            tok += cont
            seqs.append(ctx + cont)
    logits = _tail_logits(model, seqs, pad_id, first)
    dev = logits.device
    picked = logits[torch.tensor(seq_of, device=dev), torch.tensor(pos, device=dev)]
    token_lp = torch.log_softmax(picked.float(), dim=-1).gather(1, torch.tensor(tok, device=dev)[:, None])[:, 0]
    totals = torch.zeros(len(seqs), device=dev).index_add_(0, torch.tensor(seq_of, device=dev), token_lp)
    return totals.view(len(ctx_ids), -1).cpu().numpy()


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else pad  # pads are masked and never read, so any valid id will do


@torch.no_grad()
def score_choices(model, tokenizer, contexts: list[str], *, letters=OPTION_LETTERS, batch_size: int = 8,
                  add_special_tokens: bool = False, fast: bool = True, progress: bool = False) -> np.ndarray:
    """[n, len(letters)] summed log-probs of each letter after each context, batched (right padding)."""
    model.eval()
    ctx_ids, cont_ids = _tokenize_choices(tokenizer, contexts, letters, add_special_tokens)
    single = fast and all(len(c) == 1 for row in cont_ids for c in row)
    score = _score_single_token if single else _score_general
    order = sorted(range(len(contexts)), key=lambda i: -len(ctx_ids[i]))  # similar lengths batch together
    out = np.empty((len(contexts), len(letters)))
    for start in tqdm(range(0, len(order), batch_size), desc="scoring", disable=not progress):
        idx = order[start:start + batch_size]
        out[idx] = score(model, [ctx_ids[i] for i in idx], [cont_ids[i] for i in idx], _pad_id(tokenizer))
    return out


@torch.no_grad()
def score_choices_naive(model, tokenizer, contexts: list[str], *, letters=OPTION_LETTERS,
                        add_special_tokens: bool = False) -> np.ndarray:
    """The slow reference for score_choices: one unpadded forward pass per (context, letter)."""
    model.eval()
    ctx_ids, cont_ids = _tokenize_choices(tokenizer, contexts, letters, add_special_tokens)
    out = np.empty((len(contexts), len(letters)))
    for i, ctx in enumerate(ctx_ids):
        for j, cont in enumerate(cont_ids[i]):
            logits = model(input_ids=torch.tensor([ctx + cont], device=model.device)).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            out[i, j] = sum(float(logprobs[len(ctx) - 1 + t, token]) for t, token in enumerate(cont))
    return out


def score_mc_loglik(model, tokenizer, exam_df: pd.DataFrame, *, shots: int = 0, dev_df=None,
                    batch_size: int = 8, template: str = "raw", progress: bool = False) -> pd.DataFrame:
    """Log-likelihood accuracy: the option letter the model finds likeliest after "答案：" is its answer.

    The continuation is the bare letter ("A", no space: Chinese exams write "答案：A"), tokenized right
    after the prompt. One letter is picked, so multi-answer items (MMCU has a few) always count as wrong.
    """
    contexts = format_instructions(mc_prompts(exam_df, shots=shots, dev_df=dev_df), tokenizer, template)
    # A raw prompt gets the tokenizer's own specials (LLaMA's BOS); a template already contains them.
    ll = score_choices(model, tokenizer, contexts, batch_size=batch_size, add_special_tokens=template == "raw",
                       progress=progress)
    out = _mc_frame(exam_df, "loglik", shots, [OPTION_LETTERS[j] for j in ll.argmax(axis=1)])
    for j, letter in enumerate(OPTION_LETTERS):
        out[f"ll_{letter}"] = ll[:, j]
    return out


# ------------------------------------------------------------------------------------------ tables


def _ordered(table: pd.DataFrame, label_col: str, canonical, outer: list[str]) -> pd.DataFrame:
    """Rows in canonical label order (then others alphabetically), "avg" last within each outer group."""
    rank = {name: i for i, name in enumerate(canonical)}
    labels = table[label_col].astype(str)
    group = labels.map(lambda x: 2 if x == "avg" else 0 if x in rank else 1)
    within = labels.map(lambda x: f"{rank[x]:03d}" if x in rank else x)
    table = table.assign(_group=group, _within=within).sort_values([*outer, "_group", "_within"], kind="stable")
    return table.drop(columns=["_group", "_within"]).reset_index(drop=True)


def mc_accuracy_table(df: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Accuracy in percent per subject (+ "avg", the mean of subjects as in the paper) with CIs, per mode/shots."""
    outer = [c for c in ("mode", "shots") if c in df.columns]
    scored = df.assign(accuracy=df["correct"].astype(float) * 100)
    table = summarise(scored, "accuracy", [*outer, "subject"], n_boot=n_boot, seed=seed)
    return _ordered(table, "subject", EXAM_SUBJECTS, outer)


def category_table(df: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Mean 0-100 score per category (+ "avg") with bootstrap CIs and n_unscored, one block per scorer.

    Columns: scorer, category, n (scored items), mean, ci_low, ci_high, n_unscored (items with a NaN
    score: no reference to score against). Unscored items stay out of every mean; a category with no
    scored item keeps its row with n=0 and NaN mean/CI ("n/a"), and "avg" is the mean over the scored
    categories, its n_unscored the total left out.
    """
    # Grouping by scorer first means ROUGE and judge scores are never averaged together.
    df = df.assign(score100=df["score"].astype(float) * 100)
    keys = ["scorer", "category"]
    scored = df.dropna(subset=["score100"])
    table = summarise(scored, "score100", keys, n_boot=n_boot, seed=seed)
    # Every (scorer, category) seen keeps a row, and every scorer an "avg": n=0, NaN mean where none scored.
    rows = pd.concat([df[keys], pd.DataFrame({"scorer": df["scorer"].unique(), "category": "avg"})])
    table = rows.drop_duplicates().merge(table, how="left", on=keys)
    unscored = df["score100"].isna()
    per_category = unscored.groupby([df["scorer"], df["category"]]).sum()
    per_scorer = unscored.groupby(df["scorer"]).sum()
    table["n"] = table["n"].fillna(0).astype(int)
    table["n_unscored"] = [int(per_scorer[s] if c == "avg" else per_category[(s, c)])
                           for s, c in zip(table["scorer"], table["category"])]
    table = table[[*keys, "n", "mean", "ci_low", "ci_high", "n_unscored"]]
    return _ordered(table, "category", BELLE_CATEGORIES, ["scorer"])


# ------------------------------------------------------------------------ lm-evaluation-harness


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")  # lm-eval writes "N/A"


def run_lm_eval(model, tokenizer, tasks=("cmmlu",), *, num_fewshot: int = 0, limit: int | None = None,
                batch_size: int = 8) -> pd.DataFrame:
    """lm-evaluation-harness's own tasks ("cmmlu", "ceval-valid", ...) on a loaded model: accuracy % per task.

    For the GPU profiles: lm-eval downloads the task data from the hub (haonan-li/cmmlu, ceval/ceval-exam)
    on first use. Columns: task, n, accuracy, ci_low, ci_high (normal interval from lm-eval's stderr),
    acc_norm. Its stock tasks score " A" after "答案：", not "A" (see this module's docstring), so compare
    them with each other, not point for point with score_mc_loglik. `limit` caps items per subtask.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                  log_samples=False)
    rows = []
    for task, res in out["results"].items():
        acc, err = _number(res.get("acc,none")), _number(res.get("acc_stderr,none"))
        rows.append({"task": task, "n": out.get("n-samples", {}).get(task, {}).get("effective"),
                     "accuracy": 100 * acc, "ci_low": 100 * (acc - 1.96 * err), "ci_high": 100 * (acc + 1.96 * err),
                     "acc_norm": 100 * _number(res.get("acc_norm,none"))})
    return pd.DataFrame(rows)
