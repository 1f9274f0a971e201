"""Tests for helpers/data.py against the malformed-data corpus in tests/data_bad/."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections import Counter
from pathlib import Path

import pytest


from helpers.data import (
    DataError,
    DataReport,
    InvalidLine,
    iter_json_records,
    load_instructions,
    load_instructions_from_hub,
    load_training_data,
    parse_data_spec,
    read_text,
    validate_records,
)

ROOT = Path(__file__).resolve().parents[1]

CORPUS = ROOT / "tests" / "data_bad"


def _path(name: str) -> Path:
    return CORPUS / name


def _where(x) -> str:
    """Expected record names: an int is a JSON Lines line number, a str is written out."""
    return f"line {x}" if isinstance(x, int) else x


def _example_lines(report: DataReport) -> dict:
    lines: dict = {}
    for where, reason, _ in report.examples:
        lines.setdefault(reason, []).append(where)
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
        "empty field 'instruction'": ["line 1"],
        "invalid JSON": ["line 2"],
        "missing field 'output'": ["line 3"],
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
    "missing_output.json": (3, 2, {"missing field 'output'": ["record 2 (line 3)"]}, {}),
    "empty_instruction.jsonl": (3, 2, {"empty field 'instruction'": [2]}, {}),
    "list_instead_of_string.json": (2, 1, {"wrong type for 'output' (list, expected str)": ["record 1 (line 2)"]}, {}),
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
    "conv_unknown_role.json": (2, 1, {"conversation: unknown role 'bot'": ["record 1 (line 2)"]}, {}),
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
    "null_fields.json": (
        4, 2, {"missing field 'output'": ["record 2 (line 3)"], "missing field 'instruction'": ["record 3 (line 4)"]}, {}
    ),
    "unknown_format.jsonl": (3, 1, {"unknown record format": [1, 3]}, {}),
    # issue 7 item 6: null is a missing field of the format whose fields are there
    "null_only_fields.jsonl": (
        4, 1,
        {"missing field 'instruction'": [1], "missing field 'conversations'": [2],
         "empty record (every field is null)": [4]},
        {},
    ),
    # issue 7 item 7: a one-line array names records by index
    "one_line_array.json": (4, 2, {"missing field 'output'": ["record 2"], "duplicate": ["record 3"]}, {}),
    # issue 7 item 14: LLaMA-Factory ShareGPT tool calls
    "toolcall_sharegpt.json": (
        7, 4,
        {"conversation: function call is not JSON {name, arguments}": ["record 5 (line 36)"],
         "conversation: tool turn not after an assistant turn": ["record 6 (line 45)"],
         "invalid JSON in field 'tools'": ["record 7 (line 52)"]},
        {},
    ),
    "messages_tools.jsonl": (2, 1, {"conversation: tool turn not after an assistant turn": [2]}, {}),
    "alpaca_history.json": (2, 1, {"history: not a [user, assistant] pair of texts": ["record 2 (line 9)"]}, {}),
    "belle_multiturn.jsonl": (3, 3, {}, {"Belle dialogue text split into turns": 2}),
    "pclue.json": (4, 3, {"missing field 'target'": [4]}, {"read as JSON Lines (one record per line)": 1}),
    "xp3.jsonl": (2, 1, {"empty field 'targets'": [2]}, {}),
    "exam_explained.jsonl": (4, 2, {"exam: answer is not one of A-D": [3], "missing field 'D'": [4]}, {}),
    "coig_exam.jsonl": (2, 2, {}, {}),
    "cot_fields.jsonl": (3, 2, {"missing field 'answer'": [3]}, {}),
}


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_loadable_file_outcome(name):
    read, kept, skipped_lines, notes = OUTCOMES[name]
    records, report = load_instructions(_path(name))
    assert (report.read, report.kept, len(records)) == (read, kept, kept)
    assert dict(report.skipped) == {reason: len(lines) for reason, lines in skipped_lines.items()}
    assert _example_lines(report) == {reason: [_where(x) for x in lines] for reason, lines in skipped_lines.items()}
    assert dict(report.notes) == notes
    report.check()


def test_every_corpus_file_has_an_expected_outcome():
    data_files = {p.name for p in CORPUS.iterdir() if p.suffix != ".py" and p.is_file()}
    covered = set(FATAL) | set(OUTCOMES) | {"all_skipped.jsonl"}
    assert data_files == covered
    assert len(data_files) >= 45


def test_committed_corpus_matches_generator():
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, data in module.corpus().items():
        assert _path(name).read_bytes() == data, name


# --------------------------------------------------------------------------- normalised records


def _turns(record: dict) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in record["messages"]]


def test_alpaca_records_are_normalised():
    records, _ = load_instructions(_path("alpaca_ok.json"))
    assert records[0] == {
        "system": "",
        "tools": [],
        "messages": [
            {"role": "user", "content": "把这句话翻译成英文", "input": "今天天气很好"},
            {"role": "assistant", "content": "The weather is nice today.", "tool_calls": []},
        ],
        "category": None,
        "where": "record 1 (line 2)",
        "source": str(_path("alpaca_ok.json")),
    }
    assert (records[1]["messages"][0]["input"], records[1]["category"], records[1]["where"]) == (
        "", "写作", "record 2 (line 3)")
    assert (records[2]["system"], records[2]["where"]) == ("你是一个数学老师。", "record 3 (line 8)")


def test_sharegpt_system_and_every_turn():
    records, _ = load_instructions(_path("sharegpt_ok.json"))
    first, second = records
    assert first["system"] == "你是一个乐于助人的助手。"
    assert _turns(first) == [("user", "你好"), ("assistant", "你好！有什么可以帮你？"),
                             ("user", "介绍一下北京"), ("assistant", "北京是中国的首都。")]
    assert first["where"] == "record 1 (line 2)"
    assert _turns(second) == [("user", "讲个笑话"), ("assistant", "从前有座山……")]
    assert (second["system"], second["where"]) == ("", "record 2 (line 12)")


def test_messages_records_and_category():
    records, _ = load_instructions(_path("messages_ok.jsonl"))
    assert records[0]["system"] == "请用中文回答。"
    assert _turns(records[1]) == [("user", "你好"), ("assistant", "你好！"), ("user", "再见"), ("assistant", "再见！")]
    assert records[1]["category"] == "闲聊"
    assert set(records[0]) == {"system", "tools", "messages", "category", "where", "source"}


def test_gbk_text_is_decoded():
    records, _ = load_instructions(_path("gbk.json"))
    assert records[1]["messages"][-1]["content"] == "苹果、香蕉、橙子"


def test_null_optional_fields_become_defaults():
    records, report = load_instructions(_path("null_fields.json"))
    got = [(r["where"], r["messages"][0]["input"], r["system"], r["category"]) for r in records]
    assert got == [("record 1 (line 2)", "", "", None), ("record 4 (line 5)", "", "", None)]
    assert not report.notes  # a None-valued unknown field ("extra") is schema padding, not worth a note


def test_null_is_reported_as_missing_not_unknown_format():
    """Issue 7 item 6: a record whose fields are there but null is missing those fields, named as such."""
    _, report = load_instructions(_path("null_only_fields.jsonl"))
    assert "unknown record format" not in report.skipped
    assert report.examples[:2] == [("line 1", "missing field 'instruction'", "null"),
                                   ("line 2", "missing field 'conversations'", "null")]


def test_extra_fields_stay_out_of_records():
    records, _ = load_instructions(_path("extra_fields.jsonl"))
    assert all("id" not in r and "source" != "belle" for r in records)
    assert all(set(r) == {"system", "tools", "messages", "category", "where", "source"} for r in records)


def test_blank_lines_keep_true_line_numbers():
    records, _ = load_instructions(_path("blank_lines.jsonl"))
    assert [r["where"] for r in records] == ["line 1", "line 3", "line 6"]


def test_one_line_array_names_records_by_index():
    """Issue 7 item 7: every record of a minified array is on line 1, so the index names it."""
    records, report = load_instructions(_path("one_line_array.json"))
    assert [r["where"] for r in records] == ["record 1", "record 4"]
    assert report.examples == [("record 2", "missing field 'output'", ""), ("record 3", "duplicate", "same as record 1")]
    with pytest.raises(DataError, match=r"one_line_array\.json, record 2: missing field 'output'$"):
        load_instructions(_path("one_line_array.json"), strict=True)


def test_skip_details_name_the_problem():
    _, report = load_instructions(_path("duplicates.jsonl"))
    assert report.examples == [("line 4", "duplicate", "same as line 1"), ("line 5", "duplicate", "same as line 2")]
    _, report = load_instructions(_path("bad_line.jsonl"))
    assert report.examples == [("line 3", "invalid JSON", "Expecting ',' delimiter at column 37")]
    _, report = load_instructions(_path("conv_unknown_role.json"))
    assert report.examples == [("record 1 (line 2)", "conversation: unknown role 'bot'", "turn 2")]


# --------------------------------------------------------------------------- tool calls (issue 7 item 14)


def test_sharegpt_tool_calls_load_with_counts():
    records, report = load_instructions(_path("toolcall_sharegpt.json"))
    assert (report.read, report.kept, report.with_tools) == (7, 4, 3)  # 3 kept conversations offer tools
    first = records[0]
    assert first["tools"][0]["name"] == "multiply" and first["tools"][0]["parameters"]["required"] == ["a", "b"]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "tool", "assistant"]
    assert first["messages"][1]["tool_calls"] == [{"name": "multiply", "arguments": {"a": 3, "b": 4}}]
    assert first["messages"][2]["content"] == '{"result": 12}'
    assert records[2]["tools"] == []  # "tools": "[]" offers none
    # An observation after a plain answer is a tool turn too (2 of LLaMA-Factory's demo conversations do this).
    assert [m["role"] for m in records[3]["messages"]] == ["user", "assistant", "tool", "assistant", "user",
                                                           "assistant"]
    assert "with tools: 3 conversations" in str(report)


def test_openai_messages_tool_calls():
    records, _ = load_instructions(_path("messages_tools.jsonl"))
    turns = records[0]["messages"]
    assert [m["role"] for m in turns] == ["user", "assistant", "tool", "tool", "assistant"]
    assert turns[1]["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "北京"}},
                                      {"name": "get_weather", "arguments": {"city": "上海"}}]
    assert records[0]["tools"][0]["function"]["name"] == "get_weather"


# --------------------------------------------------------------------------- other public formats (issue 11)


def test_alpaca_history_and_system_become_turns():
    records, _ = load_instructions(_path("alpaca_history.json"))
    assert records[0]["system"] == "你是地理老师。"
    assert _turns(records[0]) == [("user", "北京是哪个国家的首都？"), ("assistant", "北京是中国的首都。"),
                                  ("user", "它有多少人口？"), ("assistant", "约两千万。"),
                                  ("user", "那上海呢？"), ("assistant", "上海是中国的经济中心。")]


def test_belle_dialogue_text_is_split_into_turns():
    records, _ = load_instructions(_path("belle_multiturn.jsonl"))
    assert _turns(records[0]) == [("user", "写一句春天的诗"), ("assistant", "春风又绿江南岸。"),
                                  ("user", "再来一句"), ("assistant", "春眠不觉晓。")]
    assert _turns(records[1]) == [("user", "只有一轮"), ("assistant", "好的。")]
    assert _turns(records[2])[0] == ("user", "请解释 Human: 这个词")  # not a dialogue: left as it is


def test_task_collections_pclue_and_xp3():
    records, _ = load_instructions(_path("pclue.json"))
    assert _turns(records[0]) == [("user", "这是关于哪方面的新闻？球队夺冠\n选项：体育，财经\n答案："), ("assistant", "体育")]
    assert [r["category"] for r in records] == ["classify", "mrc", "nli"]
    records, _ = load_instructions(_path("xp3.jsonl"))
    assert _turns(records[0]) == [("user", "把下面的句子翻译成英文：我爱你"), ("assistant", "I love you")]


def test_exam_items_become_question_and_explained_answer():
    records, _ = load_instructions(_path("exam_explained.jsonl"))
    assert _turns(records[0]) == [("user", "2+3=?\nA. 4\nB. 5\nC. 6\nD. 7"), ("assistant", "答案：B\n解析：2 加 3 等于 5。")]
    assert records[0]["category"] == "math"
    assert records[1]["messages"][1]["content"] == "答案：A"  # no explanation, no 解析 line
    records, _ = load_instructions(_path("coig_exam.jsonl"))
    assert records[0]["messages"][0] == {"role": "user", "content": "请回答下面的选择题。",
                                         "input": "中国的首都是？A. 上海 B. 北京"}
    assert records[0]["messages"][1]["content"] == "答案：B\n解析：北京是首都。"
    assert records[1]["messages"][0] == {"role": "user", "content": "水在几度结冰？", "input": "材料：水在 0 摄氏度结冰。"}


def test_cot_rationale_then_answer():
    records, _ = load_instructions(_path("cot_fields.jsonl"))
    assert records[0]["messages"][1]["content"] == "原有 3 个，加上 2 个，3+2=5。\n答案：5 个"
    assert _turns(records[1]) == [("user", "计算 6 除以 2"), ("assistant", "6 平均分成 2 份，每份 3。\n答案：3")]


# --------------------------------------------------------------------------- options


def test_dedupe_off_keeps_duplicates():
    records, report = load_instructions(_path("duplicates.jsonl"), dedupe=False)
    assert (len(records), report.kept, dict(report.skipped)) == (5, 5, {})


def test_limit_is_reported_apart_from_skips():
    """Issue 7 item 15: the train_limit cut is not a skip: read = used + skipped + left out."""
    records, report = load_instructions(_path("duplicates.jsonl"), limit=2)
    assert [r["where"] for r in records] == ["line 1", "line 2"]
    assert (report.read, report.kept) == (5, 2)
    assert dict(report.skipped) == {"duplicate": 2} and dict(report.cut) == {"over limit 2": 1}
    assert str(report).splitlines()[0].endswith("+ left out 1 (over limit 2: 1)")
    assert "over limit" not in _example_lines(report)


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_instructions(_path("alpaca_ok.json"), limit=0)


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing_output.json", ", record 2 (line 3): missing field 'output'"),
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
    assert (len(records), dict(report.skipped), dict(report.cut)) == (1, {}, {"over limit 1": 2})


# --------------------------------------------------------------------------- mixtures


def _write_set(path: Path, name: str, n: int) -> str:
    path.write_text(json.dumps([{"instruction": f"{name} {i}", "output": f"答 {i}"} for i in range(n)],
                               ensure_ascii=False), encoding="utf-8")
    return str(path)


def _sources(records: list) -> list:
    return [r["messages"][0]["content"].split()[0] for r in records]


def test_parse_data_spec_grammar():
    assert parse_data_spec("a.json") == [("a.json", None)]
    assert parse_data_spec("a.json:1.0 + b.jsonl:0.3 + hf:org/set:500 + hf:org/other") == [
        ("a.json", 1.0), ("b.jsonl", 0.3), ("hf:org/set", 500), ("hf:org/other", None)]
    assert parse_data_spec(" a.json : .5 ") == [("a.json", 0.5)]
    for bad, message in [("a.json + ", "empty source"), ("a.json:1.5", r"share 1\.5 of a\.json must be in \(0, 1\]"),
                         ("a.json:0", "count 0 of a.json must be at least 1")]:
        with pytest.raises(DataError, match=message):
            parse_data_spec(bad)


def test_mixture_keeps_ratios_and_is_deterministic(tmp_path):
    a, b = _write_set(tmp_path / "a.json", "甲", 100), _write_set(tmp_path / "b.json", "乙", 50)
    spec = f"{a}:1.0 + {b}:0.3"
    records, report = load_training_data(spec, seed=7)
    assert Counter(_sources(records)) == {"甲": 100, "乙": 15}
    again, _ = load_training_data(spec, seed=7)
    assert again == records
    other, _ = load_training_data(spec, seed=8)
    assert Counter(_sources(other)) == {"甲": 100, "乙": 15} and other != records  # another draw, same ratio
    assert (report.path, report.read, report.kept) == (spec, 150, 115)
    assert [(s.path, s.read, s.kept, dict(s.cut)) for s in report.sources] == [
        (a, 100, 100, {}), (b, 50, 15, {"not drawn (share 0.3)": 35})]
    report.check()
    assert str(report).splitlines()[1].strip().startswith(f"{a}: read 100 = used 100")


def test_mixture_counts_and_limit_keep_the_ratio(tmp_path):
    a, b = _write_set(tmp_path / "a.json", "甲", 100), _write_set(tmp_path / "b.json", "乙", 50)
    records, report = load_training_data(f"{a}:60 + {b}:30", limit=30, seed=1)
    assert Counter(_sources(records)) == {"甲": 20, "乙": 10}
    assert [dict(s.cut) for s in report.sources] == [{"not drawn (count 60)": 40, "over limit 30": 40},
                                                    {"not drawn (count 30)": 20, "over limit 30": 20}]
    with pytest.raises(DataError, match="has 50 usable records, fewer than the 80 asked for"):
        load_training_data(f"{a} + {b}:80")


def test_mixture_over_length_drop_is_booked_on_its_source(tmp_path):
    a, b = _write_set(tmp_path / "a.json", "甲", 4), _write_set(tmp_path / "b.json", "乙", 4)
    records, report = load_training_data(f"{a} + {b}:0.5")
    report.drop(records[-1], "longer than max_length=8", "20 tokens")
    report.check()
    assert (report.kept, report.sources[1].kept, report.sources[1].skipped) == (
        5, 1, {"longer than max_length=8": 1})


def test_mixture_of_hub_and_file(tmp_path, monkeypatch):
    rows = [{"instruction": f"丙 {i}", "output": "答"} for i in range(10)]
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=lambda *a, **k: rows))
    a = _write_set(tmp_path / "a.json", "甲", 10)
    records, report = load_training_data(f"{a}:0.5 + hf:demo/set:0.2")
    assert Counter(_sources(records)) == {"甲": 5, "丙": 2}
    assert report.sources[1].path == "hf:demo/set" and records[-1]["where"].startswith("row ")


def test_a_count_draws_the_same_records_alone_and_in_a_mixture(tmp_path):
    # Finding 04's arms: "instructions:N" and "instructions:N + cot:M" train on the same N instruction records.
    a, b = _write_set(tmp_path / "a.json", "甲", 40), _write_set(tmp_path / "b.json", "乙", 20)
    alone, _ = load_training_data(f"{a}:12", seed=3)
    mixed, _ = load_training_data(f"{a}:12 + {b}:6", seed=3)
    assert len(alone) == 12 and mixed[:12] == alone and Counter(_sources(mixed[12:])) == {"乙": 6}
    assert load_training_data(f"{a}:12", seed=4)[0] != alone  # the seed picks them


def test_hub_source_may_name_one_file_of_a_dataset_repo(tmp_path, monkeypatch):
    calls = []
    cot = _write_set(tmp_path / "CoT_Chinese_data.json", "丙", 10)

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename))
        return str(cot)

    def fake_load_dataset(repo, split, **kwargs):
        calls.append((repo, split))
        return [{"instruction": f"丁 {i}", "input": "", "output": "好的"} for i in range(10)]

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake_load_dataset))
    chain = "hf:QingyiSi/Alpaca-CoT/Chain-of-Thought/CoT_Chinese_data.json"
    records, report = load_training_data(f"{chain}:4 + hf:demo/set")
    assert calls == [("QingyiSi/Alpaca-CoT", "Chain-of-Thought/CoT_Chinese_data.json"),
                     ("demo/set", "train")]  # one file is downloaded and read like a local file; a plain id loads
    assert [s.path for s in report.sources] == [chain, "hf:demo/set"] and len(records) == 4 + 10


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
    records, report = validate_records(((f"row {i + 1}", r) for i, r in enumerate(rows)), "hf:demo/set")
    assert [(r["where"], r["messages"][0]["content"]) for r in records] == [("row 1", "你好"), ("row 3", "问")]
    assert dict(report.skipped) == {"empty record (every field is null)": 1}
    assert dict(report.notes) == {"unknown field 'id' ignored": 1, "mixed formats: alpaca 1, sharegpt 1": 1}
    assert report.path == "hf:demo/set"


def test_validate_records_empty_iterable_is_fatal():
    with pytest.raises(DataError, match=r"^hf:x: no records$"):
        validate_records([], "hf:x")


# --------------------------------------------------------------------------- DataReport


def test_report_drop_after_keep_keeps_books_balanced():
    records, report = load_instructions(_path("alpaca_ok.json"))
    report.drop(records[2], "too long", "1200 tokens > 1024")
    report.check()
    assert (report.read, report.kept, report.skipped["too long"]) == (3, 2, 1)
    assert report.examples == [("record 3 (line 8)", "too long", "1200 tokens > 1024")]


def test_report_check_raises_with_numbers():
    report = DataReport(path="x.jsonl", read=3, kept=1)
    report.skip("duplicate", "line 2")
    with pytest.raises(AssertionError, match=r"x\.jsonl: read 3 != used 1 \+ skipped 1 \+ left out 0"):
        report.check()


def test_report_examples_are_capped_per_reason():
    report = DataReport(path="x.jsonl")
    for line in range(1, 8):
        report.skip("duplicate", f"line {line}")
    assert report.skipped["duplicate"] == 7
    assert [w for w, _, _ in report.examples] == ["line 1", "line 2", "line 3"]
    assert "duplicate: 7 [line 1, line 2, line 3, ...]" in str(report)


def test_report_str_and_to_dict():
    path = _path("conv_bad_turns.jsonl")
    _, report = load_instructions(path)
    text = str(report)
    head = f"{path}: read 6 = used 1 + skipped 5 (conversation: turn is not an object: 1 [line 1]; "
    assert text.splitlines()[0].startswith(head)
    assert "  e.g. line 2: conversation: missing field 'value': turn 1" in text
    assert text.splitlines()[-1] == "  note: unknown turn field 'weight' ignored"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["read"] == 6 and data["kept"] == 1
    assert data["skipped"]["empty field 'conversations'"] == 1
    first = {"where": "line 1", "reason": "conversation: turn is not an object", "detail": "turn 1 is str"}
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
    assert [r["where"] for r in records] == ["row 1"]
    assert (report.path, dict(report.skipped)) == ("hf:demo/set", {"duplicate": 1})
    assert report.examples == [("row 2", "duplicate", "same as row 1")]


def test_a_hub_file_or_a_url_source_is_fetched_and_read_like_a_local_file(monkeypatch, tmp_path):
    # Repos that `datasets` cannot load (a loading script: BAAI/COIG) and files on GitHub (pCLUE) are sources
    # too; the downloads are stubbed here, the reading and the per-source report are the real ones.
    import huggingface_hub

    from helpers import eval_sets

    local = tmp_path / "tasks.jsonl"
    local.write_text((ROOT / "data_samples" / "tasks_zh.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda repo, name, repo_type: calls.append((repo, name, repo_type)) or str(local))
    monkeypatch.setattr(eval_sets, "fetch", lambda url: calls.append(url) or local)
    spec = "hf:org/set/dir/tasks.jsonl:10 + https://example.org/pCLUE_train_1.json:0.5"
    records, report = load_training_data(spec, seed=1)
    assert calls == [("org/set", "dir/tasks.jsonl", "dataset"), "https://example.org/pCLUE_train_1.json"]
    names = ["hf:org/set/dir/tasks.jsonl", "https://example.org/pCLUE_train_1.json"]
    assert [s.path for s in report.sources] == names and [s.kept for s in report.sources] == [10, 76]
    assert {r["source"] for r in records} == set(names) and report.read == 2 * 152

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DataError, match=r"hf:org/set/dir/tasks.jsonl: could not download.*by hand"):
        load_training_data("hf:org/set/dir/tasks.jsonl")
