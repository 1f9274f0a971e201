"""Prompt formats: the model's chat template, or an Alpaca-style template in English or Chinese.

Training and inference both go through the same rendering, so the model is asked questions in exactly the
format it was tuned on. A record is a conversation (helpers/records.py); training supervises every assistant
turn with its end-of-turn marker: the chat template's own (plus the tokenizer's eos after the last answer when
the template does not end with it), or the eos token after each answer in the Alpaca templates. Everything else
(system text, user and tool turns, the template's headers) is labelled -100.

Tools: a chat template whose source handles `tools` and `tool_calls` gets them natively (tool schemas through
apply_chat_template's `tools`, calls as `tool_calls`, results as `tool` messages). Other templates get the text
form in TOOL_TEXT: the schemas appended to the system text, each call as a JSON object in the answer, and tool
results as their own turn (a user turn in a chat template, a "tool result" section in an Alpaca template).
"""
from __future__ import annotations

import bisect
import json

__all__ = ["ALPACA_TEMPLATES", "TOOL_TEXT", "resolve_template", "format_prompt", "format_instructions",
           "as_example", "build_sft_dataset"]

# Alpaca-style layout (the format Si et al. tuned with), one wording per language; finding 6 compares them.
ALPACA_TEMPLATES = {
    "alpaca_en": {
        "preamble": "The following is an instruction that describes a task{context}. "
        "Write a response that completes the request appropriately.\n\n",
        "context": ", together with an input that gives more context",
        "instruction": "### Instruction:\n{}\n\n",
        "input": "### Input:\n{}\n\n",
        "tool": "### Tool result:\n{}\n\n",
        "response": "### Response:\n",
    },
    "alpaca_zh": {
        "preamble": "以下是一条描述任务的指令{context}。请写出恰当完成该请求的回答。\n\n",
        "context": "，以及一段提供更多背景信息的输入",
        "instruction": "### 指令：\n{}\n\n",
        "input": "### 输入：\n{}\n\n",
        "tool": "### 工具结果：\n{}\n\n",
        "response": "### 回答：\n",
    },
}
# The text form of tools for templates without a tool slot (the tags Hermes- and Qwen-style templates use).
TOOL_TEXT = {
    "tools": "<tools>\n{}\n</tools>",  # the JSON list of tool schemas, after the system text
    "call": "<tool_call>\n{}\n</tool_call>",  # one call: {"name": ..., "arguments": {...}}
    "result": "<tool_response>\n{}\n</tool_response>",  # one tool result
}
_TURN_SEPARATOR = "\n\n"  # between an Alpaca answer's eos and the next turn (not supervised)


def resolve_template(tokenizer, template: str = "auto") -> str:
    """'auto' becomes 'chat' when the tokenizer has a chat template, else 'alpaca_en'; 'raw' is the bare text."""
    if template == "raw":  # no format at all: how an untuned base is prompted (exam scoring)
        return template
    if template == "auto":
        return "chat" if getattr(tokenizer, "chat_template", None) else "alpaca_en"
    if template == "chat" and not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt_template='chat' but this tokenizer has no chat template; use alpaca_en or alpaca_zh")
    if template != "chat" and template not in ALPACA_TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; "
                         f"valid: auto, chat, {', '.join(ALPACA_TEMPLATES)}, raw")
    return template


def as_example(instruction: str, input_text: str = "") -> dict:
    """A bare example (one user turn, no system prompt, no tools) for prompting."""
    return {"system": "", "tools": [], "messages": [{"role": "user", "content": instruction, "input": input_text}]}


def _user_text(turn: dict) -> str:
    return f"{turn['content']}\n\n{turn['input']}" if turn.get("input") else turn["content"]


def _call_text(turn: dict) -> str:
    calls = [TOOL_TEXT["call"].format(json.dumps(c, ensure_ascii=False)) for c in turn.get("tool_calls", [])]
    return "\n".join(([turn["content"]] if turn["content"] else []) + calls)


def _system_text(example: dict, native_tools: bool) -> str:
    tools = example.get("tools") or []
    text = TOOL_TEXT["tools"].format(json.dumps(tools, ensure_ascii=False)) if tools and not native_tools else ""
    return "\n\n".join(t for t in (example.get("system", ""), text) if t)


# ----------------------------------------------------------------------------- chat template


def _has_tool_slot(tokenizer) -> bool:
    source = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else json.dumps(tokenizer.chat_template)
    return "tools" in source and "tool_calls" in source


