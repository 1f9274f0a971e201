"""helpers.eval_sets: category/subject names, Belle-eval and exam loaders, URL cache, offline errors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import requests


from helpers import eval_sets
from helpers.eval_sets import (
    BELLE_CATEGORIES, BenchmarkError, cached_path, fetch, load_belle_eval, load_exam,
    normalise_category, normalise_subject,
)

ROOT = Path(__file__).resolve().parents[1]

FIX = ROOT / "tests" / "fixtures"
EXAM_COLUMNS = ["item_id", "subject", "question", "A", "B", "C", "D", "answer"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Every test gets an empty cache, so downloads and cached files never leak between tests."""
    monkeypatch.setenv("ZH_COOKBOOK_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------ categories

VARIANTS = [
    ("code", "code"), ("Code", "code"), ("coding", "code"), ("代码", "code"), ("编程", "code"),
    ("open qa", "open_qa"), ("Open QA", "open_qa"), ("open_qa", "open_qa"), (" open-qa ", "open_qa"),
    ("openqa", "open_qa"), ("OPEN  QA", "open_qa"), ("开放问答", "open_qa"), ("开放式问答", "open_qa"),
    ("brainstorming", "brainstorm"), ("Brainstorm", "brainstorm"), ("头脑风暴", "brainstorm"),
    ("classification", "classification"), ("classify", "classification"), ("分类", "classification"),
    ("math", "math"), ("Mathematics", "math"), ("数学", "math"),
    ("generation", "generation"), ("Generation ", "generation"), ("生成", "generation"), ("文本生成", "generation"),
    ("summarization", "summary"), ("summarisation", "summary"), ("Summary", "summary"), ("摘要", "summary"),
    ("总结", "summary"),
    ("rewrite", "rewrite"), ("rewriting", "rewrite"), ("改写", "rewrite"), ("重写", "rewrite"),
    ("closed qa", "close_qa"), ("close qa", "close_qa"), ("closed_qa", "close_qa"), ("Closed-QA", "close_qa"),
    ("closeqa", "close_qa"), ("封闭问答", "close_qa"), ("封闭式问答", "close_qa"),
    ("extract", "extract"), ("extraction", "extract"), ("抽取", "extract"), ("信息抽取", "extract"),
    ("\tEXTRACTION\n", "extract"), ("ｃｏｄｅ", "code"),  # fullwidth letters
]


@pytest.mark.parametrize("name,expected", VARIANTS)
def test_normalise_category_variants(name, expected):
    assert normalise_category(name) == expected


def test_every_canonical_name_maps_to_itself():
    assert [normalise_category(c) for c in BELLE_CATEGORIES] == list(BELLE_CATEGORIES)
    assert len(VARIANTS) >= 30


@pytest.mark.parametrize("bad", ["poetry", "", "open", "qa", "closed question", None, 3])
def test_normalise_category_rejects_unknown(bad):
    with pytest.raises(ValueError) as err:
        normalise_category(bad)
    message = str(err.value)
    assert repr(bad) in message
    assert all(c in message for c in BELLE_CATEGORIES)


@pytest.mark.parametrize("name,expected", [
    ("medicine", "medicine"), ("医学", "medicine"), (" Law ", "law"), ("法律", "law"), ("法学", "law"),
    ("心理学", "psychology"), ("教育", "education"), ("教育学", "education"),
    ("college_medicine", "medicine"), ("professional_psychology", "psychology"), ("jurisprudence", "law"),
    ("clinical_medicine_val", "medicine"), ("teacher_qualification", "education"),
    ("agronomy", "agronomy"), ("药理学", "药理学"),  # unknown subjects are kept as given
])
def test_normalise_subject(name, expected):
    assert normalise_subject(name) == expected


# ------------------------------------------------------------------------------------ Belle-eval

def test_belle_json_array_and_jsonl_agree():
    arr, lines = load_belle_eval(FIX / "eval_belle.json"), load_belle_eval(FIX / "eval_belle.jsonl")
    assert list(arr.columns) == ["item_id", "category", "question", "reference"]
    assert len(arr) == 28
    pd.testing.assert_frame_equal(arr, lines)
    assert set(arr["category"]) == set(BELLE_CATEGORIES)
    first = arr.iloc[0]
    assert (first["item_id"], first["question"], first["reference"]) == ("0", "code 问题 0", "code 参考答案 0")


def test_belle_limit_is_stratified_and_deterministic():
    ten = load_belle_eval(FIX / "eval_belle.json", limit=10)
    assert sorted(ten["category"]) == sorted(BELLE_CATEGORIES)  # one of each
    twelve = load_belle_eval(FIX / "eval_belle.json", limit=12)
    assert twelve["category"].value_counts().max() == 2 and twelve["category"].nunique() == 10
    pd.testing.assert_frame_equal(twelve, load_belle_eval(FIX / "eval_belle.json", limit=12))
    assert list(twelve["item_id"].astype(int)) == sorted(twelve["item_id"].astype(int))  # file order kept
    assert len(load_belle_eval(FIX / "eval_belle.json", limit=1000)) == 28


def test_belle_missing_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"question": "q", "class": "math"}]', encoding="utf-8")
    with pytest.raises(BenchmarkError, match="std_answer"):
        load_belle_eval(bad)


