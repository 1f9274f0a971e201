"""LLM judge for Belle-eval-style scoring through an OpenAI-compatible chat-completions endpoint.

The paper scored each response against a reference answer with ChatGPT. Here any endpoint that speaks
POST {base_url}/chat/completions works (OpenAI, vLLM, a local server). Verdicts are cached on disk, one
file per item, so a re-run costs nothing and a crash mid-run loses at most the item being written.

As in Belle-eval, brainstorming, generation and rewrite items (and any item with an empty reference) are
judged without a reference. Two rubrics: "cookbook" (this project's criteria, 0-10) and "belle" (Belle's
method and 0-1 scale, in this project's words); each states its scale and only that scale is accepted.

The API key is read from the environment at request time only; it is never stored in settings, the
cache, error messages or logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from .eval_sets import BELLE_CATEGORIES

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "CATEGORIES",
    "REFERENCE_FREE_CATEGORIES",
    "RUBRICS",
    "JudgeError",
    "JudgeSettings",
    "check_base_url",
    "judge_settings_from_env",
    "needs_reference",
    "build_judge_messages",
    "parse_score",
    "ask_judge",
    "judge_one",
    "judge_many",
]

JUDGE_PROMPT_VERSION = "v2"  # bump whenever a prompt below changes: it is part of the cache key

CATEGORIES = BELLE_CATEGORIES  # the ten Belle-eval categories, one rubric each
# Belle-eval judges these without a reference (its std_answer is empty for all brainstorming and
# generation items and most rewrite items); any item whose reference is empty is judged the same way.
REFERENCE_FREE_CATEGORIES = ("brainstorm", "generation", "rewrite")

# Retry-After may ask for minutes; a notebook should fail visibly rather than hang that long.
_MAX_RETRY_AFTER_S = 60.0
_sleep = time.sleep  # module-level so tests can swap it for a recorder instead of waiting


class JudgeError(RuntimeError):
    """Raised when the judge cannot produce a score (configuration, HTTP or parsing)."""


def check_base_url(base_url) -> str:
    """base_url without a trailing slash, or a JudgeError when it is not an http(s) URL with a host."""
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    try:
        port_ok = parts is not None and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number
        port_ok = False
    if not (parts and parts.scheme in ("http", "https") and parts.hostname and port_ok):
        raise JudgeError(f"judge base_url {base_url!r} is not an http(s) URL with a host: write it in full, e.g. "
                         "'https://api.openai.com/v1' or 'http://127.0.0.1:8000/v1' (the part before "
                         "/chat/completions)")
    return base_url.rstrip("/")


@dataclass(frozen=True)
class JudgeSettings:
    """Where and how to ask the judge; holds the key's variable NAME, never the key."""

    base_url: str
    model: str
    api_key_env: str = "JUDGE_API_KEY"
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    cache_path: str | None = None
    rubric: str = "cookbook"  # "cookbook" (0-10, this project's prompts) or "belle" (Belle-eval's 0-1 scale)

    def __post_init__(self):
        object.__setattr__(self, "base_url", check_base_url(self.base_url))  # fail where settings are made
        if self.rubric not in RUBRICS:
            raise JudgeError(f"unknown judge rubric {self.rubric!r}; valid rubrics: {', '.join(RUBRICS)}")


def judge_settings_from_env(base_url=None, model=None, cache_path=None, rubric=None) -> JudgeSettings | None:
    """Settings from arguments or JUDGE_BASE_URL / JUDGE_MODEL / JUDGE_RUBRIC; None when no endpoint is set."""
    base_url = base_url or os.environ.get("JUDGE_BASE_URL")
    if not base_url:
        return None  # offline: callers fall back to the paper's numbers or a fake server
    model = model or os.environ.get("JUDGE_MODEL")
    if not model:
        raise JudgeError("a judge base_url is configured but no model: pass model= or set JUDGE_MODEL")
    rubric = rubric or os.environ.get("JUDGE_RUBRIC") or "cookbook"
    return JudgeSettings(base_url=base_url, model=model, cache_path=cache_path, rubric=rubric)


