"""The recipe in view (settings read from the real objects) and the proof that only the answer is supervised."""
from __future__ import annotations

import pytest

from helpers.experiment import load_base
from helpers.profiles import get_profile
from helpers.prompts import as_example, format_prompt
from helpers.recipe import describe_recipe, recipe_settings, supervision_table


def test_recipe_values_come_from_the_objects_train_model_builds(tmp_path):
    profile = get_profile("smoke", lora_r=4, learning_rate=3e-3)
    model, _ = load_base(profile)
    settings = recipe_settings(model, profile, tmp_path)
    quant, adapter, training = (settings[k] for k in ("quantization", "adapter", "training"))
    assert quant[0] == "BitsAndBytesConfig" and quant[1]["bnb_4bit_quant_type"] == "nf4"
    assert adapter[0] == "LoraConfig" and adapter[1]["r"] == 4 and adapter[1]["target_modules"] == "all-linear"
    assert training[0] == "SFTConfig" and training[1]["learning_rate"] == 3e-3
    assert training[1]["completion_only_loss"] is True
    text = describe_recipe(settings)
    assert "LoraConfig(peft_type='LORA', r=4" in text and "learning_rate=0.003" in text


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from helpers.models import load_tokenizer

    return load_tokenizer(str(tiny_dir("qwen2")))


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_a_hand_built_row_shows_the_prompt_masked_and_the_answer_supervised(tokenizer):
    prompt = format_prompt(as_example("把“你好”翻译成英文。"), tokenizer, "chat")
    prompt_ids, answer_ids = _ids(tokenizer, prompt), _ids(tokenizer, "Hello.") + [tokenizer.eos_token_id]
    table = supervision_table(prompt_ids + answer_ids, [-100] * len(prompt_ids) + answer_ids, tokenizer)
    assert list(table["part"]) == ["masked (-100, no loss)", "supervised (loss)"]
    assert list(table["tokens"]) == [len(prompt_ids), len(answer_ids)]
    assert table["text"][0] == prompt and "翻译" in table["text"][0]
    assert table["text"][1] == "Hello." + tokenizer.eos_token  # the end-of-turn token is learned too


def test_multi_turn_rows_alternate(tokenizer):
    parts = [("user 1", False), ("answer 1", True), ("user 2", False), ("answer 2", True)]
    ids = [_ids(tokenizer, text) for text, _ in parts]
    labels = [x if supervised else -100 for (_, supervised), part in zip(parts, ids) for x in part]
    table = supervision_table([x for part in ids for x in part], labels, tokenizer)
    assert list(table["part"].str.startswith("supervised")) == [False, True, False, True]
    assert table["positions"].iloc[-1].endswith(f"-{len(labels) - 1}")


def test_labels_that_are_not_a_masked_copy_are_rejected(tokenizer):
    ids = _ids(tokenizer, "你好，世界")
    with pytest.raises(ValueError, match="position 1"):
        supervision_table(ids, [-100, ids[2], *ids[2:]], tokenizer)  # shifted labels
    with pytest.raises(ValueError, match="labels has"):
        supervision_table(ids, ids[:-1], tokenizer)
