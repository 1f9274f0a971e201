"""One raw training record, in any supported public format, turned into the one normalised shape.

The normalised record is a conversation:
    {"system": str, "tools": [tool schema, ...],
     "messages": [{"role": "user", "content": str, "input": str},
                  {"role": "assistant", "content": str, "tool_calls": [{"name": str, "arguments": ...}, ...]},
                  {"role": "tool", "content": str}, ...],
     "category": str | None}
It ends with an assistant turn; every assistant turn is trained on, user and tool turns never are. A user
turn's "input" is Alpaca's context field ("" when none); a tool-calling assistant turn has "tool_calls".

Formats, recognised by their fields (of the formats whose marking fields a record has, the one with the most
fields holding a value wins; on a tie, the first in this order):
    sharegpt   {"conversations": [{"from": "human"|"gpt"|"function_call"|"observation"|"system", "value"}],
                "system"?, "tools"?}  (LLaMA-Factory's ShareGPT, Belle 3.5M, ShareGPT-zh)
    messages   {"messages": [{"role": "user"|"assistant"|"tool"|"system", "content", "tool_calls"?}], "tools"?}
    coig_exam  {"textbox_q_instruction", "textbox_q_context", "textbox_question", "textbox_answer",
                "textbox_answer_analysis"}  (COIG exam_instructions.jsonl)
    exam       {"question", "A", "B", "C", "D", "answer", "explanation"?, "subject"?}  (C-Eval style)
    cot        {"instruction"|"question", "input"?, "rationale"|"chain_of_thought", "answer"}
    xp3        {"inputs", "targets"}  (bigscience xP3)
    pclue      {"input", "target", "answer_choices"?, "type"?}  (CLUEbenchmark pCLUE)
    alpaca     {"instruction", "input"?, "output", "system"?, "history"?: [[user, assistant], ...]}
               (Alpaca, Belle, LLaMA-Factory alpaca; Belle's multi-turn text "Human: ...\\nAssistant: ..." in
               the instruction is split into turns)
Exam, CoT and task records become one user turn and one assistant turn; their rendering is EXAM_ANSWER and
COT_ANSWER. Problems raise Skip(reason, detail); null counts as missing.
"""
from __future__ import annotations

import json
import re

__all__ = ["Skip", "FORMATS", "EXAM_OPTIONS", "EXAM_ANSWER", "COT_ANSWER", "normalise_record", "dedupe_key"]

EXAM_OPTIONS = ("A", "B", "C", "D")
EXAM_ANSWER = "答案：{answer}"  # the answer slot our exam prompts end with, so extract_choice finds the letter
EXAM_EXPLANATION = "\n解析：{explanation}"
COT_ANSWER = "{rationale}\n答案：{answer}"

_ROLES = {  # role name in the file -> (normalised role, is a tool call)
    "sharegpt": {"human": ("user", False), "user": ("user", False), "gpt": ("assistant", False),
                 "assistant": ("assistant", False), "function_call": ("assistant", True),
                 "observation": ("tool", False), "system": ("system", False)},
    "messages": {"user": ("user", False), "assistant": ("assistant", False), "tool": ("tool", False),
                 "system": ("system", False)},
}
_TURN_KEYS = {"sharegpt": ("from", "value"), "messages": ("role", "content")}
_BELLE_TURN = re.compile(r"(?:^|\n)(Human|Assistant):")