def test_belle_invalid_json_names_the_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('[{"question": "q", "std_answer": "a", "class": "math"},]', encoding="utf-8")
    with pytest.raises(BenchmarkError, match="broken.json: invalid JSON"):
        load_belle_eval(bad)


def test_sample_eval_set_if_present():
    sample = ROOT / "data_samples" / "eval_zh.json"
    if not sample.exists():
        pytest.skip("data_samples/eval_zh.json not written yet")
    df = load_belle_eval(sample)
    assert set(df["category"]) <= set(BELLE_CATEGORIES)
    assert df["item_id"].is_unique


# --------------------------------------------------------------------------------------- URL cache

URL = "https://example.org/belle/eval_set.json?raw=1"


def test_url_source_uses_the_cached_file(monkeypatch):
    def no_download(url, dest):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(eval_sets, "_download", no_download)
    target = cached_path(URL)
    assert target.name.endswith("-eval_set.json")
    target.write_bytes((FIX / "eval_belle.jsonl").read_bytes())
    assert len(load_belle_eval(URL)) == 28


def test_url_source_downloads_once(monkeypatch):
    calls = []

    def fake_download(url, dest):
        calls.append(url)
        dest.write_bytes((FIX / "eval_belle.json").read_bytes())

    monkeypatch.setattr(eval_sets, "_download", fake_download)
    load_belle_eval(URL)
    load_belle_eval(URL)
    assert calls == [URL]


def test_offline_error_names_url_and_cache_path(monkeypatch):
    def offline(url, dest):
        raise requests.ConnectionError("Name or service not known")

    monkeypatch.setattr(eval_sets, "_download", offline)
    with pytest.raises(BenchmarkError) as err:
        load_belle_eval(URL)
    message = str(err.value)
    assert URL in message and str(cached_path(URL)) in message and "manually" in message


def test_interrupted_download_leaves_no_file(monkeypatch):
    class Broken:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def raise_for_status(self):
            pass

        def iter_content(self, size):
            yield b'[{"question": '
            raise requests.ConnectionError("connection reset")

    monkeypatch.setattr(requests, "get", lambda *a, **k: Broken())
    with pytest.raises(BenchmarkError):
        fetch(URL)
    assert list(cached_path(URL).parent.iterdir()) == []  # neither the target nor a temp file


# ------------------------------------------------------------------------------------------- exams

def test_exam_sample_jsonl():
    df = load_exam(FIX / "eval_exam_sample.jsonl")
    assert list(df.columns) == EXAM_COLUMNS
    assert list(df["subject"]) == ["medicine", "law", "education", "psychology", "medicine", "psychology"]
    assert df.loc[0, ["B", "answer"]].tolist() == ["肝", "B"]
    assert df["item_id"].is_unique


def test_exam_limit_and_subjects():
    df = load_exam(FIX / "eval_exam_sample.jsonl", limit=4)
    assert sorted(df["subject"]) == ["education", "law", "medicine", "psychology"]
    only = load_exam(FIX / "eval_exam_sample.jsonl", subjects=["医学", "psychology"])
    assert set(only["subject"]) == {"medicine", "psychology"} and len(only) == 4


