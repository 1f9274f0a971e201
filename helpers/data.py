"""Load and validate instruction-tuning data (Alpaca, ShareGPT, Messages) with a data report.

Every kept record is normalised to one shape:
    {"instruction", "input", "output", "history": [[user, assistant], ...],
     "system", "category", "line"}
Records that cannot be used are skipped and counted in a DataReport, never silently lost:
the report always satisfies read == kept + sum(skipped).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

__all__ = [
    "DataError",
    "DataReport",
    "InvalidLine",
    "read_text",
    "iter_json_records",
    "iter_json_text",
    "validate_records",
    "load_instructions",
    "load_instructions_from_hub",
    "load_training_data",
    "SUPPORTED_EXTENSIONS",
]

SUPPORTED_EXTENSIONS = (".json", ".jsonl")
MAX_EXAMPLES = 3  # examples kept per skip reason; enough to find the lines, small enough to print

_BOM = b"\xef\xbb\xbf"
_WS = re.compile(r"[ \t\n\r]*")
_USER_ROLES = {"sharegpt": {"human", "user"}, "messages": {"user"}}
_ASSISTANT_ROLES = {"sharegpt": {"gpt", "assistant"}, "messages": {"assistant"}}
_TURN_KEYS = {"sharegpt": ("from", "value"), "messages": ("role", "content")}
_KNOWN_FIELDS = {
    "alpaca": {"instruction", "input", "output", "system", "category"},
    "sharegpt": {"conversations", "system", "category"},
    "messages": {"messages", "system", "category"},
}


class DataError(ValueError):
    """A fatal problem with a data file; the message names the file and, where known, line and field."""

    def __init__(self, message: str, report: DataReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class DataReport:
    """Counts of what happened to the records of one file: read == kept + sum(skipped)."""

    path: str
    read: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def skip(self, reason: str, line: int | None, detail: str = "", was_kept: bool = False) -> None:
        """Count a dropped record; pass was_kept=True when dropping a record already counted as kept."""
        self.skipped[reason] += 1
        if was_kept:
            self.kept -= 1
        if self.skipped[reason] <= MAX_EXAMPLES:
            self.examples.append((line, reason, detail))

    def note(self, what: str) -> None:
        """Record a non-fatal observation that does not drop any record."""
        self.notes[what] += 1

    def check(self) -> None:
        """Raise AssertionError unless read == kept + sum(skipped)."""
        n_skipped = sum(self.skipped.values())
        if self.read != self.kept + n_skipped:
            raise AssertionError(
                f"{self.path}: read {self.read} != kept {self.kept} + skipped {n_skipped}"
                f" ({dict(self.skipped)})"
            )

    def to_dict(self) -> dict:
        """Return a JSON-serialisable copy of the report."""
        return {
            "path": self.path,
            "read": self.read,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "notes": dict(self.notes),
            "examples": [{"line": ln, "reason": r, "detail": d} for ln, r, d in self.examples],
        }

    def __str__(self) -> str:
        head = f"{self.path}: read {self.read} = kept {self.kept} + skipped {sum(self.skipped.values())}"
        if self.skipped:
            head += " (" + "; ".join(self._reason_summary(r, n) for r, n in self.skipped.most_common()) + ")"
        lines = [head]
        for line, reason, detail in self._first_detailed_examples():
            lines.append(f"  e.g. line {line}: {reason}: {detail}")
        for what, n in self.notes.most_common():
            lines.append(f"  note: {what}" + (f" (x{n})" if n > 1 else ""))
        return "\n".join(lines)

    def _reason_summary(self, reason: str, count: int) -> str:
        nums = [ln for ln, r, _ in self.examples if r == reason and ln is not None]
        if not nums:
            return f"{reason}: {count}"
        more = ", ..." if count > len(nums) else ""
        label = "line" if count == 1 else "lines"
        return f"{reason}: {count} [{label} {', '.join(map(str, nums))}{more}]"

    def _first_detailed_examples(self) -> list:
        seen, out = set(), []
        for line, reason, detail in self.examples:
            if detail and reason not in seen:
                seen.add(reason)
                out.append(("?" if line is None else line, reason, detail))
        return out


@dataclass(frozen=True)
class InvalidLine:
    """Stands in for a JSONL line that is not valid JSON, so the caller can skip it and go on."""

    message: str


class _Skip(Exception):
    """Raised inside record validation; caught by validate_records and counted as a skip."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


# ----------------------------------------------------------------------------- reading


