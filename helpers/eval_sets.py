"""Evaluation sets: Belle-eval (open instructions) and Chinese exams (MMCU, CMMLU, C-Eval) as DataFrames.

Every loader returns the same columns whatever the source format, so the scoring code in
`helpers.evaluate` never looks at file formats:
    load_belle_eval -> item_id, category, question, reference
    load_exam       -> item_id, subject, question, A, B, C, D, answer   (answer: sorted letters, "B" or "AC")
Sources are local files, http(s) URLs (downloaded once into cache_dir("benchmarks")) or, for CMMLU,
"hf:haonan-li/cmmlu" through `datasets` (cached by `datasets` after the first download).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
import unicodedata
from pathlib import Path

import pandas as pd

from .paths import cache_dir, project_path

__all__ = [
    "BELLE_CATEGORIES",
    "BELLE_COLUMNS",
    "EXAM_COLUMNS",
    "EXAM_SUBJECTS",
    "SPLITS",
    "CMMLU_SUBJECTS",
    "CEVAL_SUBJECTS",
    "BenchmarkError",
    "normalise_category",
    "normalise_subject",
    "cached_path",
    "fetch",
    "load_belle_eval",
    "load_exam",
]

BELLE_CATEGORIES = (
    "code", "open_qa", "brainstorm", "classification", "math",
    "generation", "summary", "rewrite", "close_qa", "extract",
)
EXAM_SUBJECTS = ("medicine", "psychology", "law", "education")  # MMCU's four, in the paper's column order
EXAM_COLUMNS = ["item_id", "subject", "question", "A", "B", "C", "D", "answer"]
BELLE_COLUMNS = ["item_id", "category", "question", "reference"]

# Spellings are compared after _squash (NFKC, lower case, no whitespace/_/-), so "Open QA", "open_qa",
# " open-qa " and "openqa" are one key. Chinese names are the ones Belle and Chinese papers use.
_CATEGORY_ALIASES = {
    "code": ("code", "coding", "代码", "编程"),
    "open_qa": ("open_qa", "开放问答", "开放式问答"),
    "brainstorm": ("brainstorm", "brainstorming", "头脑风暴"),
    "classification": ("classification", "classify", "分类"),
    "math": ("math", "maths", "mathematics", "数学"),
    "generation": ("generation", "生成", "文本生成"),
    "summary": ("summary", "summarization", "summarisation", "摘要", "总结"),
    "rewrite": ("rewrite", "rewriting", "改写", "重写"),
    "close_qa": ("close_qa", "closed_qa", "封闭问答", "封闭式问答"),
    "extract": ("extract", "extraction", "抽取", "信息抽取"),
}

# CMMLU has no MMCU split, so its subjects stand in for MMCU's four. This only APPROXIMATES MMCU:
# MMCU's medicine spans many clinical specialities, its psychology is one exam (CMMLU has a single
# psychology subject), and its education is teacher-exam material. Numbers on this mapping are
# comparable between runs here, not with the paper's MMCU table.
CMMLU_SUBJECTS = {
    "medicine": ("anatomy", "clinical_knowledge", "college_medicine", "professional_medicine",
                 "traditional_chinese_medicine", "virology", "nutrition", "college_medical_statistics"),
    "psychology": ("professional_psychology",),
    "law": ("professional_law", "college_law", "jurisprudence", "international_law", "legal_and_moral_basis"),
    "education": ("education", "college_education", "chinese_teacher_qualification"),
}
# C-Eval file stems (without _dev/_val/_test) that belong to the same four groups; C-Eval has no psychology.
CEVAL_SUBJECTS = {
    "medicine": ("clinical_medicine", "basic_medicine", "physician"),
    "law": ("law", "legal_professional"),
    "education": ("teacher_qualification",),
}
_SUBJECT_ALIASES = {
    "medicine": ("medicine", "medical", "医学"),
    "psychology": ("psychology", "心理学", "心理"),
    "law": ("law", "法律", "法学"),
    "education": ("education", "教育", "教育学"),
}


class BenchmarkError(RuntimeError):
    """A benchmark could not be found, downloaded or parsed; the message says what to do."""


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", unicodedata.normalize("NFKC", name).strip().lower())


_CATEGORY_LOOKUP = {_squash(a): canon for canon, aliases in _CATEGORY_ALIASES.items() for a in aliases}
_SUBJECT_LOOKUP = {
    **{s: group for table in (CEVAL_SUBJECTS, CMMLU_SUBJECTS) for group, subs in table.items() for s in subs},
    **{_squash(a): group for group, aliases in _SUBJECT_ALIASES.items() for a in aliases},
}


def normalise_category(name) -> str:
    """The canonical Belle-eval category for any spelling ("Open QA", "closed qa", "头脑风暴", ...)."""
    canon = _CATEGORY_LOOKUP.get(_squash(name)) if isinstance(name, str) else None
    if canon is None:
        raise ValueError(f"unknown Belle-eval category {name!r}; expected one of {', '.join(BELLE_CATEGORIES)} "
                         "(or a known variant such as 'open qa', 'brainstorming', '摘要')")
    return canon


def normalise_subject(name: str) -> str:
    """MMCU's group (medicine/psychology/law/education) for a known subject name; others unchanged."""
    text = str(name).strip()
    key = re.sub(r"_(dev|val|test)$", "", text.lower())  # C-Eval file stems carry their split
    return _SUBJECT_LOOKUP.get(key) or _SUBJECT_LOOKUP.get(_squash(text)) or text