def test_mmcu_json():
    df = load_exam(FIX / "eval_mmcu.json")
    assert list(df.columns) == EXAM_COLUMNS
    assert list(df["subject"]) == ["medicine", "medicine", "law", "psychology", "药理学"]
    assert df.loc[0, ["question", "A", "B", "C", "D", "answer"]].tolist() == ["人体最大的器官是", "皮肤", "肝脏", "肺", "心脏", "A"]
    assert df.loc[1, ["A", "C", "answer"]].tolist() == ["维生素A", "维生素D", "AC"]  # "A." separators, multi-answer
    assert df.loc[2, ["B", "answer"]].tolist() == ["宪法", "B"]  # "A：" separators
    assert df.loc[3, ["A", "B", "D"]].tolist() == ["巴甫洛夫", "斯金纳", "皮亚杰"]  # one line, "A、"
    assert df.loc[4, ["A", "D"]].tolist() == ["解热镇痛药", "利尿药"]  # a list of options


def test_mmcu_unsplittable_options(tmp_path):
    bad = tmp_path / "mmcu.json"
    bad.write_text('[{"类别": "医学", "题目": "q", "选项": "A:1\\nB:2\\nC:3", "答案": "A"}]', encoding="utf-8")
    with pytest.raises(BenchmarkError, match="option D"):
        load_exam(bad)


def test_cmmlu_csv_file_and_directory():
    one = load_exam(FIX / "eval_cmmlu_dir" / "college_medicine.csv")
    assert list(one.columns) == EXAM_COLUMNS
    assert list(one["subject"]) == ["medicine", "medicine"]
    assert list(one["item_id"]) == ["college_medicine-0", "college_medicine-1"]
    assert one.loc[1, ["question", "A", "answer"]].tolist() == ['下列哪项属于"红细胞"的主要功能', "运输氧气", "A"]
    both = load_exam(FIX / "eval_cmmlu_dir")
    assert list(both["subject"]) == ["agronomy", "medicine", "medicine"]  # files in name order
    assert list(both["answer"]) == ["B", "B", "A"]


def test_ceval_csv():
    df = load_exam(FIX / "eval_ceval" / "clinical_medicine_val.csv")
    assert list(df["subject"]) == ["medicine", "medicine"]
    assert list(df["item_id"]) == ["clinical_medicine-0", "clinical_medicine-1"]
    assert df.loc[1, ["D", "answer"]].tolist() == ["体重增加", "D"]


def test_ceval_test_split_has_no_answers():
    with pytest.raises(BenchmarkError, match="val split"):
        load_exam(FIX / "eval_ceval" / "law_test.csv")


def test_missing_file():
    with pytest.raises(BenchmarkError, match="not found"):
        load_exam(FIX / "no_such_exam.jsonl")


def test_hf_source_offline_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'haonan-li/cmmlu' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BenchmarkError) as err:
        load_exam("hf:haonan-li/cmmlu", subjects=["law"])
    message = str(err.value)
    assert "haonan-li/cmmlu" in message and "needs the hub once" in message and "caches" in message


def test_hf_source_maps_cmmlu_subjects(monkeypatch):
    import datasets

    calls = []

    def fake_load(name, config, split, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"Question": [f"{config}?"], "A": ["a"], "B": ["b"], "C": ["c"],
                                           "D": ["d"], "Answer": ["C"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    df = load_exam("hf:haonan-li/cmmlu", subjects=["psychology", "法律"], split="dev")
    assert list(df.columns) == EXAM_COLUMNS
    assert calls[0] == ("haonan-li/cmmlu", "professional_psychology", "dev")
    assert {c[1] for c in calls} == {"professional_psychology", *eval_sets.CMMLU_SUBJECTS["law"]}
    assert set(df["subject"]) == {"psychology", "law"} and set(df["answer"]) == {"C"}
    assert df.loc[0, "item_id"] == "professional_psychology-0"


def test_hf_source_rejects_unmapped_subject():
    with pytest.raises(ValueError, match="agronomy"):
        load_exam("hf:haonan-li/cmmlu", subjects=["agronomy"])