# --------------------------------------------------------------------------------------------------
# Prompts (written for this project; Chinese because the answers being judged are Chinese). A rubric
# states its scale, and the parser accepts only that scale (see parse_score).

_COOKBOOK_SYSTEM = (
    "你是一名严格、公正的中文评审员。{intro}回答的长度本身不是加分理由。"
    "先用两三句话说明理由，然后在最后单独一行严格按照“分数: N”的格式给出分数，"
    "N 为 0 到 10 之间的数字（可带一位小数），这一行之后不要再写任何内容。"
)
_COOKBOOK_WITH_REFERENCE = ("你会看到一个用户指令、一个参考答案和一个待评回答。请依据给定的评分标准，对照参考答案"
                            "评价待评回答的质量。参考答案代表正确方向，但措辞不同而内容正确的回答不应扣分；")
_COOKBOOK_WITHOUT_REFERENCE = ("你会看到一个用户指令和一个待评回答。这类任务没有标准答案：请依据给定的评分标准，"
                               "按指令本身的要求独立评价待评回答的质量；")

_COOKBOOK_CRITERIA = {
    "code": "评分标准（代码）：首先看代码能否正确完成指令要求（可与参考答案实现不同，但必须正确），"
            "有错误或无法运行的代码不超过 4 分；在正确的前提下，再看代码是否清晰、简洁，解释是否到位。",
    "open_qa": "评分标准（开放问答）：回答是否切题、事实是否准确、信息是否充分。"
               "出现明显事实错误应大幅扣分；答非所问不超过 2 分。",
    "brainstorm": "评分标准（头脑风暴）：看回答是否有帮助、与指令是否相关、想法是否丰富多样且具体可行，"
                  "内容是否真实、无害。重复、空泛或离题的要点应扣分。",
    "classification": "评分标准（分类）：最终给出的类别必须与参考答案一致，不一致不超过 2 分；"
                      "类别正确时，再看理由是否合理、表述是否清楚。",
    "math": "评分标准（数学）：最终答案必须与参考答案一致，最终答案错误不超过 2 分；"
            "答案正确时，再看推理过程是否正确、步骤是否清楚。",
    "generation": "评分标准（生成）：看回答是否有帮助、是否紧扣指令要求（体裁、主题、字数等）、"
                  "内容是否丰富真实、无害，语言是否通顺自然。",
    "summary": "评分标准（摘要）：摘要是否覆盖原文要点、是否忠实于原文（不得添加原文没有的信息）、"
               "是否简洁。编造内容应大幅扣分。",
    "rewrite": "评分标准（改写）：是否满足指令中的改写要求（如风格、语气、语言、长度），是否保留原文意思，"
               "语言是否通顺。改变原意或未按要求改写不超过 3 分。",
    "close_qa": "评分标准（封闭问答）：答案必须忠实于指令中给出的文本，并与参考答案一致；"
                "依据文本之外的信息作答或编造内容不超过 2 分。",
    "extract": "评分标准（信息抽取）：抽取结果必须忠实于给定文本，并与参考答案一致；"
               "遗漏、多抽或编造都应扣分，完全错误不超过 2 分。",
}

# Belle-eval's method in this project's words: one criterion per category, a 0-1 score on a "得分:"
# line, and no reference for the open categories.
_BELLE_SYSTEM = (
    "你是一名中文评审员，负责给模型回答打分。分数在 0 到 1 之间（最低 0 分，满分 1 分，可用小数，如 0.6）。"
    "{intro}先简要说明理由，最后单独一行按“得分: X”的格式写出分数，之后不要再写内容。"
)
_BELLE_WITH_REFERENCE = "请参考题目的标准答案，按评分标准评价。"
_BELLE_WITHOUT_REFERENCE = "这类题目没有标准答案，请直接按评分标准评价。"