def read_text(path) -> tuple[str, list[str]]:
    """Decode a file as UTF-8 (BOM stripped) or else GB18030; return (text, notes)."""
    raw = Path(path).read_bytes()
    if raw.startswith(_BOM):
        # A BOM is a UTF-8 promise, so we do not fall back to GB18030 behind it.
        return _decode_utf8(raw[len(_BOM):], path, offset=len(_BOM)), ["UTF-8 BOM removed"]
    try:
        return raw.decode("utf-8"), []
    except UnicodeDecodeError as utf8_err:
        bad = utf8_err.start
    try:
        # GB18030 is a superset of GBK and GB2312, the usual legacy encodings of Chinese data.
        return raw.decode("gb18030"), ["decoded as GB18030"]
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: neither UTF-8 nor GB18030 (first bad byte 0x{raw[bad]:02X} at byte offset {bad})"
        ) from None


def _decode_utf8(raw: bytes, path, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        at = err.start + offset
        raise DataError(
            f"{path}: starts with a UTF-8 BOM but is not UTF-8 "
            f"(bad byte 0x{raw[err.start]:02X} at byte offset {at})"
        ) from None


def iter_json_records(path) -> Iterator[tuple[int, object]]:
    """Yield (line_number, value) for each record of a .json array or .jsonl file."""
    suffix = _check_extension(path)
    text, _ = read_text(path)
    return _iter_text_records(text, suffix, path)


def iter_json_text(text: str, path) -> Iterator[tuple[int, object]]:
    """(line_number, value) for JSON text sniffed by content: an array if it starts with '[', else JSON Lines."""
    # Some .json files are JSON Lines (Belle's eval_set.json is), so the content decides, not the extension.
    return _iter_text_records(text, ".json" if text.lstrip().startswith("[") else ".jsonl", path)


def _check_extension(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        supported = ", ".join(SUPPORTED_EXTENSIONS)
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; supported: {supported}")
    return suffix


def _iter_text_records(text: str, suffix: str, path) -> Iterator[tuple[int, object]]:
    if suffix == ".jsonl":
        return _iter_jsonl(text)
    return _iter_json_array(text, path)


def _iter_jsonl(text: str) -> Iterator[tuple[int, object]]:
    # split("\n") rather than splitlines(): U+2028 and friends are legal inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            yield number, InvalidLine(f"{err.msg} at column {err.colno}")


def _iter_json_array(text: str, path) -> Iterator[tuple[int, object]]:
    # Decoding element by element (instead of json.loads) lets each record carry its own line.
    decoder = json.JSONDecoder()
    pos = _WS.match(text).end()
    if pos == len(text):
        return
    if text[pos] != "[":
        _reject_non_array(decoder, text, pos, path)
    pos, line, last = _WS.match(text, pos + 1).end(), 1, 0
    if text.startswith("]", pos):
        _expect_end(text, pos + 1, path)
        return
    while True:
        line += text.count("\n", last, pos)
        last = pos
        value, pos = _decode_at(decoder, text, pos, path)
        yield line, value
        pos = _WS.match(text, pos).end()
        if text.startswith("]", pos):
            _expect_end(text, pos + 1, path)
            return
        if not text.startswith(",", pos):
            raise _syntax_error(path, text, pos, "Expecting ',' or ']' after a record")
        pos = _WS.match(text, pos + 1).end()
        if text.startswith("]", pos):
            raise _syntax_error(path, text, pos, "trailing comma before ']'")


def _decode_at(decoder: json.JSONDecoder, text: str, pos: int, path) -> tuple[object, int]:
    try:
        return decoder.raw_decode(text, pos)
    except json.JSONDecodeError as err:
        raise _syntax_error(path, text, err.pos, err.msg) from None


def _reject_non_array(decoder: json.JSONDecoder, text: str, pos: int, path) -> None:
    value, _ = _decode_at(decoder, text, pos, path)
    kind = "an object" if isinstance(value, dict) else type(value).__name__
    raise DataError(f"{path}: expected a JSON array of records, got {kind}")


def _expect_end(text: str, pos: int, path) -> None:
    pos = _WS.match(text, pos).end()
    if pos != len(text):
        raise _syntax_error(path, text, pos, "extra data after the closing ']'")


def _syntax_error(path, text: str, pos: int, msg: str) -> DataError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return DataError(f"{path}, line {line}: invalid JSON ({msg} at column {column})")


# ----------------------------------------------------------------------------- one record


def _type_name(value: object) -> str:
    return type(value).__name__


def _get_str(obj: dict, key: str, *, required: bool, allow_empty: bool = False, prefix: str = "") -> str:
    """Return obj[key] as a str; None counts as missing, whitespace-only as empty."""
    value = obj.get(key)
    if value is None:
        if required:
            raise _Skip(f"{prefix}missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise _Skip(f"{prefix}wrong type for '{key}' ({_type_name(value)}, expected str)")
    if required and not allow_empty and not value.strip():
        raise _Skip(f"{prefix}empty field '{key}'")
    return value


def _detect_format(obj: dict) -> str | None:
    # A key holding None does not count: HF datasets pad absent columns with None.
    if obj.get("conversations") is not None:
        return "sharegpt"
    if obj.get("messages") is not None:
        return "messages"
    if any(obj.get(k) is not None for k in ("instruction", "input", "output")):
        return "alpaca"
    return None


def _category(obj: dict) -> str | None:
    value = _get_str(obj, "category", required=False)
    return value.strip() or None


def _parse_alpaca(obj: dict) -> dict:
    return {
        "instruction": _get_str(obj, "instruction", required=True),
        "input": _get_str(obj, "input", required=False),
        "output": _get_str(obj, "output", required=True),
        "history": [],
        "system": _get_str(obj, "system", required=False),
        "category": _category(obj),
    }


def _parse_conversation(obj: dict, fmt: str, unknown: list) -> dict:
    list_key = "conversations" if fmt == "sharegpt" else "messages"
    turns = obj[list_key]
    if not isinstance(turns, list):
        raise _Skip(f"wrong type for '{list_key}' ({_type_name(turns)}, expected list)")
    if not turns:
        raise _Skip(f"empty field '{list_key}'")
    system, pairs = _turn_pairs(turns, fmt, unknown)
    if not pairs:
        raise _Skip("conversation: no user turn")
    *history, (instruction, output) = pairs
    return {
        "instruction": instruction,
        "input": "",
        "output": output,
        "history": [[u, a] for u, a in history],
        # A leading system turn wins over a record-level "system" field.
        "system": system if system is not None else _get_str(obj, "system", required=False),
        "category": _category(obj),
    }


def _turn_pairs(turns: list, fmt: str, unknown: list) -> tuple[str | None, list]:
    """Walk the turns strictly in order; return (leading system text or None, [(user, assistant), ...])."""
    system, pairs, user = None, [], None
    for index, turn in enumerate(turns, start=1):
        role, text = _read_turn(turn, fmt, index, unknown)
        where = f"turn {index}"
        if role == "system":
            if index != 1:
                raise _Skip("conversation: system turn not first", where)
            system = text
        elif role == "user":
            _check_user_turn(user, text, where)
            user = text
        else:
            _check_assistant_turn(user, bool(pairs), text, where)
            pairs.append((user, text))
            user = None
    if user is not None:
        raise _Skip("conversation: does not end with an assistant turn", f"turn {len(turns)}")
    return system, pairs


def _check_user_turn(pending_user: str | None, text: str, where: str) -> None:
    if pending_user is not None:
        raise _Skip("conversation: two user turns in a row", where)
    if not text.strip():
        raise _Skip("conversation: empty user turn", where)


def _check_assistant_turn(pending_user: str | None, had_pair: bool, text: str, where: str) -> None:
    if pending_user is None:
        reason = "two assistant turns in a row" if had_pair else "assistant turn before any user turn"
        raise _Skip(f"conversation: {reason}", where)
    if not text.strip():
        raise _Skip("conversation: empty assistant turn", where)


def _read_turn(turn: object, fmt: str, index: int, unknown: list) -> tuple[str, str]:
    where = f"turn {index}"
    if not isinstance(turn, dict):
        raise _Skip("conversation: turn is not an object", f"{where} is {_type_name(turn)}")
    role_key, text_key = _TURN_KEYS[fmt]
    try:
        role = _get_str(turn, role_key, required=True, prefix="conversation: ")
        # Empty text passes here so the role-specific check can name the empty turn.
        text = _get_str(turn, text_key, required=True, allow_empty=True, prefix="conversation: ")
    except _Skip as skip:
        raise _Skip(skip.reason, where) from None
    extra = [k for k, v in turn.items() if k not in (role_key, text_key) and v is not None]
    unknown.extend(f"turn field '{k}'" for k in extra)
    if role in _USER_ROLES[fmt]:
        return "user", text
    if role in _ASSISTANT_ROLES[fmt]:
        return "assistant", text
    if role == "system":
        return "system", text
    raise _Skip(f"conversation: unknown role '{role}'", where)


def _normalise(value: object) -> tuple[dict, str, list]:
    """Validate one parsed value; return (record, format, unknown field labels) or raise _Skip."""
    if isinstance(value, InvalidLine):
        raise _Skip("invalid JSON", value.message)
    if not isinstance(value, dict):
        raise _Skip("not an object", f"got {_type_name(value)}")
    fmt = _detect_format(value)
    if fmt is None:
        keys = ", ".join(sorted(map(str, value))) or "no fields"
        raise _Skip("unknown record format", f"fields: {keys}")
    unknown: list = []
    record = _parse_alpaca(value) if fmt == "alpaca" else _parse_conversation(value, fmt, unknown)
    unknown[:0] = [f"field '{k}'" for k, v in value.items() if k not in _KNOWN_FIELDS[fmt] and v is not None]
    return record, fmt, unknown


def _dedupe_key(record: dict) -> tuple:
    history = tuple((u.strip(), a.strip()) for u, a in record["history"])
    return (
        record["system"].strip(),
        history,
        record["instruction"].strip(),
        record["input"].strip(),
        record["output"].strip(),
    )


# ----------------------------------------------------------------------------- whole files


def validate_records(
    records: Iterable[tuple[int, object]],
    path: str,
    *,
    dedupe: bool = True,
    strict: bool = False,
    limit: int | None = None,
    notes: Iterable[str] = (),
) -> tuple[list[dict], DataReport]:
    """Validate and normalise (line, value) pairs; return (kept records, checked report)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    report = DataReport(path=str(path))
    for what in notes:
        report.note(what)
    kept, seen, formats = [], {}, Counter()
    for line, value in records:
        report.read += 1
        result = _validate_one(report, line, value, seen if dedupe else None, strict)
        if result is None:
            continue
        if limit is not None and len(kept) >= limit:
            report.skip("over limit", line)  # not a data fault, so strict lets it pass
            continue
        record, fmt = result
        kept.append(record)
        formats[fmt] += 1
        report.kept += 1
    _finish(report, formats)
    return kept, report


def _validate_one(report: DataReport, line: int, value: object, seen: dict | None, strict: bool):
    """Return (record, format) for a usable value, or None after counting the skip."""
    try:
        record, fmt, unknown = _normalise(value)
        if seen is not None:
            _check_duplicate(record, line, seen)
    except _Skip as skip:
        _skip(report, line, skip.reason, skip.detail, strict)
        return None
    for label in unknown:
        report.note(f"unknown {label} ignored")
    record["line"] = line
    return record, fmt


def _check_duplicate(record: dict, line: int, seen: dict) -> None:
    key = _dedupe_key(record)
    if key in seen:
        raise _Skip("duplicate", f"same as line {seen[key]}")
    seen[key] = line


def _skip(report: DataReport, line: int | None, reason: str, detail: str, strict: bool) -> None:
    report.skip(reason, line, detail)
    if strict:
        where = f"{report.path}, line {line}" if line is not None else report.path
        suffix = f" ({detail})" if detail else ""
        raise DataError(f"{where}: {reason}{suffix}", report)


def _finish(report: DataReport, formats: Counter) -> None:
    if len(formats) > 1:
        report.note("mixed formats: " + ", ".join(f"{f} {n}" for f, n in formats.most_common()))
    report.check()
    if report.read == 0:
        raise DataError(f"{report.path}: no records", report)
    if report.kept == 0:
        raise DataError(f"{report.path}: every record was skipped\n{report}", report)


def load_instructions(
    path, *, dedupe: bool = True, strict: bool = False, limit: int | None = None
) -> tuple[list[dict], DataReport]:
    """Load a .json/.jsonl instruction file; return (normalised records, report)."""
    suffix = _check_extension(path)
    text, notes = read_text(path)
    records = _iter_text_records(text, suffix, path)
    return validate_records(records, str(path), dedupe=dedupe, strict=strict, limit=limit, notes=notes)


def load_instructions_from_hub(
    dataset_id: str,
    split: str = "train",
    *,
    dedupe: bool = True,
    strict: bool = False,
    limit: int | None = None,
    **load_kwargs,
) -> tuple[list[dict], DataReport]:
    """Load a Hugging Face dataset split and validate it like a local file (line = row index + 1)."""
    from datasets import load_dataset  # imported lazily: heavy, and only this loader needs it

    rows = load_dataset(dataset_id, split=split, **load_kwargs)
    records = ((index + 1, row) for index, row in enumerate(rows))
    return validate_records(records, f"hf:{dataset_id}", dedupe=dedupe, strict=strict, limit=limit)


def load_training_data(spec: str, *, limit: int | None = None, **kwargs) -> tuple[list[dict], DataReport]:
    """Load a profile's data spec: "hf:<dataset id>" from the hub, anything else as a project-relative file."""
    if spec.startswith("hf:"):
        return load_instructions_from_hub(spec.removeprefix("hf:"), limit=limit, **kwargs)
    from .paths import project_path

    return load_instructions(project_path(spec), limit=limit, **kwargs)
