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


# ------------------------------------------------------------- public layouts, split by split (#7.4, #7.1)

CMMLU_HEADER = ",Question,A,B,C,D,Answer\n"
CEVAL_HEADER = "id,question,A,B,C,D,answer,explanation\n"


def _cmmlu(path: Path, *rows: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(CMMLU_HEADER + "".join(f"{i},{r}\n" for i, r in enumerate(rows)), encoding="utf-8")
    return path


def _ceval(path: Path, *rows: str, answers: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = CEVAL_HEADER if answers else "id,question,A,B,C,D\n"
    path.write_text(header + "".join(f"{i},{r}\n" for i, r in enumerate(rows)), encoding="utf-8")
    return path


@pytest.fixture
def cmmlu_root(tmp_path):
    """CMMLU's layout: data/test/<subject>.csv and data/dev/<subject>.csv, same file names in both."""
    root = tmp_path / "data"
    _cmmlu(root / "test" / "agronomy.csv", "测试题一,甲,乙,丙,丁,B", "测试题二,甲,乙,丙,丁,C")
    _cmmlu(root / "test" / "college_law.csv", "测试法律题,甲,乙,丙,丁,A")
    _cmmlu(root / "dev" / "agronomy.csv", "示例题一,甲,乙,丙,丁,D")
    _cmmlu(root / "dev" / "college_law.csv", "示例法律题,甲,乙,丙,丁,A")
    return root


def test_cmmlu_root_keeps_test_and_dev_apart(cmmlu_root):
    test, dev = load_exam(cmmlu_root), load_exam(cmmlu_root, split="dev")
    assert sorted(test["question"]) == ["测试法律题", "测试题一", "测试题二"]
    assert sorted(dev["question"]) == ["示例法律题", "示例题一"]
    assert test["item_id"].is_unique and list(test["item_id"]) == ["agronomy-0", "agronomy-1", "college_law-0"]
    assert set(test["subject"]) == {"agronomy", "law"}  # no MMCU subject needs to be present
    # the split folders themselves load as their own split
    assert len(load_exam(cmmlu_root / "test")) == 3 and len(load_exam(cmmlu_root / "dev", split="dev")) == 2


def test_flat_folder_with_dev_files_beside_test_files(tmp_path):
    _cmmlu(tmp_path / "agronomy.csv", "测试题一,甲,乙,丙,丁,B")
    _cmmlu(tmp_path / "agronomy_dev.csv", "示例题一,甲,乙,丙,丁,D")
    assert list(load_exam(tmp_path)["question"]) == ["测试题一"]
    assert list(load_exam(tmp_path, split="dev")["question"]) == ["示例题一"]


def test_ceval_layout_val_is_scored_and_dev_gives_exemplars(tmp_path):
    root = tmp_path / "ceval-exam"
    _ceval(root / "val" / "law_val.csv", "民事权利能力始于,出生,成年,入学,就业,A,", "题二,甲,乙,丙,丁,C,")
    _ceval(root / "dev" / "law_dev.csv", "示例,甲,乙,丙,丁,B,解析")
    test_dir = root / "test"
    _ceval(test_dir / "law_test.csv", "无答案的题,甲,乙,丙,丁", answers=False)
    dev = load_exam(root, split="dev")
    assert list(dev["question"]) == ["示例"] and list(dev["item_id"]) == ["law-0"]
    assert list(load_exam(root / "val")["question"]) == ["民事权利能力始于", "题二"]
    assert len(load_exam(root, split="val")) == 2
    with pytest.raises(BenchmarkError, match=r"law_test.csv: no Answer column.*val"):
        load_exam(root)  # its test split hides the answers
    # files side by side in one folder: test request -> val (no test files with answers there), dev -> dev
    flat = tmp_path / "flat"
    for f in (root / "val" / "law_val.csv", root / "dev" / "law_dev.csv"):
        (flat / f.name).parent.mkdir(exist_ok=True)
        (flat / f.name).write_bytes(f.read_bytes())
    assert len(load_exam(flat)) == 2 and len(load_exam(flat, split="dev")) == 1


def test_a_file_marked_as_another_split_is_an_error(cmmlu_root, tmp_path):
    with pytest.raises(BenchmarkError, match=r"agronomy.csv is marked as the dev split.*loaded as the test split"):
        load_exam(cmmlu_root / "dev" / "agronomy.csv")
    dev_file = _cmmlu(tmp_path / "law_dev.csv", "示例,甲,乙,丙,丁,A")
    with pytest.raises(BenchmarkError, match="marked as the dev split"):
        load_exam(dev_file)
    assert len(load_exam(dev_file, split="dev")) == 1
    with pytest.raises(BenchmarkError, match=r"marked as the test split.*loaded as the dev split"):
        load_exam(cmmlu_root / "test" / "agronomy.csv", split="dev")


def test_a_folder_without_the_asked_split_says_what_it_has(tmp_path):
    _cmmlu(tmp_path / "law_test.csv", "题,甲,乙,丙,丁,A")
    with pytest.raises(BenchmarkError, match=r"no dev files here \(found: test\)"):
        load_exam(tmp_path, split="dev")
    with pytest.raises(ValueError, match="split must be one of test, val, dev"):
        load_exam(tmp_path, split="train")


def test_duplicate_item_ids_are_an_error(tmp_path):
    rows = '{"id": "q1", "question": "q", "A": "1", "B": "2", "C": "3", "D": "4", "answer": "A"}\n'
    (tmp_path / "dup.jsonl").write_text(rows * 2, encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"dup.jsonl: 1 duplicate item id\(s\), e.g. 'q1'"):
        load_exam(tmp_path / "dup.jsonl")


def test_one_cmmlu_csv_without_mmcu_subjects(tmp_path):
    df = load_exam(_cmmlu(tmp_path / "agronomy.csv", "题一,甲,乙,丙,丁,B", "题二,甲,乙,丙,丁,A"), limit=1)
    assert list(df["subject"]) == ["agronomy"] and len(df) == 1


# -------------------------------------------------------------- bad rows are errors with a place (#7.3, #7.5)

def _bad_cmmlu(tmp_path, body: str) -> Path:
    path = tmp_path / "college_medicine.csv"
    path.write_text(CMMLU_HEADER + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, message", [
    ("0,题一,甲,乙,丙,丁,B\n1,题二,甲,乙,丙,丁,E\n", r"line 3: field 'Answer' is 'E', not option letters A-D"),
    ("0,题一,甲,乙,丙,丁,\n", r"line 2: field 'Answer' is '', not option letters"),
    ("0,题一,甲,乙,丙,丁,答案不明\n", r"line 2: field 'Answer' is '答案不明'"),
    ("0,题一,甲,乙,丁,B\n", r"line 2: 6 fields where the header has 7 \(,Question,A,B,C,D,Answer\): a field is missing"),
    ("0,题一,甲,乙,丙,丁,B,多余\n", r"line 2: 8 fields where the header has 7"),
    ("0,题一,甲,,丙,丁,B\n", r"line 2: field 'B' is empty"),
    ("0,,甲,乙,丙,丁,B\n", r"line 2: field 'Question' is empty"),
    ('0,"题一\n跨行",甲,乙,丙,丁,B\n1,题二,甲,乙,丙,,C\n', r"line 4: field 'D' is empty"),  # line of the record
])
def test_bad_csv_rows_name_file_line_and_field(tmp_path, body, message):
    path = _bad_cmmlu(tmp_path, body)
    with pytest.raises(BenchmarkError, match=rf"college_medicine.csv: {message}"):
        load_exam(path)


def test_csv_answers_accept_letters_in_any_form(tmp_path):
    path = _bad_cmmlu(tmp_path, "0,题一,甲,乙,丙,丁, b \n1,题二,甲,乙,丙,丁,\"C,A\"\n2,题三,甲,乙,丙,丁,Ｄ\n")
    assert list(load_exam(path)["answer"]) == ["B", "AC", "D"]


def test_malformed_csv_names_the_file(tmp_path):
    path = _bad_cmmlu(tmp_path, '0,"题一,甲,乙,丙,丁,B\n')  # a quote never closed
    with pytest.raises(BenchmarkError, match="college_medicine.csv"):
        load_exam(path)


def test_empty_and_undecodable_csv_name_the_file(tmp_path):
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"empty.csv: empty file"):
        load_exam(tmp_path / "empty.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81\x00" * 10)
    with pytest.raises(BenchmarkError, match="binary.csv"):
        load_exam(tmp_path / "binary.csv")


