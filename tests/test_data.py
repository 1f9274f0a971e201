"""Tests for helpers/data.py against the malformed-data corpus in tests/data_bad/."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest


from helpers.data import (
    DataError,
    DataReport,
    InvalidLine,
    iter_json_records,
    load_instructions,
    load_instructions_from_hub,
    read_text,
    validate_records,
)

ROOT = Path(__file__).resolve().parents[1]

CORPUS = ROOT / "tests" / "data_bad"


def _path(name: str) -> Path:
    return CORPUS / name


def _example_lines(report: DataReport) -> dict:
    lines: dict = {}
    for line, reason, _ in report.examples:
        lines.setdefault(reason, []).append(line)
    return lines


# --------------------------------------------------------------------------- fatal files

FATAL = {
    "bad_json_array.json": ", line 3: invalid JSON (Expecting ',' delimiter at column 25)",
    "trailing_comma.json": ", line 3: invalid JSON (trailing comma before ']' at column 1)",
    "extra_data_after_array.json": ", line 4: invalid JSON (extra data after the closing ']' at column 1)",
    "top_level_object.json": ": expected a JSON array of records, got an object",
    "top_level_string.json": ": expected a JSON array of records, got str",
    "latin1_garbage.jsonl": ": neither UTF-8 nor GB18030 (first bad byte 0xE9 at byte offset 20)",
    "bom_not_utf8.jsonl": ": starts with a UTF-8 BOM but is not UTF-8 (bad byte 0xC4 at byte offset 20)",
    "empty.json": ": no records",
    "empty_array.json": ": no records",
    "whitespace_only.jsonl": ": no records",
    "unsupported.csv": ": unsupported file type '.csv'; supported: .json, .jsonl",
}


@pytest.mark.parametrize("name", sorted(FATAL))
def test_fatal_file_raises_exact_error(name):
    path = _path(name)
    with pytest.raises(DataError) as err:
        load_instructions(path)
    assert str(err.value) == f"{path}{FATAL[name]}"


def test_all_skipped_is_fatal_and_carries_report():
    path = _path("all_skipped.jsonl")
    with pytest.raises(DataError) as err:
        load_instructions(path)
    report = err.value.report
    assert str(err.value).startswith(f"{path}: every record was skipped\n")
    assert str(report) in str(err.value)
    assert (report.read, report.kept) == (3, 0)
    assert report.skipped == {"empty field 'instruction'": 1, "invalid JSON": 1, "missing field 'output'": 1}
    assert _example_lines(report) == {
        "empty field 'instruction'": [1],
        "invalid JSON": [2],
        "missing field 'output'": [3],
    }


# --------------------------------------------------------------------------- loadable files

# name -> (read, kept, {reason: [lines]}, notes)
OUTCOMES = {
    "alpaca_ok.json": (3, 3, {}, {}),
    "sharegpt_ok.json": (2, 2, {}, {"unknown field 'id' ignored": 2}),
    "messages_ok.jsonl": (2, 2, {}, {}),
    "crlf.jsonl": (2, 2, {}, {}),
    "blank_lines.jsonl": (3, 3, {}, {}),
    "bom.jsonl": (4, 4, {}, {"UTF-8 BOM removed": 1}),
    "gbk.json": (2, 2, {}, {"decoded as GB18030": 1}),
    "bad_line.jsonl": (4, 3, {"invalid JSON": [3]}, {}),
    "missing_output.json": (3, 2, {"missing field 'output'": [3]}, {}),
    "empty_instruction.jsonl": (3, 2, {"empty field 'instruction'": [2]}, {}),
    "list_instead_of_string.json": (2, 1, {"wrong type for 'output' (list, expected str)": [2]}, {}),
    "number_instead_of_string.jsonl": (
        3,
        1,
        {
            "wrong type for 'instruction' (int, expected str)": [1],
            "wrong type for 'output' (int, expected str)": [2],
        },
        {},
    ),
    "extra_fields.jsonl": (2, 2, {}, {"unknown field 'id' ignored": 2, "unknown field 'source' ignored": 1}),
    "duplicates.jsonl": (5, 3, {"duplicate": [4, 5]}, {}),
    "conv_two_user_turns.jsonl": (2, 1, {"conversation: two user turns in a row": [2]}, {}),
    "conv_empty_assistant.jsonl": (2, 1, {"conversation: empty assistant turn": [2]}, {}),
    "conv_unknown_role.json": (2, 1, {"conversation: unknown role 'bot'": [2]}, {}),
    "conv_ends_with_user.jsonl": (2, 1, {"conversation: does not end with an assistant turn": [1]}, {}),
    "conv_starts_with_assistant.jsonl": (
        2, 1, {"conversation: assistant turn before any user turn": [1]}, {}
    ),
    "conv_system_not_first.jsonl": (2, 1, {"conversation: system turn not first": [1]}, {}),
    "conv_bad_turns.jsonl": (
        6,
        1,
        {
            "conversation: turn is not an object": [1],
            "conversation: missing field 'value'": [2],
            "conversation: wrong type for 'value' (list, expected str)": [3],
            "wrong type for 'conversations' (str, expected list)": [4],
            "empty field 'conversations'": [5],
        },
        {"unknown turn field 'weight' ignored": 1},
    ),
    "messages_human_role.jsonl": (2, 1, {"conversation: unknown role 'human'": [1]}, {}),
    "mixed_formats.jsonl": (6, 6, {}, {"mixed formats: alpaca 3, sharegpt 2, messages 1": 1}),
    "not_an_object.jsonl": (5, 2, {"not an object": [2, 3, 4]}, {}),
    "null_fields.json": (4, 2, {"missing field 'output'": [3], "missing field 'instruction'": [4]}, {}),
    "unknown_format.jsonl": (3, 1, {"unknown record format": [1, 3]}, {}),
}


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_loadable_file_outcome(name):
    read, kept, skipped_lines, notes = OUTCOMES[name]
    records, report = load_instructions(_path(name))
    assert (report.read, report.kept, len(records)) == (read, kept, kept)
    assert dict(report.skipped) == {reason: len(lines) for reason, lines in skipped_lines.items()}
    assert _example_lines(report) == skipped_lines
    assert dict(report.notes) == notes
    report.check()


def test_every_corpus_file_has_an_expected_outcome():
    data_files = {p.name for p in CORPUS.iterdir() if p.suffix != ".py" and p.is_file()}
    covered = set(FATAL) | set(OUTCOMES) | {"all_skipped.jsonl"}
    assert data_files == covered
    assert len(data_files) >= 25


def test_committed_corpus_matches_generator():
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, data in module.corpus().items():
        assert _path(name).read_bytes() == data, name


# --------------------------------------------------------------------------- normalised records


def test_alpaca_records_are_normalised():
    records, _ = load_instructions(_path("alpaca_ok.json"))
    assert records[0] == {
        "instruction": "把这句话翻译成英文",
        "input": "今天天气很好",
        "output": "The weather is nice today.",
        "history": [],
        "system": "",
        "category": None,
        "line": 2,
    }
    assert (records[1]["input"], records[1]["category"], records[1]["line"]) == ("", "写作", 3)
    assert (records[2]["system"], records[2]["line"]) == ("你是一个数学老师。", 8)


def test_sharegpt_system_history_and_last_turns():
    records, _ = load_instructions(_path("sharegpt_ok.json"))
    first, second = records
    assert first["system"] == "你是一个乐于助人的助手。"
    assert first["history"] == [["你好", "你好！有什么可以帮你？"]]
    assert first["instruction"] == "介绍一下北京"
    assert (first["output"], first["input"], first["line"]) == ("北京是中国的首都。", "", 2)
    assert second["instruction"] == "讲个笑话"
    assert (second["history"], second["system"], second["line"]) == ([], "", 12)


def test_messages_records_and_category():
    records, _ = load_instructions(_path("messages_ok.jsonl"))
    assert records[0]["system"] == "请用中文回答。"
    assert records[1]["history"] == [["你好", "你好！"]]
    last = records[1]
    assert (last["instruction"], last["output"], last["category"]) == ("再见", "再见！", "闲聊")
    assert set(records[0]) == {"instruction", "input", "output", "history", "system", "category", "line"}


def test_gbk_text_is_decoded():
    records, _ = load_instructions(_path("gbk.json"))
    assert records[1]["output"] == "苹果、香蕉、橙子"


def test_null_optional_fields_become_defaults():
    records, report = load_instructions(_path("null_fields.json"))
    got = [(r["line"], r["input"], r["system"], r["category"]) for r in records]
    assert got == [(2, "", "", None), (5, "", "", None)]
    assert not report.notes  # a None-valued unknown field ("extra") is schema padding, not worth a note


def test_extra_fields_stay_out_of_records():
    records, _ = load_instructions(_path("extra_fields.jsonl"))
    assert all("id" not in r and "source" not in r for r in records)


def test_blank_lines_keep_true_line_numbers():
    records, _ = load_instructions(_path("blank_lines.jsonl"))
    assert [r["line"] for r in records] == [1, 3, 6]


def test_skip_details_name_the_problem():
    _, report = load_instructions(_path("duplicates.jsonl"))
    assert report.examples == [(4, "duplicate", "same as line 1"), (5, "duplicate", "same as line 2")]
    _, report = load_instructions(_path("bad_line.jsonl"))
    assert report.examples == [(3, "invalid JSON", "Expecting ',' delimiter at column 37")]
    _, report = load_instructions(_path("conv_unknown_role.json"))
    assert report.examples == [(2, "conversation: unknown role 'bot'", "turn 2")]


# --------------------------------------------------------------------------- options


def test_dedupe_off_keeps_duplicates():
    records, report = load_instructions(_path("duplicates.jsonl"), dedupe=False)
    assert (len(records), report.kept, dict(report.skipped)) == (5, 5, {})


def test_limit_counts_surplus_as_over_limit():
    records, report = load_instructions(_path("alpaca_ok.json"), limit=2)
    assert [r["line"] for r in records] == [2, 3]
    assert (report.read, report.kept, dict(report.skipped)) == (3, 2, {"over limit": 1})
    assert _example_lines(report) == {"over limit": [8]}


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_instructions(_path("alpaca_ok.json"), limit=0)


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing_output.json", ", line 3: missing field 'output'"),
        ("bad_line.jsonl", ", line 3: invalid JSON (Expecting ',' delimiter at column 37)"),
        ("duplicates.jsonl", ", line 4: duplicate (same as line 1)"),
        ("conv_two_user_turns.jsonl", ", line 2: conversation: two user turns in a row (turn 2)"),
    ],
)
def test_strict_raises_at_first_skip(name, message):
    with pytest.raises(DataError) as err:
        load_instructions(_path(name), strict=True)
    assert str(err.value) == f"{_path(name)}{message}"


def test_strict_allows_over_limit_and_clean_files():
    records, report = load_instructions(_path("alpaca_ok.json"), strict=True, limit=1)
    assert (len(records), dict(report.skipped)) == (1, {"over limit": 2})


# --------------------------------------------------------------------------- lower-level pieces


def test_iter_json_records_lines_for_array():
    assert [line for line, _ in iter_json_records(_path("alpaca_ok.json"))] == [2, 3, 8]


def test_iter_json_records_yields_invalid_line_marker():
    values = list(iter_json_records(_path("bad_line.jsonl")))
    assert [line for line, _ in values] == [1, 2, 3, 4]
    assert values[2][1] == InvalidLine("Expecting ',' delimiter at column 37")


def test_iter_json_records_rejects_other_extensions():
    with pytest.raises(DataError, match=r"supported: \.json, \.jsonl"):
        iter_json_records(_path("unsupported.csv"))


@pytest.mark.parametrize(
    "name, notes",
    [("bom.jsonl", ["UTF-8 BOM removed"]), ("gbk.json", ["decoded as GB18030"]), ("alpaca_ok.json", [])],
)
def test_read_text_notes(name, notes):
    text, got = read_text(_path(name))
    assert got == notes
    assert not text.startswith("\ufeff")


def test_validate_records_in_memory_like_hub_rows():
    rows = [
        {"instruction": "你好", "input": None, "output": "你好！", "conversations": None, "id": 7},
        {"instruction": None, "input": None, "output": None, "conversations": None, "id": 8},
        {"instruction": None, "input": None, "output": None, "id": None,
         "conversations": [{"from": "human", "value": "问"}, {"from": "gpt", "value": "答"}]},
    ]
    records, report = validate_records(((i + 1, r) for i, r in enumerate(rows)), "hf:demo/set")
    assert [(r["line"], r["instruction"]) for r in records] == [(1, "你好"), (3, "问")]
    assert dict(report.skipped) == {"unknown record format": 1}
    assert dict(report.notes) == {"unknown field 'id' ignored": 1, "mixed formats: alpaca 1, sharegpt 1": 1}
    assert report.path == "hf:demo/set"


def test_validate_records_empty_iterable_is_fatal():
    with pytest.raises(DataError, match=r"^hf:x: no records$"):
        validate_records([], "hf:x")


# --------------------------------------------------------------------------- DataReport


def test_report_skip_after_keep_keeps_books_balanced():
    _, report = load_instructions(_path("alpaca_ok.json"))
    report.skip("too long", 8, "1200 tokens > 1024", was_kept=True)
    report.check()
    assert (report.read, report.kept, report.skipped["too long"]) == (3, 2, 1)


def test_report_check_raises_with_numbers():
    report = DataReport(path="x.jsonl", read=3, kept=1)
    report.skip("duplicate", 2)
    with pytest.raises(AssertionError, match=r"x\.jsonl: read 3 != kept 1 \+ skipped 1"):
        report.check()


def test_report_examples_are_capped_per_reason():
    report = DataReport(path="x.jsonl")
    for line in range(1, 8):
        report.skip("duplicate", line)
    assert report.skipped["duplicate"] == 7
    assert [ln for ln, _, _ in report.examples] == [1, 2, 3]
    assert "duplicate: 7 [lines 1, 2, 3, ...]" in str(report)


def test_report_str_and_to_dict():
    path = _path("conv_bad_turns.jsonl")
    _, report = load_instructions(path)
    text = str(report)
    head = f"{path}: read 6 = kept 1 + skipped 5 (conversation: turn is not an object: 1 [line 1]; "
    assert text.splitlines()[0].startswith(head)
    assert "  e.g. line 2: conversation: missing field 'value': turn 1" in text
    assert text.splitlines()[-1] == "  note: unknown turn field 'weight' ignored"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["read"] == 6 and data["kept"] == 1
    assert data["skipped"]["empty field 'conversations'"] == 1
    first = {"line": 1, "reason": "conversation: turn is not an object", "detail": "turn 1 is str"}
    assert data["examples"][0] == first


def test_hub_loader_uses_shared_validator(monkeypatch):
    # A stand-in `datasets` module: the real hub is unreachable here, and importing it is slow.
    calls = []

    def fake_load_dataset(dataset_id, split, **kwargs):
        calls.append((dataset_id, split, kwargs))
        return [{"instruction": "你好", "output": "你好！"}, {"instruction": "你好", "output": "你好！"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    records, report = load_instructions_from_hub("demo/set", split="test", revision="main")
    assert calls == [("demo/set", "test", {"revision": "main"})]
    assert [r["line"] for r in records] == [1]
    assert (report.path, dict(report.skipped)) == ("hf:demo/set", {"duplicate": 1})
