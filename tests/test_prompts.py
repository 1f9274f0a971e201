"""Prompt formats and training examples: chat template or Alpaca (English/Chinese), the same in training and
inference; every assistant turn supervised, nothing else."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from helpers.data import DataReport, load_instructions
from helpers.models import load_tokenizer
from helpers.prompts import as_example, build_sft_dataset, format_prompt, resolve_template

CORPUS = Path(__file__).resolve().parent / "data_bad"
TEMPLATES = ("chat", "alpaca_en", "alpaca_zh")
# A small tool-aware chat template of our own: tool schemas in a system block, calls as "[call name args]".
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if m.tool_calls is defined %}{% for c in m.tool_calls %}[call {{ c['function']['name'] }} "
    "{{ c['function']['arguments'] | tojson }}]{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Like Qwen3's: the last answer is rendered with a thinking block that earlier answers lose.
NOT_PREFIX_CONSISTENT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if loop.last and m['role'] == 'assistant' %}"
    "<think></think>{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_tokenizer(str(tiny_dir("qwen2")))


@pytest.fixture()
def fresh_tok(tiny_dir):
    """A tokenizer of our own, so a test can change its chat template."""
    return load_tokenizer(str(tiny_dir("qwen2")))


def _ex(instruction="写一首诗", input_text="", output="春眠不觉晓。", **extra):
    example = as_example(instruction, input_text)
    example["messages"].append({"role": "assistant", "content": output, "tool_calls": []})
    return {**example, "where": "line 1", **extra}


def _conversation(*texts, system=""):
    roles = itertools.cycle(("user", "assistant"))
    messages = [{"role": r, "content": t, **({"input": ""} if r == "user" else {"tool_calls": []})}
                for r, t in zip(roles, texts)]
    return {"system": system, "tools": [], "messages": messages, "where": "line 1"}


def _supervised(tok, row) -> list[str]:
    """The decoded runs of supervised tokens, in order."""
    pairs = zip(row["input_ids"], row["labels"])
    return [tok.decode([i for i, _ in run]) for on, run in itertools.groupby(pairs, key=lambda p: p[1] != -100) if on]


def _end_markers(tok, template):
    """What closes each answer: the template's end-of-turn (and eos after the last one), or eos."""
    return ("<|im_end|>\n", "<|im_end|>\n" + tok.eos_token) if template == "chat" else (tok.eos_token, tok.eos_token)


# --------------------------------------------------------------------------- templates


def test_auto_uses_the_chat_template_when_there_is_one(tok):
    assert resolve_template(tok, "auto") == "chat"
    prompt = format_prompt(_ex(), tok, "auto")
    assert prompt == "<|im_start|>user\n写一首诗<|im_end|>\n<|im_start|>assistant\n"


def test_auto_falls_back_to_alpaca_without_a_chat_template(tok):
    class Plain:
        chat_template = None

    assert resolve_template(Plain(), "auto") == "alpaca_en"
    with pytest.raises(ValueError, match="no chat template"):
        resolve_template(Plain(), "chat")
    with pytest.raises(ValueError, match="valid: auto, chat, alpaca_en, alpaca_zh"):
        resolve_template(tok, "vicuna")


@pytest.mark.parametrize("template, headers", [
    ("alpaca_en", ("### Instruction:", "### Input:", "### Response:")),
    ("alpaca_zh", ("### 指令：", "### 输入：", "### 回答：")),
])
def test_alpaca_templates(tok, template, headers):
    with_input = format_prompt(_ex("总结下文", "今天下雨了。"), tok, template)
    assert all(h in with_input for h in headers) and with_input.endswith(headers[2] + "\n")
    assert with_input.index("总结下文") < with_input.index("今天下雨了。")
    without = format_prompt(_ex(), tok, template)
    assert headers[1] not in without  # no empty input section


def test_history_and_system_are_rendered(tok):
    conversation = _conversation("写一首诗", "床前明月光。", "再来一首", "春眠不觉晓。", system="你是诗人。")
    chat = format_prompt(conversation, tok, "chat")
    assert chat.index("你是诗人。") < chat.index("床前明月光。") < chat.index("再来一首")
    assert "春眠不觉晓" not in chat and chat.endswith("<|im_start|>assistant\n")
    alpaca = format_prompt(conversation, tok, "alpaca_zh")
    assert alpaca.count("### 指令：") == 2 and f"床前明月光。{tok.eos_token}" in alpaca
    assert format_prompt(conversation, tok, "raw") == "再来一首"


# --------------------------------------------------------------------------- supervision


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_assistant_turn_is_supervised_and_nothing_else(tok, template):
    answers = ("床前明月光，疑是地上霜。", "春眠不觉晓。", "好的，再见！")
    conversation = _conversation("写一首诗", answers[0], "再来一首", answers[1], "谢谢", answers[2],
                                 system="你是诗人。")
    row = build_sft_dataset([conversation], tok, template=template, max_length=512)[0]
    turn_end, last_end = _end_markers(tok, template)
    assert _supervised(tok, row) == [answers[0] + turn_end, answers[1] + turn_end, answers[2] + last_end]
    masked = tok.decode([i for i, label in zip(row["input_ids"], row["labels"]) if label == -100])
    assert all(text in masked for text in ("你是诗人。", "写一首诗", "再来一首", "谢谢"))


