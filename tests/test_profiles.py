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
    with pytest.raises((TypeError, ValueError), match=message):  # the same check through OVERRIDES
        get_profile("smoke", overrides)


# ------------------------------------------------------------------------ one precedence rule (#7.11)

def test_a_field_in_overrides_and_as_a_named_parameter_is_not_an_error():
    # The README's example: MAX_STEPS (None) is a named parameter and OVERRIDES sets max_steps.
    assert get_profile("colab-t4", {"max_steps": 200}, max_steps=None).max_steps == 200


def test_precedence_named_then_overrides_then_profile():
    overrides = {"max_steps": 200, "learning_rate": 1e-3, "lora_r": 4}
    p = get_profile("smoke", overrides, max_steps=7, learning_rate=None)
    assert (p.max_steps, p.learning_rate, p.lora_r) == (7, 1e-3, 4)  # named wins; None defers to OVERRIDES
    assert get_profile("smoke", {}, base_model=None) == PROFILES["smoke"]
    assert get_profile("smoke", {"max_steps": None}).max_steps == PROFILES["smoke"].max_steps
    assert get_profile("smoke", None, max_steps=3).max_steps == 3


def test_overrides_must_be_a_dict():
    with pytest.raises(TypeError, match="overrides must be a dict"):
        get_profile("smoke", [("max_steps", 3)])


def test_overrides_are_not_mutated():
    overrides = {"max_steps": 5}
    get_profile("smoke", overrides, max_steps=9)
    assert overrides == {"max_steps": 5}


# ---------------------------------------------------------------------------- value ranges (#7.12)

@pytest.mark.parametrize("field, value, valid", [
    ("max_steps", 0, r"-1 \(run the epochs\) or at least 1"),
    ("max_steps", -5, r"-1 \(run the epochs\) or at least 1"),
    ("epochs", 0, "greater than 0"),
    ("epochs", -1.0, "greater than 0"),
    ("learning_rate", -2e-4, "greater than 0"),
    ("learning_rate", 0, "greater than 0"),
    ("learning_rate", float("nan"), "greater than 0"),
    ("eval_batch_size", 0, "at least 1"),
    ("lora_r", 0, "at least 1"),
    ("lora_alpha", 0, "greater than 0"),
    ("warmup_ratio", 5, r"in \[0, 1\)"),
    ("warmup_ratio", 1.0, r"in \[0, 1\)"),
    ("warmup_ratio", -0.1, r"in \[0, 1\)"),
    ("lora_dropout", 1.0, r"in \[0, 1\)"),
    ("lora_dropout", -0.5, r"in \[0, 1\)"),
    ("seed", -1, "0 or more"),
    ("max_new_tokens", 0, "at least 1"),
    ("adapter_size", 0, "at least 1"),
    ("adalora_target_r", 0, "at least 1"),
])
def test_out_of_range_values_name_the_field_and_the_range(field, value, valid):
    with pytest.raises(ValueError, match=rf"profile field '{field}' must be {valid}, got"):
        get_profile("smoke", {field: value})


@pytest.mark.parametrize("field, value", [
    ("max_steps", -1), ("max_steps", 1), ("epochs", 0.5), ("warmup_ratio", 0.0), ("warmup_ratio", 0.99),
    ("lora_dropout", 0.0), ("lora_r", 1), ("eval_batch_size", 1), ("seed", 0),
])
def test_edge_values_inside_the_range_are_accepted(field, value):
    assert getattr(get_profile("smoke", {field: value}), field) == value


# ------------------------------------------------------------------------ output_root (#7.13)

def test_output_root_under_a_file_fails_at_get_profile(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ValueError, match=r"'output_root'.*not-a-folder is a file, not a folder"):
        get_profile("smoke", {"output_root": str(blocker / "outputs")})


def test_unwritable_output_root_fails_at_get_profile(tmp_path, monkeypatch):
    import tempfile

    # Root can write into a chmod 555 folder, so simulate the read-only mount the user hit.
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(ValueError, match=r"'output_root'.*not writable \(Permission denied\).*writable folder"):
        get_profile("smoke", {"output_root": str(tmp_path / "ro")})


def test_writable_output_root_is_not_created_by_get_profile(tmp_path):
    target = tmp_path / "a" / "b"
    assert get_profile("smoke", {"output_root": str(target)}).output_root == str(target)
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []  # the probe leaves nothing