# ------------------------------------------------------------------------------------------- fetching


def cached_path(url: str) -> Path:
    """Where a downloaded benchmark file lives: cache_dir('benchmarks')/<url hash>-<file name>."""
    name = url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    return cache_dir("benchmarks") / f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"


def _download(url: str, dest: Path) -> None:
    import requests

    # Written beside the target and renamed: an interrupted download never looks like a cached file.
    with requests.get(url, timeout=60, stream=True) as resp:
        resp.raise_for_status()
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}-")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in resp.iter_content(1 << 20):
                    out.write(chunk)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def fetch(url: str) -> Path:
    """A local copy of url: the cached file if present, else downloaded once (atomically) into the cache."""
    dest = cached_path(url)
    if dest.exists():
        return dest
    try:
        _download(url, dest)
    except Exception as exc:  # requests' errors, DNS failures, HTTP 4xx/5xx: all mean "get it by hand"
        raise BenchmarkError(
            f"could not download {url} ({type(exc).__name__}: {exc}). If this machine is offline, download "
            f"the file manually and save it as {dest}; it will be used from there."
        ) from exc
    return dest


def _local(source) -> Path:
    text = str(source)
    path = fetch(text) if re.match(r"https?://", text) else project_path(Path(text).expanduser())
    if not path.exists():
        raise BenchmarkError(f"benchmark file not found: {path}")
    return path


def _text(path: Path) -> str:
    from .data import DataError, read_text  # the training-data decoder (UTF-8, BOM, GB18030), reused

    try:
        return read_text(path)[0]
    except DataError as err:  # its message already names the file
        raise BenchmarkError(str(err)) from None


def _read_records(path: Path) -> list[tuple[int, dict]]:
    """(line, record) for each object of a JSON array or JSONL file (Belle's eval_set.json is JSONL)."""
    from .data import DataError, InvalidLine, iter_json_text

    rows = []
    try:
        for line, rec in iter_json_text(_text(path), path):
            if isinstance(rec, InvalidLine):
                raise BenchmarkError(f"{path}: invalid JSON at line {line} ({rec.message})")
            if not isinstance(rec, dict):
                raise BenchmarkError(f"{path}: expected a JSON array of objects or one JSON object per line "
                                     f"(line {line} holds a {type(rec).__name__})")
            rows.append((line, rec))
    except DataError as err:
        raise BenchmarkError(f"{path}: invalid JSON ({err})") from None
    return rows