@pytest.mark.parametrize("template", TEMPLATES)
def test_training_prompt_is_the_inference_prompt(tok, template):
    for example in (_ex(), _conversation("写一首诗", "床前明月光。", "再来一首", "春眠不觉晓。", system="你是诗人。")):
        row = build_sft_dataset([example], tok, template=template)[0]
        prompt_ids = tok(format_prompt(example, tok, template), add_special_tokens=False)["input_ids"]
        n = len(prompt_ids)
        assert row["input_ids"][:n] == prompt_ids  # the model is asked exactly what it was trained on
        assert row["labels"][n - 1] == -100 and row["labels"][n] != -100  # and the last answer starts right there


@pytest.mark.parametrize("template", TEMPLATES)
def test_tool_calls_supervised_observations_not_text_form(tok, template):
    """Templates without a tool slot: the text form (tools in the system text, calls as JSON in the answer)."""
    records, _ = load_instructions(CORPUS / "toolcall_sharegpt.json")
    row = build_sft_dataset(records[:1], tok, template=template, max_length=1024)[0]
    turn_end, last_end = _end_markers(tok, template)
    call = '<tool_call>\n{"name": "multiply", "arguments": {"a": 3, "b": 4}}\n</tool_call>'
    assert _supervised(tok, row) == [call + turn_end, "3 乘 4 等于 12。" + last_end]
    text = tok.decode(row["input_ids"])
    assert text.index('"description": "两数相乘"') < text.index("帮我算一下") < text.index('{"result": 12}')


def test_parallel_tool_results_share_one_user_turn_in_text_form(tok):
    records, _ = load_instructions(CORPUS / "messages_tools.jsonl")
    row = build_sft_dataset(records, tok, template="chat", max_length=1024)[0]
    text = tok.decode(row["input_ids"])
    assert "<|im_start|>user\n<tool_response>\n30\n</tool_response>\n<tool_response>\n33\n</tool_response><|im_end|>" in text
    assert _supervised(tok, row)[-1] == "上海更热。<|im_end|>\n" + tok.eos_token


def test_tool_calls_use_the_templates_tool_slot(fresh_tok):
    fresh_tok.chat_template = TOOL_TEMPLATE
    records, _ = load_instructions(CORPUS / "toolcall_sharegpt.json")
    row = build_sft_dataset(records[:1], fresh_tok, template="chat", max_length=1024)[0]
    assert _supervised(fresh_tok, row) == ['[call multiply {"a": 3, "b": 4}]<|im_end|>\n',
                                           "3 乘 4 等于 12。<|im_end|>\n" + fresh_tok.eos_token]
    text = fresh_tok.decode(row["input_ids"])
    assert text.startswith('<|im_start|>system\n{"type": "function", "function": {"name": "multiply"')
    assert '<|im_start|>tool\n{"result": 12}<|im_end|>' in text and "<tools>" not in text


def test_template_that_rewrites_earlier_turns_fails_clearly(fresh_tok):
    fresh_tok.chat_template = NOT_PREFIX_CONSISTENT
    build_sft_dataset([_ex()], fresh_tok, template="chat")  # one turn: nothing earlier to rewrite
    with pytest.raises(ValueError, match="not prefix-consistent.*alpaca_en"):
        build_sft_dataset([_conversation("问", "答", "再问", "再答")], fresh_tok, template="chat")


def test_tokenizers_without_offsets_get_the_same_labels(tok):
    class WithoutOffsets:  # the same tokenizer, seen as a slow one
        is_fast = False

        def __getattr__(self, name):
            return getattr(tok, name)

        def __call__(self, text, **kwargs):
            return tok(text, **kwargs)

    examples = [_ex(), _conversation("写一首诗", "床前明月光。", "再来一首", "春眠不觉晓。", system="你是诗人。")]
    for template in TEMPLATES:
        fast = build_sft_dataset(examples, tok, template=template)
        slow = build_sft_dataset(examples, WithoutOffsets(), template=template)
        assert fast["labels"] == slow["labels"] and fast["input_ids"] == slow["input_ids"]


def test_overlong_policy_is_explicit_and_counted(tok):
    long_answer = "长" * 400
    examples = [_ex(output="短。"), _ex("另一条", output=long_answer), _ex("第三条" * 100)]
    report = DataReport(path="mem", read=3, kept=3)
    ds = build_sft_dataset(examples, tok, max_length=64, overlong="skip", report=report)
    assert len(ds) == 1 and sum(report.skipped.values()) == 2 and report.kept == 1
    report.check()
    report = DataReport(path="mem", read=3, kept=3)
    ds = build_sft_dataset(examples, tok, max_length=64, overlong="truncate", report=report)
    assert len(ds) == 2  # the long answer is kept (and truncated); the over-long prompt cannot be
    assert report.skipped == {"prompt longer than max_length=64": 1}
    assert any("truncated" in note for note in report.notes)
    assert all(len(ids) <= 64 for ids in ds["input_ids"]) and all(any(x != -100 for x in labels[1:])
                                                                  for labels in ds["labels"])
    with pytest.raises(ValueError, match="valid: truncate, skip"):
        build_sft_dataset(examples, tok, overlong="drop")
    with pytest.raises(ValueError, match="no answer slot"):
        build_sft_dataset(examples, tok, template="raw")
