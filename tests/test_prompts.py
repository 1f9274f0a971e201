"""Prompt formats: chat template or Alpaca (English/Chinese), the same in training and inference."""
from __future__ import annotations

import pytest

from helpers.data import DataReport
from helpers.models import load_tokenizer
from helpers.prompts import as_example, build_sft_dataset, format_prompt, resolve_template


@pytest.fixture(scope="module")
def tok(tiny_dir):
    return load_tokenizer(str(tiny_dir("qwen2")))


def _ex(instruction="写一首诗", input_text="", output="春眠不觉晓。", **extra):
    return {**as_example(instruction, input_text), "output": output, "line": 1, **extra}


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
    ex = _ex("再来一首", system="你是诗人。", history=[["写一首诗", "床前明月光。"]])
    chat = format_prompt(ex, tok, "chat")
    assert chat.index("你是诗人。") < chat.index("床前明月光。") < chat.index("再来一首")
    alpaca = format_prompt(ex, tok, "alpaca_zh")
    assert alpaca.count("### 指令：") == 2 and "床前明月光。" in alpaca


def test_training_prompt_is_the_inference_prompt(tok):
    ds = build_sft_dataset([_ex()], tok, template="alpaca_zh")
    assert ds[0]["prompt"] == format_prompt(as_example("写一首诗"), tok, "alpaca_zh")
    assert ds[0]["completion"] == "春眠不觉晓。"


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
    with pytest.raises(ValueError, match="valid: truncate, skip"):
        build_sft_dataset(examples, tok, overlong="drop")