def _csv_records(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and (line, {column: value}) per row; a row with more or fewer fields is an error."""
    # csv instead of pandas: pandas pads a short row with NaN (so columns silently shift) and its
    # ParserError names no file. Line numbers are where a row starts (quoted fields may span lines).
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    rows, start = [], 1
    try:
        header = next(reader, None)
        if header is None:
            raise BenchmarkError(f"{path}: empty file (expected a header such as ,Question,A,B,C,D,Answer)")
        start = reader.line_num + 1
        for row in reader:
            if any(cell.strip() for cell in row):  # a blank line is not a record
                if len(row) != len(header):
                    raise BenchmarkError(
                        f"{path}: line {start}: {len(row)} fields where the header has {len(header)} "
                        f"({','.join(header)}): a field is missing or an unquoted comma splits one")
                rows.append((start, dict(zip(header, row))))
            start = reader.line_num + 1
    except csv.Error as err:
        raise BenchmarkError(f"{path}: line {start}: malformed CSV ({err})") from None
    return header, rows


def _check_unique_ids(df: pd.DataFrame, source) -> None:
    dup = df.loc[df["item_id"].duplicated(), "item_id"]
    if len(dup):
        raise BenchmarkError(f"{source}: {len(dup)} duplicate item id(s), e.g. {', '.join(map(repr, dup[:3]))}: "
                             "ids must be unique (two files of one subject in the same split?)")


def _round_robin(df: pd.DataFrame, group_col: str, limit: int | None, order=()) -> pd.DataFrame:
    """A deterministic subset of `limit` rows taking groups in turn, so small runs cover every group."""
    if limit is None or limit >= len(df):
        return df.reset_index(drop=True)
    groups = sorted(df[group_col].unique(), key=lambda g: (order.index(g) if g in order else len(order), g))
    rank = df.groupby(group_col, sort=False).cumcount()  # position of a row within its group
    key = rank * len(groups) + df[group_col].map({g: i for i, g in enumerate(groups)})
    keep = key.sort_values(kind="stable").index[:limit]
    return df.loc[sorted(keep)].reset_index(drop=True)  # back in file order


# ------------------------------------------------------------------------------------------ Belle-eval


def _text_field(rec: dict, key: str, where: str, *, allow_empty: bool = False) -> str:
    value = rec[key]
    if value is None and allow_empty:
        return ""  # null means missing: for a reference, the same as Belle's "" (no reference)
    if value is None or isinstance(value, (bool, dict, list)):
        raise BenchmarkError(f"{where}: field {key!r} is {_kind(value)}, expected text")
    text = str(value).strip()
    if not text and not allow_empty:
        raise BenchmarkError(f"{where}: field {key!r} is empty")
    return text


def _kind(value) -> str:
    return "null" if value is None else f"a {type(value).__name__}"


def _belle_row(rec: dict, i: int, line: int, path: Path) -> dict:
    where = f"{path}: record {i} (line {line})"
    missing = [k for k in ("question", "std_answer", "class") if k not in rec]
    if missing:
        raise BenchmarkError(f"{where} lacks {', '.join(missing)}")
    try:
        category = normalise_category(_text_field(rec, "class", where))
    except ValueError as err:
        raise BenchmarkError(f"{where}: field 'class': {err}") from None
    item_id = rec.get("id")
    return {"item_id": str(i if item_id is None else item_id), "category": category,
            "question": _text_field(rec, "question", where),
            "reference": _text_field(rec, "std_answer", where, allow_empty=True)}


def load_belle_eval(source, limit: int | None = None) -> pd.DataFrame:
    """Belle-eval (JSON array or JSONL of question/std_answer/class) as item_id, category, question, reference.

    An empty (or null) std_answer is kept as reference "": Belle leaves it empty for brainstorming,
    generation and most rewrite items, which it judges without a reference (see helpers.judge).
    """
    path = _local(source)
    df = pd.DataFrame([_belle_row(rec, i, line, path) for i, (line, rec) in enumerate(_read_records(path))],
                      columns=BELLE_COLUMNS)
    _check_unique_ids(df, path)
    return _round_robin(df, "category", limit, BELLE_CATEGORIES)


# ------------------------------------------------------------------------------------------------ exams

# An option letter starts the text or follows whitespace/punctuation, then a separator: "A:", "A．", "B、".
_MARK = r"(?:^|(?<=[\s;；,，。])){}\s*[:：.．、)）]\s*"
SPLITS = ("test", "val", "dev")
# What each requested split accepts from files marked by name: C-Eval hides its test answers, so its
# val split is the scored one and stands in for "test"; exemplars come only from dev.
_ACCEPTS = {"test": ("test", "val"), "val": ("val",), "dev": ("dev",)}


def _answer_letters(answer, where: str, field: str) -> str:
    """Answer letters as a sorted, de-duplicated string ("b" -> "B", "C,A" -> "AC"); anything else is an error."""
    text = "".join(map(str, answer)) if isinstance(answer, list) else answer
    letters = re.sub(r"[\s,，、;；/&和]+", "", unicodedata.normalize("NFKC", text).upper()) \
        if isinstance(text, str) else ""
    if not re.fullmatch(r"[A-D]+", letters):
        raise BenchmarkError(f"{where}: field {field!r} is {answer!r}, not option letters A-D (e.g. 'B' or 'AC')")
    return "".join(sorted(set(letters)))


def _split_options(options, where: str) -> dict:
    """MMCU's option string "A:..\\nB:.." (also "A." / "A：" / a list) as {"A": .., "B": .., ...}."""
    if isinstance(options, list):
        options = "\n".join(str(o) for o in options)
    text = unicodedata.normalize("NFKC", str(options))
    marks, pos = [], 0
    for letter in "ABCD":  # in order, so an "A." inside option B's text cannot be taken for option A
        mark = re.compile(_MARK.format(letter)).search(text, pos)
        if mark is None:
            raise BenchmarkError(f"{where}: field '选项': could not find option {letter} in {str(options)[:80]!r}")
        marks.append(mark)
        pos = mark.end()
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return {m.group(0).strip()[0]: text[m.end():end].strip() for m, end in zip(marks, ends)}


def _exam_row(where: str, item_id: str, subject, rec: dict, names: dict) -> dict:
    """One exam item from `rec`, whose fields are named by `names` (question, A-D, answer -> source field)."""
    row = {"item_id": item_id, "subject": normalise_subject(subject),
           "question": _text_field(rec, names["question"], where)}
    for letter in "ABCD":
        row[letter] = _text_field(rec, names[letter], where)
    row["answer"] = _answer_letters(rec[names["answer"]], where, names["answer"])
    return row


_PLAIN_NAMES = {"question": "question", **{k: k for k in "ABCD"}, "answer": "answer"}


def _exam_from_record(rec: dict, i: int, line: int, path: Path) -> dict:
    where, stem = f"{path}: record {i} (line {line})", _subject_stem(path)
    item_id = str(rec["id"]) if rec.get("id") is not None else f"{stem}-{i}"
    if "题目" in rec:  # MMCU: options in one string
        missing = [k for k in ("题目", "选项", "答案") if k not in rec]
        if missing:
            raise BenchmarkError(f"{where} lacks {', '.join(missing)}")
        fields = {"题目": rec["题目"], **_split_options(rec["选项"], where), "答案": rec["答案"]}
        names = {"question": "题目", **{k: k for k in "ABCD"}, "answer": "答案"}
        return _exam_row(where, item_id, rec.get("类别") or stem, fields, names)
    if all(k in rec for k in _PLAIN_NAMES.values()):  # our sample format
        return _exam_row(where, item_id, rec.get("subject") or stem, rec, _PLAIN_NAMES)
    raise BenchmarkError(f"{where}: neither MMCU keys (题目/选项/答案) nor question/A-D/answer")


def _subject_stem(path: Path) -> str:
    return re.sub(r"_(dev|val|test)$", "", path.stem, flags=re.I)


def _exam_from_csv(path: Path) -> pd.DataFrame:
    """A CMMLU or C-Eval CSV; the subject comes from the file name (C-Eval's _dev/_val/_test dropped)."""
    header, records = _csv_records(path)
    names = _column_names(header, path)
    stem = _subject_stem(path)
    rows = [_exam_row(f"{path}: line {line}", f"{stem}-{r[names['id']].strip() if 'id' in names else i}", stem,
                      r, names) for i, (line, r) in enumerate(records)]
    return pd.DataFrame(rows, columns=EXAM_COLUMNS)


def _column_names(header, where) -> dict:
    """{question, A-D, answer[, id]} -> the header's own spelling (CMMLU: Question/Answer, C-Eval: lower case)."""
    cols = {str(c).strip().lower(): c for c in header}
    if "answer" not in cols:
        raise BenchmarkError(f"{where}: no Answer column (C-Eval's test split hides its answers: use its val "
                             "split, the val/ folder or the *_val.csv files)")
    missing = [c for c in ("question", "a", "b", "c", "d") if c not in cols]
    if missing:
        raise BenchmarkError(f"{where}: missing column(s) {', '.join(missing)} (header: {','.join(header)})")
    names = {"question": cols["question"], **{k: cols[k.lower()] for k in "ABCD"}, "answer": cols["answer"]}
    return names | ({"id": cols["id"]} if "id" in cols else {})


def _exam_from_json(path: Path) -> pd.DataFrame:
    rows = [_exam_from_record(rec, i, line, path) for i, (line, rec) in enumerate(_read_records(path))]
    return pd.DataFrame(rows, columns=EXAM_COLUMNS)


def _split_mark(path: Path) -> str | None:
    """The split a file or folder is marked as: a _dev/_val/_test name, or a dev/val/test folder."""
    named = re.search(r"_(dev|val|test)$", path.stem, flags=re.I)
    if named:
        return named.group(1).lower()
    return path.name.lower() if path.is_dir() and path.name.lower() in SPLITS else None


def _file_split(path: Path, root: Path | None = None) -> str | None:
    """A file's split: marked by its own name, else by its folder (dev/x.csv), else by the folder loaded."""
    folders = [path.parent] + ([root] if root is not None else [])
    return _split_mark(path) or next((m for m in map(_split_mark, folders) if m), None)


def _pick_split(marks: dict, split: str, where: Path) -> list[Path]:
    """The files of one split; unmarked files are the scored split (or all of it, if nothing is marked)."""
    chosen = [f for f, m in marks.items() if m == split or (split == "test" and m is None)]
    if not chosen and split == "test":
        chosen = [f for f, m in marks.items() if m == "val"]  # C-Eval: val is the scored split
    if not chosen and not any(marks.values()):
        chosen = list(marks)  # a folder with no split marks is whatever split it is asked for
    if not chosen:
        found = ", ".join(sorted({m or "unmarked" for m in marks.values()}))
        raise BenchmarkError(f"{where}: no {split} files here (found: {found})")
    return sorted(chosen)


def _exam_from_dir(path: Path, split: str) -> pd.DataFrame:
    """CMMLU (test/ + dev/), C-Eval (dev/ val/ test/) or a flat folder of *.csv; one split, never mixed."""
    files = sorted(path.glob("*.csv")) + sorted(f for s in SPLITS for f in (path / s).glob("*.csv"))
    if not files:
        raise BenchmarkError(f"{path}: a directory source must hold CMMLU / C-Eval *.csv files (or test/ dev/ "
                             "val/ folders of them); found none")
    chosen = _pick_split({f: _file_split(f, path) for f in files}, split, path)
    return pd.concat([_exam_from_csv(f) for f in chosen], ignore_index=True)


def _exam_from_file(path: Path, split: str) -> pd.DataFrame:
    mark = _file_split(path)
    if mark is not None and mark not in _ACCEPTS[split]:
        raise BenchmarkError(f"{path} is marked as the {mark} split (by its name or folder) but was loaded as "
                             f"the {split} split: keep test and dev files apart (exam_data vs exam_dev_data)")
    return _exam_from_csv(path) if path.suffix.lower() == ".csv" else _exam_from_json(path)


def _load_hf_config(name: str, config: str, split: str):
    from datasets import load_dataset

    try:
        return load_dataset(name, config, split=split)
    except Exception as exc:
        if "script" not in str(exc).lower():
            raise
        # Recent `datasets` refuse loading scripts; the hub's automatic parquet export has the same rows.
        return load_dataset(name, config, split=split, revision="refs/convert/parquet")


def _hf_subject(name: str, group: str, config: str, split: str) -> pd.DataFrame:
    try:
        ds = _load_hf_config(name, config, split)
    except Exception as exc:  # offline errors come from requests, huggingface_hub or datasets alike
        raise BenchmarkError(
            f"could not load {name} ({config}, split={split}) from the Hugging Face hub ({type(exc).__name__}: "
            f"{exc}). This benchmark needs the hub once; `datasets` caches it afterwards (under HF_HOME). Run "
            "once online, or download CMMLU's CSV files and pass their directory instead."
        ) from exc
    where = f"{name} ({config}, split={split})"
    names = _column_names(ds.column_names, where)
    rows = [_exam_row(f"{where}: record {i}", f"{config}-{i}", group, r, names) for i, r in enumerate(ds)]
    return pd.DataFrame(rows, columns=EXAM_COLUMNS)


def _exam_from_hf(name: str, subjects, split: str) -> pd.DataFrame:
    """CMMLU subjects grouped onto MMCU's four via CMMLU_SUBJECTS; needs the hub once, then datasets' cache."""
    frames = [_hf_subject(name, group, config, split)
              for group in subjects or EXAM_SUBJECTS for config in CMMLU_SUBJECTS[group]]
    return pd.concat(frames, ignore_index=True)


def _check_subjects(subjects) -> list[str] | None:
    if subjects is None:
        return None
    return [normalise_subject(s) for s in ([subjects] if isinstance(subjects, str) else subjects)]


def load_exam(source, limit: int | None = None, subjects=None, split: str = "test") -> pd.DataFrame:
    """Exam questions (sample JSONL, MMCU JSON, CMMLU/C-Eval CSV or folder, "hf:haonan-li/cmmlu") as one table.

    `split` is "test" (scored; C-Eval's val stands in, its test answers being hidden), "val" or "dev" (the
    k-shot exemplars). A folder gives only that split's files (CMMLU's test/ + dev/, C-Eval's dev/ val/
    test/, or *_dev / *_val / *_test.csv side by side); a file marked as another split is an error.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    subjects = _check_subjects(subjects)
    text = str(source)
    if text.startswith("hf:"):
        unknown = sorted(set(subjects or ()) - set(EXAM_SUBJECTS))
        if unknown:
            raise ValueError(f"hf sources map onto {', '.join(EXAM_SUBJECTS)} only; got {', '.join(unknown)}")
        df = _exam_from_hf(text.removeprefix("hf:"), subjects, split)
    else:
        path = _local(source)
        df = _exam_from_dir(path, split) if path.is_dir() else _exam_from_file(path, split)
    _check_unique_ids(df, source)
    if subjects is not None:
        df = df[df["subject"].isin(subjects)]
    return _round_robin(df.reset_index(drop=True), "subject", limit, EXAM_SUBJECTS)