_BELLE_CRITERIA = {
    "code": "评分标准：像计算机老师那样判断回答能否解决这个编程问题。标准答案只作参考，"
            "代码步骤可以不同，但必须正确。",
    "open_qa": "评分标准：回答越接近标准答案，得分越高。",
    "brainstorm": "评分标准：回答的内容要对问题有帮助，并且真实、没有恶意。",
    "classification": "评分标准：回答与标准答案越接近越好。",
    "math": "评分标准：像数学老师那样判断回答是否正确。最终结果必须与标准答案的最终结果一致；"
            "解题步骤可以不同，但必须正确。",
    "generation": "评分标准：回答语句通顺、符合题目的要求，并且真实、没有恶意。",
    "summary": "评分标准：回答要包含输入文本的要点。",
    "rewrite": "评分标准：回答要完成题目中提出的改写要求。",
    "close_qa": "评分标准：回答与标准答案越接近越好，并且答案要来自题目中提供的信息。",
    "extract": "评分标准：抽取出的结果要来自题目给出的上下文，并且切实回答了问题。",
}

# name -> how a rubric writes its prompts and reads its scores (scale: the top of the 0-N scale).
RUBRICS = {
    "cookbook": {"scale": 10.0, "label": "分数", "system": _COOKBOOK_SYSTEM, "criteria": _COOKBOOK_CRITERIA,
                 "with_reference": _COOKBOOK_WITH_REFERENCE, "without_reference": _COOKBOOK_WITHOUT_REFERENCE},
    "belle": {"scale": 1.0, "label": "得分", "system": _BELLE_SYSTEM, "criteria": _BELLE_CRITERIA,
              "with_reference": _BELLE_WITH_REFERENCE, "without_reference": _BELLE_WITHOUT_REFERENCE},
}

_USER_TEMPLATE = "{criteria}\n\n【用户指令】\n{question}\n\n【参考答案】\n{reference}\n\n【待评回答】\n{response}"
_USER_TEMPLATE_NO_REFERENCE = "{criteria}\n\n【用户指令】\n{question}\n\n【待评回答】\n{response}"

_REASK = ("你上一条回复没有按要求给出分数，或分数不在评分范围内。请只在最后一行严格按照“{label}: N”的格式"
          "给出 0 到 {top:g} 之间的分数。")


def needs_reference(category: str, reference) -> bool:
    """Whether the judge sees a reference: not for Belle's open categories, nor for an empty reference."""
    return category not in REFERENCE_FREE_CATEGORIES and isinstance(reference, str) and bool(reference.strip())


def build_judge_messages(category: str, question: str, reference: str, response: str,
                         rubric: str = "cookbook") -> list[dict]:
    """Chat messages asking the judge to score one response on the rubric's scale (reference-free where due)."""
    if category not in CATEGORIES:
        raise JudgeError(f"unknown category {category!r}; valid categories: {', '.join(CATEGORIES)}")
    if rubric not in RUBRICS:
        raise JudgeError(f"unknown judge rubric {rubric!r}; valid rubrics: {', '.join(RUBRICS)}")
    spec, with_ref = RUBRICS[rubric], needs_reference(category, reference)
    system = spec["system"].format(intro=spec["with_reference" if with_ref else "without_reference"])
    template = _USER_TEMPLATE if with_ref else _USER_TEMPLATE_NO_REFERENCE
    user = template.format(criteria=spec["criteria"][category], question=question, reference=reference,
                           response=response)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------------
# Parsing