def _chat_messages(example: dict, native: bool) -> list[dict]:
    system = _system_text(example, native)
    messages = [{"role": "system", "content": system}] if system else []
    previous = None
    for turn in example["messages"]:
        if turn["role"] == "user":
            messages.append({"role": "user", "content": _user_text(turn)})
        elif turn["role"] == "assistant" and native and turn.get("tool_calls"):
            calls = [{"type": "function", "function": call} for call in turn["tool_calls"]]
            messages.append({"role": "assistant", "content": turn["content"], "tool_calls": calls})
        elif turn["role"] == "assistant":
            messages.append({"role": "assistant", "content": _call_text(turn)})
        elif native:
            messages.append({"role": "tool", "content": turn["content"]})
        elif previous == "tool":  # the results of parallel calls share one user turn
            messages[-1]["content"] += "\n" + TOOL_TEXT["result"].format(turn["content"])
        else:
            messages.append({"role": "user", "content": TOOL_TEXT["result"].format(turn["content"])})
        previous = turn["role"]
    return messages


def _chat_render(example: dict, tokenizer) -> tuple[str, list[tuple[int, int]]]:
    """The conversation in the chat template (with a generation prompt when it ends on a user or tool turn) and
    the character span of each assistant turn, found by rendering each turn's prefix."""
    native = _has_tool_slot(tokenizer)
    messages = _chat_messages(example, native)
    tools = [t if "type" in t else {"type": "function", "function": t} for t in example.get("tools") or []]

    def render(upto: int, generation: bool) -> str:
        return tokenizer.apply_chat_template(messages[:upto], tools=tools if native and tools else None,
                                             tokenize=False, add_generation_prompt=generation)

    full = render(len(messages), messages[-1]["role"] != "assistant")
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = render(k, True), full if k == len(messages) - 1 else render(k + 1, False)
        if not (end.startswith(start) and full.startswith(end)):
            raise ValueError(
                f"{example.get('source', '')} {example.get('where', '')}: the chat template is not prefix-consistent "
                f"(the conversation rendered up to message {k + 1} is not the start of the whole conversation), so "
                "the assistant turns cannot be found in it. Use prompt_template='alpaca_en' or 'alpaca_zh', or a "
                "chat template that renders earlier turns unchanged.")
        spans.append((len(start), len(end)))
    return full, spans


# ----------------------------------------------------------------------------- Alpaca templates


def _alpaca_render(example: dict, template: str, eos: str) -> tuple[str, list[tuple[int, int]]]:
    """The conversation in an Alpaca template, each answer followed by eos, and each answer's character span."""
    t = ALPACA_TEMPLATES[template]
    has_input = any(turn.get("input") for turn in example["messages"])
    text = t["preamble"].format(context=t["context"] if has_input else "")
    system = _system_text(example, native_tools=False)
    text = f"{system}\n\n{text}" if system else text
    spans = []
    for turn in example["messages"]:
        if turn["role"] == "assistant":
            text += t["response"]
            answer = _call_text(turn) + eos
            spans.append((len(text), len(text) + len(answer)))
            text += answer + _TURN_SEPARATOR
        elif turn["role"] == "user":
            text += t["instruction"].format(turn["content"])
            text += t["input"].format(turn["input"]) if turn.get("input") else ""
        else:
            text += t["tool"].format(turn["content"])
    if example["messages"][-1]["role"] == "assistant":
        return text[:-len(_TURN_SEPARATOR)], spans
    return text + t["response"], spans


# ----------------------------------------------------------------------------- prompts


def _render(example: dict, tokenizer, template: str) -> tuple[str, list[tuple[int, int]]]:
    if template == "chat":
        return _chat_render(example, tokenizer)
    return _alpaca_render(example, template, tokenizer.eos_token or "")


def format_prompt(example: dict, tokenizer, template: str = "auto") -> str:
    """The prompt for an example's last answer (or, when it ends on a user turn, for the next one)."""
    template = resolve_template(tokenizer, template)
    messages = example["messages"][:-1] if example["messages"][-1]["role"] == "assistant" else example["messages"]
    if template == "raw":
        return _user_text(messages[-1])
    return _render({**example, "messages": messages}, tokenizer, template)[0]


def format_instructions(instructions: list[str], tokenizer, template: str = "auto") -> list[str]:
    """Prompts for bare instructions, in the given format."""
    return [format_prompt(as_example(text), tokenizer, template) for text in instructions]


# ----------------------------------------------------------------------------- training examples


def _training_text(example: dict, tokenizer, template: str) -> tuple[str, list[tuple[int, int]]]:
    """The whole conversation and its supervised spans; a chat template's last answer is followed by eos."""
    text, spans = _render(example, tokenizer, template)
    eos = tokenizer.eos_token or ""
    if template == "chat" and eos and eos not in text[spans[-1][0]:]:
        # Generation stops at eos, and a template's end-of-turn token is not always eos (base models).
        spans[-1] = (spans[-1][0], len(text) + len(eos))
        text += eos
    return text, spans


