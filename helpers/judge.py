"""LLM judge for Belle-eval-style scoring through an OpenAI-compatible chat-completions endpoint.

The paper scored each response against a reference answer with ChatGPT. Here any endpoint that speaks
POST {base_url}/chat/completions works (OpenAI, vLLM, a local server). Verdicts are cached on disk, one
file per item, so a re-run costs nothing and a crash mid-run loses at most the item being written.

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

import requests

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "CATEGORIES",
    "JudgeError",
    "JudgeSettings",
    "judge_settings_from_env",
    "build_judge_messages",
    "parse_score",
    "judge_one",
    "judge_many",
]

JUDGE_PROMPT_VERSION = "v1"  # bump whenever a prompt below changes: it is part of the cache key

CATEGORIES = (
    "code", "open_qa", "brainstorm", "classification", "math",
    "generation", "summary", "rewrite", "close_qa", "extract",
)

# Retry-After may ask for minutes; a notebook should fail visibly rather than hang that long.
_MAX_RETRY_AFTER_S = 60.0
_sleep = time.sleep  # module-level so tests can swap it for a recorder instead of waiting


class JudgeError(RuntimeError):
    """Raised when the judge cannot produce a score (configuration, HTTP or parsing)."""


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


def judge_settings_from_env(base_url=None, model=None, cache_path=None) -> JudgeSettings | None:
    """Settings from arguments or JUDGE_BASE_URL / JUDGE_MODEL; None when no endpoint is configured."""
    base_url = base_url or os.environ.get("JUDGE_BASE_URL")
    if not base_url:
        return None  # offline: callers fall back to the paper's numbers or a fake server
    model = model or os.environ.get("JUDGE_MODEL")
    if not model:
        raise JudgeError("a judge base_url is configured but no model: pass model= or set JUDGE_MODEL")
    return JudgeSettings(base_url=base_url.rstrip("/"), model=model, cache_path=cache_path)


# --------------------------------------------------------------------------------------------------
# Prompts (written for this project; Chinese because the answers being judged are Chinese)

_SYSTEM_PROMPT = (
    "你是一名严格、公正的中文评审员。你会看到一个用户指令、一个参考答案和一个待评回答。"
    "请依据给定的评分标准，对照参考答案评价待评回答的质量。"
    "参考答案代表正确方向，但措辞不同而内容正确的回答不应扣分；回答的长度本身不是加分理由。"
    "先用两三句话说明理由，然后在最后单独一行严格按照“分数: N”的格式给出分数，"
    "N 为 0 到 10 之间的数字（可带一位小数），这一行之后不要再写任何内容。"
)

_RUBRICS = {
    "code": "评分标准（代码）：首先看代码能否正确完成指令要求（可与参考答案实现不同，但必须正确），"
            "有错误或无法运行的代码不超过 4 分；在正确的前提下，再看代码是否清晰、简洁，解释是否到位。",
    "open_qa": "评分标准（开放问答）：回答是否切题、事实是否准确、信息是否充分。"
               "出现明显事实错误应大幅扣分；答非所问不超过 2 分。",
    "brainstorm": "评分标准（头脑风暴）：看回答是否有帮助、与指令是否相关、想法是否丰富多样且具体可行。"
                  "重复、空泛或离题的要点应扣分。",
    "classification": "评分标准（分类）：最终给出的类别必须与参考答案一致，不一致不超过 2 分；"
                      "类别正确时，再看理由是否合理、表述是否清楚。",
    "math": "评分标准（数学）：最终答案必须与参考答案一致，最终答案错误不超过 2 分；"
            "答案正确时，再看推理过程是否正确、步骤是否清楚。",
    "generation": "评分标准（生成）：看回答是否有帮助、是否紧扣指令要求（体裁、主题、字数等）、"
                  "内容是否丰富、语言是否通顺自然。",
    "summary": "评分标准（摘要）：摘要是否覆盖原文要点、是否忠实于原文（不得添加原文没有的信息）、"
               "是否简洁。编造内容应大幅扣分。",
    "rewrite": "评分标准（改写）：是否满足改写要求（如风格、语气、语言、长度），是否保留原意，"
               "语言是否通顺。改变原意或未按要求改写不超过 3 分。",
    "close_qa": "评分标准（封闭问答）：答案必须忠实于指令中给出的文本，并与参考答案一致；"
                "依据文本之外的信息作答或编造内容不超过 2 分。",
    "extract": "评分标准（信息抽取）：抽取结果必须忠实于给定文本，并与参考答案一致；"
               "遗漏、多抽或编造都应扣分，完全错误不超过 2 分。",
}

_USER_TEMPLATE = "{rubric}\n\n【用户指令】\n{question}\n\n【参考答案】\n{reference}\n\n【待评回答】\n{response}"

_REASK = "你上一条回复没有按要求给出分数。请只在最后一行严格按照“分数: N”的格式给出 0 到 10 之间的分数。"


def build_judge_messages(category: str, question: str, reference: str, response: str) -> list[dict]:
    """Chat messages asking the judge to score one response against its reference (0-10)."""
    if category not in _RUBRICS:
        raise JudgeError(f"unknown category {category!r}; valid categories: {', '.join(CATEGORIES)}")
    user = _USER_TEMPLATE.format(rubric=_RUBRICS[category], question=question,
                                 reference=reference, response=response)
    return [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------------------------------
# Parsing

_SCORE_RE = re.compile(
    r"(?:分数|得分|评分|score)\s*(?::|=|为|是)?\s*(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?",
    re.IGNORECASE,
)


def parse_score(text: str) -> float:
    """The last "分数: N" (or "Score: N/10") in a judge reply, as N/10 in [0, 1]."""
    # NFKC folds full-width digits and colons ("分数：７") into ASCII; markdown emphasis is dropped.
    norm = unicodedata.normalize("NFKC", text or "")
    norm = re.sub(r"[*_#【】\[\]`]", "", norm)
    matches = list(_SCORE_RE.finditer(norm))
    if not matches:
        raise JudgeError(f"unparseable judge reply: {(text or '')[:200]!r}")
    value, denom = matches[-1].group(1), matches[-1].group(2)
    score = float(value) * (10.0 / float(denom) if denom and float(denom) > 0 else 1.0)
    if not 0.0 <= score <= 10.0:
        raise JudgeError(f"judge score out of range 0-10: {matches[-1].group(0)!r}")
    return score / 10.0


# --------------------------------------------------------------------------------------------------
# Cache: a directory with one JSON file per item, written via temp file + os.replace

def _cache_key(model: str, category: str, question: str, reference: str, response: str) -> str:
    payload = json.dumps([model, JUDGE_PROMPT_VERSION, category, question, reference, response])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _cache_read(cache_dir: str, key: str, model: str) -> dict | None:
    path = Path(cache_dir) / f"{key}.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # missing or unreadable: treat as a miss and re-judge
    ok = (isinstance(entry, dict) and isinstance(entry.get("score"), (int, float))
          and 0.0 <= entry["score"] <= 1.0 and entry.get("judge_model") == model
          and entry.get("prompt_version") == JUDGE_PROMPT_VERSION)
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

def _ask_for_score(settings, messages, session) -> tuple[float, str]:
    raw = _post(settings, messages, session)
    try:
        return parse_score(raw), raw
    except JudgeError:
        # One re-ask, showing the judge its own reply: cheaper than failing the whole run on a format slip.
        reask = messages + [{"role": "assistant", "content": raw}, {"role": "user", "content": _REASK}]
        raw = _post(settings, reask, session)
        return parse_score(raw), raw


def judge_one(settings, category, question, reference, response, *, session=None) -> dict:
    """Score one response against its reference: {score in [0,1], raw, cached, judge_model, prompt_version}."""
    messages = build_judge_messages(category, question, reference, response)
    key = _cache_key(settings.model, category, question, reference, response)
    if settings.cache_path:
        hit = _cache_read(settings.cache_path, key, settings.model)
        if hit is not None:
            return {**hit, "cached": True}
    if session is None:
        with requests.Session() as own:
            score, raw = _ask_for_score(settings, messages, own)
    else:
        score, raw = _ask_for_score(settings, messages, session)
    entry = {"score": score, "raw": raw, "judge_model": settings.model,
             "prompt_version": JUDGE_PROMPT_VERSION}
    if settings.cache_path:
        _cache_write(settings.cache_path, key, entry)
    return {**entry, "cached": False}


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