_SCORE_RE = re.compile(
    r"(?:分数|得分|评分|score)\s*(?::|=|为|是)?\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)
_RANGE_AFTER = re.compile(r"\s*(?:-|~|～|到|至)\s*\d")  # "得分: 0.6-0.8" gives no one score


def parse_score(text: str, scale: float = 10.0) -> float:
    """The last "分数: N" / "得分: N" (or "N/scale") of a judge reply on a 0-`scale` rubric, as N/scale in [0, 1].

    Only the rubric's own scale is accepted: a value above it, another denominator ("85/100" on 0-10),
    a range, or a fraction below 1 on a 0-10 scale ("0.8" there is most likely 0.8 of 1, which would
    be read ten times too low) raises JudgeError, so the judge is re-asked and nothing is cached.
    """
    # NFKC folds full-width digits and colons ("分数：７") into ASCII; markdown emphasis is dropped.
    norm = unicodedata.normalize("NFKC", text or "")
    norm = re.sub(r"[*_#【】\[\]`]", "", norm)
    matches = list(_SCORE_RE.finditer(norm))
    if not matches:
        raise JudgeError(f"unparseable judge reply: {(text or '')[:200]!r}")
    found = matches[-1]
    value, denom = float(found.group(1)), found.group(2)
    if denom is not None and float(denom) != scale or _RANGE_AFTER.match(norm, found.end()):
        raise JudgeError(f"ambiguous judge score {found.group(0)!r}: the rubric asks for one number on 0-{scale:g}")
    if not 0.0 <= value <= scale:
        raise JudgeError(f"judge score out of range 0-{scale:g}: {found.group(0)!r}")
    if scale > 1 and 0 < value < 1 and denom is None:
        raise JudgeError(f"ambiguous judge score {found.group(0)!r} on a 0-{scale:g} scale (a 0-1 score?)")
    return value / scale


# --------------------------------------------------------------------------------------------------
# Cache: a directory with one JSON file per item, written via temp file + os.replace

def _cache_key(meta: dict, item: dict, messages: list[dict]) -> str:
    # Everything that shapes a verdict: where it is asked, which model, which rubric and prompt text
    # (the messages hold the rendered prompt), and the item itself.
    payload = {"endpoint": meta["endpoint"], "model": meta["judge_model"], "rubric": meta["rubric"],
               "prompt_version": meta["prompt_version"], **item, "messages": messages}
    return hashlib.sha256(json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def _entry_meta(settings: JudgeSettings, rubric: str | None = None,
                prompt_version: str = JUDGE_PROMPT_VERSION) -> dict:
    return {"judge_model": settings.model, "endpoint": settings.base_url, "rubric": rubric or settings.rubric,
            "prompt_version": prompt_version}


def _cache_read(cache_dir: str, key: str, meta: dict) -> dict | None:
    path = Path(cache_dir) / f"{key}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or unreadable: treat as a miss and re-judge
    ok = (isinstance(entry, dict) and isinstance(entry.get("score"), (int, float))
          and 0.0 <= entry["score"] <= 1.0
          and all(entry.get(k) == v for k, v in meta.items()))
    return entry if ok else None


def _cache_write(cache_dir: str, key: str, entry: dict) -> None:
    # Same-directory temp file + os.replace is atomic on POSIX and Windows: a reader sees the old
    # state or the whole new entry, never a torn file. Stray *.tmp files are ignored by the reader.
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{key[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(entry, fh, ensure_ascii=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, Path(cache_dir) / f"{key}.json")
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------
# HTTP

def _api_key(settings: JudgeSettings) -> str:
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise JudgeError(f"no judge API key: set the environment variable {settings.api_key_env} "
                         "(any non-empty value for a local server that ignores keys)")
    return key


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text


def _retry_delay(settings: JudgeSettings, attempt: int, resp) -> float:
    delay = settings.backoff_s * 2 ** attempt
    header = resp.headers.get("Retry-After") if resp is not None and resp.status_code == 429 else None
    if header:
        try:
            delay = max(delay, float(header))
        except ValueError:
            pass  # an HTTP-date Retry-After is rare for APIs; plain backoff is good enough then
    return min(delay, _MAX_RETRY_AFTER_S)


def _post(settings: JudgeSettings, messages: list[dict], session) -> str:
    """POST one chat completion with retries; the reply text, or JudgeError."""
    key = _api_key(settings)
    url = settings.base_url.rstrip("/") + "/chat/completions"
    body = {"model": settings.model, "messages": messages, "temperature": 0}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    attempts = settings.max_retries + 1
    last = ""
    for attempt in range(attempts):
        resp = None
        try:
            resp = session.post(url, json=body, headers=headers, timeout=settings.timeout_s)
        except requests.Timeout:
            last = f"timed out after {settings.timeout_s:g} s"
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            last = f"connection error ({type(exc).__name__})"
        if resp is not None:
            if resp.status_code == 200:
                return _content(resp, settings, key)
            last = f"HTTP {resp.status_code}"
            if resp.status_code != 429 and resp.status_code < 500:
                raise JudgeError(f"judge request failed: HTTP {resp.status_code} from {settings.base_url} "
                                 f"(not retried): {_scrub(resp.text[:200], key)!r}")
        if attempt + 1 < attempts:
            _sleep(_retry_delay(settings, attempt, resp))
    raise JudgeError(f"judge request failed: {last} after {attempts} attempts to {settings.base_url}")


def _content(resp, settings: JudgeSettings, key: str) -> str:
    try:
        content = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise JudgeError(f"malformed reply from {settings.base_url}: {_scrub(resp.text[:200], key)!r}")
    return content


# --------------------------------------------------------------------------------------------------
# Public entry points

def _ask(settings, messages, parse, reask: str, session) -> tuple[float, str]:
    raw = _post(settings, messages, session)
    try:
        return parse(raw), raw
    except JudgeError:
        # One re-ask, showing the judge its own reply: cheaper than failing the whole run on a format slip.
        followup = messages + [{"role": "assistant", "content": raw}, {"role": "user", "content": reask}]
        raw = _post(settings, followup, session)
        return parse(raw), raw


def ask_judge(settings, messages: list[dict], item: dict, *, parse, reask: str, rubric: str | None = None,
              prompt_version: str = JUDGE_PROMPT_VERSION, session=None) -> dict:
    """One verdict, cached: {score in [0,1], raw, cached, judge_model, endpoint, rubric, prompt_version}.

    `parse(reply)` turns the judge's reply into a score in [0, 1] or raises JudgeError, which re-asks once
    with `reask`. `rubric` and `prompt_version` name the prompt in the cache key (default: the settings'
    rubric and this module's version); another module's prompt (helpers.safety) passes its own.
    """
    meta = _entry_meta(settings, rubric, prompt_version)
    key = _cache_key(meta, item, messages)
    if settings.cache_path:
        hit = _cache_read(settings.cache_path, key, meta)
        if hit is not None:
            return {**hit, "cached": True}
    if session is None:
        with requests.Session() as own:
            score, raw = _ask(settings, messages, parse, reask, own)
    else:
        score, raw = _ask(settings, messages, parse, reask, session)
    entry = {"score": score, "raw": raw, **meta}
    if settings.cache_path:  # only a verdict that parsed gets here
        _cache_write(settings.cache_path, key, entry)
    return {**entry, "cached": False}


def judge_one(settings, category, question, reference, response, *, session=None) -> dict:
    """Score one response (against its reference where the category has one): {score in [0,1], raw, cached, ...}."""
    messages = build_judge_messages(category, question, reference, response, settings.rubric)
    item = {"category": category, "question": question, "reference": reference, "response": response}
    spec = RUBRICS[settings.rubric]
    return ask_judge(settings, messages, item, parse=lambda raw: parse_score(raw, spec["scale"]),
                     reask=_REASK.format(label=spec["label"], top=spec["scale"]), session=session)


def judge_many(settings, items: list[dict], *, progress=True) -> list[dict]:
    """Judge items (dicts with category/question/reference/response) in order; JudgeError names the item."""
    from .console import tqdm  # imported lazily: only the batch path needs a progress bar

    fields = ("category", "question", "reference", "response")
    for i, item in enumerate(items):  # fail before any paid request, not halfway through
        missing = [f for f in fields if f not in item]
        if missing:
            raise JudgeError(f"item {i}: missing field(s) {', '.join(missing)}")
    results = []
    with requests.Session() as session:
        for i, item in enumerate(tqdm(items, desc="judging", disable=not progress)):
            try:
                results.append(judge_one(settings, *(item[f] for f in fields), session=session))
            except JudgeError as exc:
                raise JudgeError(f"item {i}: {exc}") from exc
    return results