class Skip(Exception):
    """A record that cannot be used: counted in the data report under `reason`."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------- fields


def _type_name(value: object) -> str:
    return type(value).__name__


def _get_str(obj: dict, key: str, *, required: bool, allow_empty: bool = False, prefix: str = "") -> str:
    """obj[key] as a str; null counts as missing, whitespace-only as empty."""
    value = obj.get(key)
    if value is None:
        if required:
            raise Skip(f"{prefix}missing field '{key}'", "null" if key in obj else "")
        return ""
    if not isinstance(value, str):
        raise Skip(f"{prefix}wrong type for '{key}' ({_type_name(value)}, expected str)")
    if required and not allow_empty and not value.strip():
        raise Skip(f"{prefix}empty field '{key}'")
    return value


def _category(obj: dict, fallback: str = "") -> str | None:
    """The record's "category", else the format's own label field (an exam's subject, a pCLUE task type)."""
    value = _get_str(obj, "category", required=False).strip()
    if not value and fallback:
        value = _get_str(obj, fallback, required=False).strip()
    return value or None


def _user(content: str, input_text: str = "") -> dict:
    return {"role": "user", "content": content, "input": input_text}


def _assistant(content: str, tool_calls: list | None = None) -> dict:
    return {"role": "assistant", "content": content, "tool_calls": tool_calls or []}


def _record(messages: list, obj: dict, *, system: str = "", tools: list | None = None, category=None) -> dict:
    return {"system": system, "tools": tools or [], "messages": messages,
            "category": category if category is not None else _category(obj)}


# ----------------------------------------------------------------------------- single-turn formats


def _parse_alpaca(obj: dict, notes: list) -> dict:
    instruction = _get_str(obj, "instruction", required=True)
    input_text = _get_str(obj, "input", required=False)
    output = _get_str(obj, "output", required=True)
    history = _history(obj.get("history"))
    if not history:
        history, instruction = _split_belle_dialogue(instruction, notes)
    messages = history + [_user(instruction, input_text), _assistant(output)]
    return _record(messages, obj, system=_get_str(obj, "system", required=False))


def _history(value: object) -> list:
    """LLaMA-Factory's alpaca "history": [[user, assistant], ...] as turns."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Skip(f"wrong type for 'history' ({_type_name(value)}, expected list)")
    turns = []
    for index, pair in enumerate(value, start=1):
        ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) and t.strip() for t in pair)
        if not ok:
            raise Skip("history: not a [user, assistant] pair of texts", f"pair {index}")
        turns += [_user(pair[0]), _assistant(pair[1])]
    return turns


def _split_belle_dialogue(instruction: str, notes: list) -> tuple[list, str]:
    """Belle's multiturn_chat keeps earlier turns in the instruction text ("Human: ...\\nAssistant: ...\\nHuman:
    ...\\nAssistant:"); split it so every earlier answer is trained on. Anything else is left as it is."""
    text = instruction.strip()
    if not (text.startswith("Human:") and text.endswith("Assistant:")):
        return [], instruction
    parts = _BELLE_TURN.split(text)[1:]  # [speaker, text, speaker, text, ...]
    speakers, texts = parts[0::2], [t.strip() for t in parts[1::2]]
    alternating = speakers == ["Human", "Assistant"] * (len(speakers) // 2)
    if not alternating or texts[-1] or not all(texts[:-1]):
        return [], instruction
    notes.append("Belle dialogue text split into turns")
    history = [_user(t) if s == "Human" else _assistant(t) for s, t in zip(speakers[:-2], texts[:-2])]
    return history, texts[-2]


def _parse_exam(obj: dict, notes: list) -> dict:
    question = _get_str(obj, "question", required=True)
    options = {k: _get_str(obj, k, required=True) for k in EXAM_OPTIONS}
    answer = _get_str(obj, "answer", required=True).strip().upper()
    if not re.fullmatch(r"[A-D]+", answer):
        raise Skip("exam: answer is not one of A-D", f"answer {answer!r}")
    explanation = _get_str(obj, "explanation", required=False).strip()
    prompt = question + "".join(f"\n{k}. {v}" for k, v in options.items())
    reply = EXAM_ANSWER.format(answer=answer) + (EXAM_EXPLANATION.format(explanation=explanation) if explanation else "")
    return _record([_user(prompt), _assistant(reply)], obj, category=_category(obj, "subject"))


def _parse_coig_exam(obj: dict, notes: list) -> dict:
    question = _get_str(obj, "textbox_question", required=True)
    answer = _get_str(obj, "textbox_answer", required=True).strip()
    instruction = _get_str(obj, "textbox_q_instruction", required=False).strip()
    context = _get_str(obj, "textbox_q_context", required=False).strip()
    analysis = _get_str(obj, "textbox_answer_analysis", required=False).strip()
    # The task instruction leads when there is one; the passage and the question are its input.
    user = _user(instruction, "\n".join(t for t in (context, question) if t)) if instruction else _user(question, context)
    reply = EXAM_ANSWER.format(answer=answer) + (EXAM_EXPLANATION.format(explanation=analysis) if analysis else "")
    return _record([user, _assistant(reply)], obj)


def _parse_cot(obj: dict, notes: list) -> dict:
    key = "instruction" if obj.get("instruction") is not None else "question"
    question = _get_str(obj, key, required=True)
    rationale = _get_str(obj, "rationale" if obj.get("rationale") is not None else "chain_of_thought", required=True)
    answer = _get_str(obj, "answer", required=True)
    reply = COT_ANSWER.format(rationale=rationale.strip(), answer=answer.strip())
    return _record([_user(question, _get_str(obj, "input", required=False)), _assistant(reply)], obj)


def _parse_task(input_key: str, target_key: str):
    def parse(obj: dict, notes: list) -> dict:
        prompt = _get_str(obj, input_key, required=True)
        target = _get_str(obj, target_key, required=True).strip()  # xP3 targets start with a separator
        return _record([_user(prompt), _assistant(target)], obj, category=_category(obj, "type"))

    return parse


# ----------------------------------------------------------------------------- conversations


def _parse_conversation(fmt: str):
    list_key = "conversations" if fmt == "sharegpt" else "messages"

    def parse(obj: dict, notes: list) -> dict:
        turns = obj[list_key]
        if turns is None:
            raise Skip(f"missing field '{list_key}'", "null")
        if not isinstance(turns, list):
            raise Skip(f"wrong type for '{list_key}' ({_type_name(turns)}, expected list)")
        if not turns:
            raise Skip(f"empty field '{list_key}'")
        system, messages = _read_turns(turns, fmt, notes)
        # A leading system turn wins over a record-level "system" field.
        return _record(messages, obj, system=system if system is not None else _get_str(obj, "system", required=False),
                       tools=_tools(obj.get("tools")))

    return parse


def _tools(value: object) -> list:
    """The record's tool schemas: LLaMA-Factory stores a JSON text of a list, hub rows may hold the list."""
    if isinstance(value, str):
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise Skip("invalid JSON in field 'tools'", f"{err.msg} at column {err.colno}") from None
    value = [value] if isinstance(value, dict) else value
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise Skip("wrong type for 'tools' (expected a list of tool schemas)")
    return value


def _read_turns(turns: list, fmt: str, notes: list) -> tuple[str | None, list]:
    """Walk the turns strictly in order; return (leading system text or None, messages)."""
    system, messages = None, []
    for index, turn in enumerate(turns, start=1):
        where = f"turn {index}"
        message = _read_turn(turn, fmt, where, notes)
        if message["role"] == "system":
            if index != 1:
                raise Skip("conversation: system turn not first", where)
            system = message["content"]
            continue
        _check_order(messages[-1]["role"] if messages else None, message, where)
        messages.append(message)
    if not messages or messages[-1]["role"] != "assistant":
        reason = "no user turn" if not messages else "does not end with an assistant turn"
        raise Skip(f"conversation: {reason}", f"turn {len(turns)}")
    return system, messages


def _check_order(previous: str | None, message: dict, where: str) -> None:
    """User and tool turns sit on one side, assistant turns on the other, alternating; a tool turn answers a call."""
    role = message["role"]
    if role == "user" and previous in ("user", "tool"):
        raise Skip("conversation: two user turns in a row" if previous == "user"
                   else "conversation: user turn right after a tool turn", where)
    if role == "tool" and previous not in ("assistant", "tool"):
        raise Skip("conversation: tool turn not after an assistant turn", where)
    if role == "assistant" and previous in ("assistant", None):
        reason = "two assistant turns in a row" if previous else "assistant turn before any user turn"
        raise Skip(f"conversation: {reason}", where)
    if role == "user" and not message["content"].strip():
        raise Skip("conversation: empty user turn", where)
    if role == "assistant" and not (message["content"].strip() or message["tool_calls"]):
        raise Skip("conversation: empty assistant turn", where)


def _read_turn(turn: object, fmt: str, where: str, notes: list) -> dict:
    if not isinstance(turn, dict):
        raise Skip("conversation: turn is not an object", f"{where} is {_type_name(turn)}")
    role_key, text_key = _TURN_KEYS[fmt]
    try:
        role = _get_str(turn, role_key, required=True, prefix="conversation: ")
        calls = (turn.get("tool_calls") or None) if fmt == "messages" else None  # [] means no call
        # An OpenAI tool-calling message may have no content; empty text is checked per role later.
        text = _get_str(turn, text_key, required=calls is None, allow_empty=True, prefix="conversation: ")
    except Skip as skip:
        raise Skip(skip.reason, where) from None
    if role not in _ROLES[fmt]:
        raise Skip(f"conversation: unknown role '{role}'", where)
    kind, is_call = _ROLES[fmt][role]
    notes.extend(f"unknown turn field '{k}' ignored" for k, v in turn.items()
                 if k not in (role_key, text_key, "tool_calls") and v is not None)
    if kind == "assistant" and (is_call or calls is not None):
        return _assistant("" if is_call else text, _tool_calls(text if is_call else calls, where))
    return _assistant(text) if kind == "assistant" else {"role": kind, "content": text}


def _tool_calls(value: object, where: str) -> list:
    """[{"name", "arguments"}] from a function_call turn's JSON text or an OpenAI message's tool_calls."""
    reason = "conversation: function call is not JSON {name, arguments}"
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise Skip(reason, where) from None
    calls = [value] if isinstance(value, dict) else value
    if not isinstance(calls, list) or not calls:
        raise Skip(reason, where)
    return [_tool_call(call, reason, where) for call in calls]


def _tool_call(call: object, reason: str, where: str) -> dict:
    if isinstance(call, dict) and isinstance(call.get("function"), dict):  # OpenAI: {"type", "function": {...}}
        call = call["function"]
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise Skip(reason, where)
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # OpenAI sends the arguments as a JSON text
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise Skip(reason, where) from None
    return {"name": call["name"], "arguments": arguments}


# ----------------------------------------------------------------------------- detection

# name -> (fields that mark it, every field it knows, parser); the order breaks ties in _detect_format.
FORMATS = {
    "sharegpt": ({"conversations"}, {"conversations", "system", "tools", "category"}, _parse_conversation("sharegpt")),
    "messages": ({"messages"}, {"messages", "system", "tools", "category"}, _parse_conversation("messages")),
    "coig_exam": ({"textbox_question", "textbox_answer"},
                  {"textbox_q_instruction", "textbox_q_context", "textbox_question", "textbox_answer",
                   "textbox_answer_analysis", "category"}, _parse_coig_exam),
    "exam": (set(EXAM_OPTIONS), {"question", *EXAM_OPTIONS, "answer", "explanation", "subject", "id", "category"},
             _parse_exam),
    "cot": ({"rationale", "chain_of_thought"},
            {"instruction", "question", "input", "rationale", "chain_of_thought", "answer", "category"}, _parse_cot),
    "xp3": ({"inputs", "targets"}, {"inputs", "targets", "category"}, _parse_task("inputs", "targets")),
    "pclue": ({"target"}, {"input", "target", "answer_choices", "type", "category"}, _parse_task("input", "target")),
    "alpaca": ({"instruction", "input", "output"}, {"instruction", "input", "output", "system", "history", "category"},
               _parse_alpaca),
}


def _detect_format(obj: dict) -> str:
    # Candidates are the formats whose marking fields are there; the one with the most fields holding a value wins
    # (the first on a tie). So a null field still tells the format (a pCLUE record with "target": null is pCLUE,
    # with a missing target), while the null columns HF datasets pad rows with do not outvote the real fields.
    candidates = [name for name, (marks, _, _) in FORMATS.items() if marks & obj.keys()]
    if not candidates:
        raise Skip("unknown record format", "fields: " + (", ".join(sorted(map(str, obj))) or "no fields"))
    filled = {name: sum(obj.get(k) is not None for k in FORMATS[name][1]) for name in candidates}
    best = max(candidates, key=lambda name: filled[name])  # max keeps the first of equals
    if filled[best] == 0 and len(candidates) > 1:
        raise Skip("empty record (every field is null)", "fields: " + ", ".join(sorted(map(str, obj))))
    return best


def normalise_record(obj: object) -> tuple[dict, str, list[str]]:
    """(normalised record, format name, notes) for one parsed JSON value, or raise Skip."""
    if not isinstance(obj, dict):
        raise Skip("not an object", f"got {_type_name(obj)}")
    fmt = _detect_format(obj)
    known, parse = FORMATS[fmt][1], FORMATS[fmt][2]
    notes = [f"unknown field '{k}' ignored" for k, v in obj.items() if k not in known and v is not None]
    return parse(obj, notes), fmt, notes


def dedupe_key(record: dict) -> tuple:
    """What makes two records the same example (surrounding whitespace ignored)."""
    turns = tuple((m["role"], m["content"].strip(), m.get("input", "").strip(),
                   json.dumps(m.get("tool_calls", []), sort_keys=True, ensure_ascii=False))
                  for m in record["messages"])
    return record["system"].strip(), json.dumps(record["tools"], sort_keys=True, ensure_ascii=False), turns
