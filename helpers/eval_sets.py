"""Evaluation sets: Belle-eval (open instructions) and Chinese exams (MMCU, CMMLU, C-Eval) as DataFrames.

Every loader returns the same columns whatever the source format, so the scoring code in
`helpers.evaluate` never looks at file formats:
    load_belle_eval -> item_id, category, question, reference
    load_exam       -> item_id, subject, question, A, B, C, D, answer   (answer: sorted letters, "B" or "AC")
Sources are local files, http(s) URLs (downloaded once into cache_dir("benchmarks")) or, for CMMLU,
"hf:haonan-li/cmmlu" through `datasets` (cached by `datasets` after the first download).
"""
from __future__ import annotations

import hashlib
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


def _read_records(path: Path) -> list[dict]:
    """Records of a JSON array or JSONL file (Belle's eval_set.json is one object per line)."""
    from .data import DataError, InvalidLine, iter_json_text, read_text  # the training-data parser, reused

    text, _ = read_text(path)
    rows = []
    try:
        for line, rec in iter_json_text(text, path):
            if isinstance(rec, InvalidLine):
                raise BenchmarkError(f"{path}: invalid JSON at line {line} ({rec.message})")
            if not isinstance(rec, dict):
                raise BenchmarkError(f"{path}: expected a JSON array of objects or one JSON object per line "
                                     f"(line {line} holds a {type(rec).__name__})")
            rows.append(rec)
    except DataError as err:
        raise BenchmarkError(f"{path}: invalid JSON ({err})") from None
    return rows


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


def load_belle_eval(source, limit: int | None = None) -> pd.DataFrame:
    """Belle-eval (JSON array or JSONL of question/std_answer/class) as item_id, category, question, reference."""
    path = _local(source)
    rows = []
    for i, rec in enumerate(_read_records(path)):
        missing = [k for k in ("question", "std_answer", "class") if k not in rec]
        if missing:
            raise BenchmarkError(f"{path}: record {i} lacks {', '.join(missing)}")
        rows.append({"item_id": str(rec.get("id", i)), "category": normalise_category(rec["class"]),
                     "question": str(rec["question"]), "reference": str(rec["std_answer"])})
    df = pd.DataFrame(rows, columns=BELLE_COLUMNS)
    return _round_robin(df, "category", limit, BELLE_CATEGORIES)


# ------------------------------------------------------------------------------------------------ exams

# An option letter starts the text or follows whitespace/punctuation, then a separator: "A:", "A．", "B、".
_MARK = r"(?:^|(?<=[\s;；,，。])){}\s*[:：.．、)）]\s*"


def _letters(answer) -> str:
    """Answer letters as a sorted, de-duplicated upper-case string ("b" -> "B", "C,A" -> "AC")."""
    text = "".join(answer) if isinstance(answer, list) else str(answer)
    return "".join(sorted(set(re.findall(r"[A-D]", unicodedata.normalize("NFKC", text).upper()))))


def _split_options(options) -> dict:
    """MMCU's option string "A:..\\nB:.." (also "A." / "A：" / a list) as {"A": .., "B": .., ...}."""
    if isinstance(options, list):
        options = "\n".join(str(o) for o in options)
    text = unicodedata.normalize("NFKC", str(options))
    marks, pos = [], 0
    for letter in "ABCD":  # in order, so an "A." inside option B's text cannot be taken for option A
        mark = re.compile(_MARK.format(letter)).search(text, pos)
        if mark is None:
            raise BenchmarkError(f"could not find option {letter} in {str(options)[:80]!r}")
        marks.append(mark)
        pos = mark.end()
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return {m.group(0).strip()[0]: text[m.end():end].strip() for m, end in zip(marks, ends)}


def _exam_row(item_id: str, subject, question, options: dict, answer) -> dict:
    return {"item_id": item_id, "subject": normalise_subject(subject), "question": str(question).strip(),
            **{k: str(options[k]).strip() for k in "ABCD"}, "answer": _letters(answer)}


def _exam_from_record(rec: dict, i: int, stem: str) -> dict:
    item_id = str(rec.get("id", f"{stem}-{i}"))
    if "题目" in rec:  # MMCU
        options = _split_options(rec["选项"])
        return _exam_row(item_id, rec.get("类别", stem), rec["题目"], options, rec["答案"])
    if "question" in rec and all(k in rec for k in "ABCD"):  # our sample format
        return _exam_row(item_id, rec.get("subject", stem), rec["question"], rec, rec["answer"])
    raise BenchmarkError(f"record {i} of {stem}: neither MMCU keys (题目/选项/答案) nor question/A-D/answer")


def _exam_from_csv(path: Path) -> pd.DataFrame:
    """A CMMLU or C-Eval CSV; the subject comes from the file name (C-Eval's _dev/_val/_test dropped)."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = {c.lower(): c for c in raw.columns}
    if "answer" not in cols:
        raise BenchmarkError(f"{path}: no Answer column (C-Eval's test split hides answers; use its val split)")
    missing = [c for c in ("question", "a", "b", "c", "d") if c not in cols]
    if missing:
        raise BenchmarkError(f"{path}: missing column(s) {', '.join(missing)}")
    stem = re.sub(r"_(dev|val|test)$", "", path.stem)
    ids = raw[cols["id"]] if "id" in cols else range(len(raw))
    rows = [_exam_row(f"{stem}-{i}", stem, r[cols["question"]], {k: r[cols[k.lower()]] for k in "ABCD"},
                      r[cols["answer"]]) for i, r in zip(ids, raw.to_dict("records"))]
    return pd.DataFrame(rows, columns=EXAM_COLUMNS)


def _exam_from_json(path: Path) -> pd.DataFrame:
    rows = [_exam_from_record(rec, i, path.stem) for i, rec in enumerate(_read_records(path))]
    return pd.DataFrame(rows, columns=EXAM_COLUMNS)


def _exam_from_dir(path: Path) -> pd.DataFrame:
    files = sorted(path.glob("*.csv"))
    if not files:
        raise BenchmarkError(f"{path}: a directory source must hold CMMLU / C-Eval *.csv files; found none")
    return pd.concat([_exam_from_csv(f) for f in files], ignore_index=True)


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
    raw = ds.to_pandas().rename(columns=str.lower)
    rows = [_exam_row(f"{config}-{i}", group, r["question"], {k: r[k.lower()] for k in "ABCD"}, r["answer"])
            for i, r in enumerate(raw.to_dict("records"))]
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

    `split` ("test" or "dev", the k-shot exemplars) applies to the hf source; a file is its own split.
    """
    subjects = _check_subjects(subjects)
    text = str(source)
    if text.startswith("hf:"):
        unknown = sorted(set(subjects or ()) - set(EXAM_SUBJECTS))
        if unknown:
            raise ValueError(f"hf sources map onto {', '.join(EXAM_SUBJECTS)} only; got {', '.join(unknown)}")
        df = _exam_from_hf(text.removeprefix("hf:"), subjects, split)
    else:
        path = _local(source)
        if path.is_dir():
            df = _exam_from_dir(path)
        else:
            df = _exam_from_csv(path) if path.suffix.lower() == ".csv" else _exam_from_json(path)
    if subjects is not None:
        df = df[df["subject"].isin(subjects)]
    return _round_robin(df.reset_index(drop=True), "subject", limit, EXAM_SUBJECTS)