def test_mmcu_record_errors_name_file_record_and_field(tmp_path):
    bad = tmp_path / "mmcu.json"
    bad.write_text('[{"类别": "医学", "题目": "q", "选项": "A:1\\nB:2\\nC:3\\nD:4", "答案": "A"},\n'
                   ' {"类别": "医学", "题目": "q2", "选项": "", "答案": "A"}]', encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"mmcu.json: record 1 \(line 2\): field '选项': could not find option A"):
        load_exam(bad)
    bad.write_text('[{"类别": "医学", "题目": "q", "选项": "A:1\\nB:2\\nC:3\\nD:4", "答案": "E"}]', encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"mmcu.json: record 0 \(line 1\): field '答案' is 'E'"):
        load_exam(bad)
    bad.write_text('[{"类别": "医学", "题目": null, "选项": "A:1\\nB:2\\nC:3\\nD:4", "答案": "A"}]', encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"record 0 \(line 1\): field '题目' is null"):
        load_exam(bad)


def test_hf_rows_are_checked_too(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split, **kw: datasets.Dataset.from_dict(
        {"Question": ["q"], "A": ["a"], "B": ["b"], "C": ["c"], "D": ["d"], "Answer": ["F"]}))
    with pytest.raises(BenchmarkError, match=r"haonan-li/cmmlu \(professional_psychology, split=test\): "
                                             r"record 0: field 'Answer' is 'F'"):
        load_exam("hf:haonan-li/cmmlu", subjects=["psychology"])