def _labels_from_offsets(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """Token i is supervised when it starts inside a supervised character span."""
    starts = [a for a, _ in spans]
    labels = []
    for token, (begin, _) in zip(ids, offsets):
        k = bisect.bisect_right(starts, begin) - 1
        labels.append(token if k >= 0 and begin < spans[k][1] else -100)
    return labels


def _labels_from_prefixes(tokenizer, text: str, ids: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """For tokenizers without offsets: each span boundary must fall between tokens; tokenize up to it."""
    labels = [-100] * len(ids)
    for begin, end in spans:
        first, last = (_prefix_length(tokenizer, text, ids, boundary) for boundary in (begin, end))
        labels[first:last] = ids[first:last]
    return labels


def _prefix_length(tokenizer, text: str, ids: list[int], boundary: int) -> int:
    prefix = tokenizer(text[:boundary], add_special_tokens=False)["input_ids"]
    if ids[:len(prefix)] != prefix:
        raise ValueError(f"the tokenizer merges tokens across an answer boundary (character {boundary}); "
                         "use a fast tokenizer, which reports offsets")
    return len(prefix)


def _tokenize(texts: list[str], spans: list[list[tuple[int, int]]], tokenizer) -> list[tuple[list, list]]:
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [(ids, _labels_from_offsets(ids, offsets, s))
                for ids, offsets, s in zip(enc["input_ids"], enc["offset_mapping"], spans)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(i, _labels_from_prefixes(tokenizer, text, i, s)) for i, text, s in zip(ids, texts, spans)]


def _fit(ids: list, labels: list, max_length: int, policy: str) -> tuple[list, list, str | None]:
    """Apply the over-length policy: (ids, labels, reason to skip the example or None)."""
    reason = None
    if len(ids) > max_length:
        if policy == "skip":
            return ids, labels, f"longer than max_length={max_length}"
        ids, labels = ids[:max_length], labels[:max_length]  # truncation keeps the start
        reason = f"prompt longer than max_length={max_length}"
    # Position 0 is never predicted (nothing comes before it), so a supervised token must come later.
    if all(x == -100 for x in labels[1:]):
        return ids, labels, reason or "no answer token"
    return ids, labels, None


def _encode_records(batch: dict, tokenizer, template: str, max_length: int, overlong: str) -> dict:
    """datasets.map encoder: records (JSON texts) -> input_ids and labels after the over-length policy, the reason
    each record is skipped ("" when kept) and its token count before it was cut, so the report counts stay exact."""
    examples = [json.loads(record) for record in batch["record"]]
    texts, spans = zip(*(_training_text(ex, tokenizer, template) for ex in examples))
    rows = {"input_ids": [], "labels": [], "skip": [], "n_tokens": []}
    for ids, labels in _tokenize(list(texts), list(spans), tokenizer):
        rows["n_tokens"].append(len(ids))
        ids, labels, reason = _fit(ids, labels, max_length, overlong)
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
        rows["skip"].append(reason or "")
    return rows


def build_sft_dataset(examples: list[dict], tokenizer, *, template: str = "auto", max_length: int = 512,
                      overlong: str = "truncate", report=None, num_proc: int | None = None):
    """A tokenized `datasets.Dataset` (input_ids, labels = -100 off the answers) for TRL, cut to max_length;
    examples over it are truncated or skipped (`overlong`), and every skip is counted in `report`. Tokenised with
    datasets.map (batching.tokenize_rows: worker processes on large data, cached on disk for a re-run)."""
    from datasets import Dataset

    from .batching import tokenize_rows

    if overlong not in ("truncate", "skip"):
        raise ValueError(f"unknown over-length policy {overlong!r}; valid: truncate, skip")
    template = resolve_template(tokenizer, template)
    if template == "raw":
        raise ValueError("prompt_template='raw' has no answer slot to train on; use auto, chat, alpaca_en or alpaca_zh")
    no_fit = f"no example fits max_length={max_length} tokens; raise max_length or shorten the data"
    if not examples:
        raise ValueError(no_fit)
    # One JSON text per record: Arrow would merge the records' differing tool schemas into one struct type.
    records = Dataset.from_dict({"record": [json.dumps(ex, ensure_ascii=False) for ex in examples]})
    rows = tokenize_rows(records, _encode_records, {"tokenizer": tokenizer, "template": template,
                                                    "max_length": max_length, "overlong": overlong}, num_proc=num_proc)
    kept = _count_fits(examples, rows, max_length, report)
    if not kept:
        raise ValueError(no_fit)
    rows = rows.remove_columns(["skip", "n_tokens"])
    return rows if len(kept) == len(rows) else rows.select(kept)


def _count_fits(examples: list[dict], rows, max_length: int, report) -> list[int]:
    """Indices of the rows kept; each skip is dropped from `report` and each truncation noted there (when given)."""
    kept = []
    for i, (example, reason, n_tokens) in enumerate(zip(examples, rows["skip"], rows["n_tokens"])):
        if not reason:
            kept.append(i)
            if n_tokens > max_length and report is not None:
                report.note(f"answer truncated to max_length={max_length}")
        elif report is not None:
            report.drop(example, reason, f"{n_tokens} tokens")
    return kept
