"""Profiles: a table of named settings with validated overrides."""
from __future__ import annotations

import pytest

from helpers.profiles import PROFILES, get_profile, profile_names


def test_builtin_profiles_are_valid():
    assert profile_names() == ["smoke", "colab-t4", "a100"]
    for name in PROFILES:
        assert get_profile(name) == PROFILES[name]
    assert get_profile("smoke").base_model.startswith("tiny:")
    assert get_profile("colab-t4").compute_dtype == "float16"  # a T4 has no bf16
    assert get_profile("a100").compute_dtype == "bfloat16"
    assert all(not get_profile(n).trust_remote_code for n in PROFILES)
    assert "not a result" in get_profile("smoke").result_note and not get_profile("a100").result_note


def test_overrides_apply_and_none_keeps_the_default():
    p = get_profile("smoke", max_steps=5, learning_rate=1e-3, base_model=None)
    assert (p.max_steps, p.learning_rate, p.base_model) == (5, 1e-3, PROFILES["smoke"].base_model)
    assert get_profile("smoke", learning_rate=1).learning_rate == 1.0  # ints are fine where floats are expected


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown profile 'colab'.*smoke, colab-t4, a100"):
        get_profile("colab")


def test_unknown_field_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown profile field\(s\) \['max_step'\].*max_steps"):
        get_profile("smoke", max_step=3)


@pytest.mark.parametrize("field, value, message", [
    ("max_steps", "10", "must be a number"),
    ("max_steps", 2.5, "whole number"),
    ("gradient_checkpointing", "yes", "true or false"),
    ("base_model", 7, "must be a string"),
    ("quantization", "int3", "valid choices: nf4, none"),
    ("prompt_template", "vicuna", "valid choices"),
    ("batch_size", 0, "at least 1"),
    ("train_limit", -1, "0 or more"),
    ("save_steps", 15, "multiple of logging_steps"),
])
def test_bad_values_are_clear_errors(field, value, message):
    overrides = {field: value} if field != "save_steps" else {"save_steps": 15, "logging_steps": 10}
    with pytest.raises((TypeError, ValueError), match=message):
        get_profile("smoke", **overrides)