# ------------------------------------------------------------------------ Belle-eval records (#7.2, #7.5)

def _belle(tmp_path, *records) -> Path:
    import json

    path = tmp_path / "eval_set.json"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_belle_empty_and_null_references_are_kept_as_no_reference(tmp_path):
    path = _belle(tmp_path, {"question": "写一首诗", "std_answer": "", "class": "generation"},
                  {"question": "想几个名字", "std_answer": None, "class": "brainstorming"},
                  {"question": "1+1=?", "std_answer": "2", "class": "math"})
    df = load_belle_eval(path)
    assert list(df["reference"]) == ["", "", "2"]  # never the text "None"


@pytest.mark.parametrize("record, message", [
    ({"question": "q", "std_answer": "a", "class": "poetry"}, r"record 1 \(line 2\): field 'class': unknown "
                                                              r"Belle-eval category 'poetry'"),
    ({"question": None, "std_answer": "a", "class": "math"}, r"record 1 \(line 2\): field 'question' is null"),
    ({"question": "  ", "std_answer": "a", "class": "math"}, r"record 1 \(line 2\): field 'question' is empty"),
    ({"question": "q", "std_answer": "a", "class": None}, r"record 1 \(line 2\): field 'class' is null"),
    ({"question": "q", "std_answer": ["a"], "class": "math"}, r"record 1 \(line 2\): field 'std_answer' is a list"),
])
def test_belle_record_errors_name_file_record_and_field(tmp_path, record, message):
    path = _belle(tmp_path, {"question": "好的题", "std_answer": "好", "class": "math"}, record)
    with pytest.raises(BenchmarkError, match=rf"eval_set.json: {message}"):
        load_belle_eval(path)
