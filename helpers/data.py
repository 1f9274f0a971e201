"""Load and validate instruction-tuning data (one file, a hub dataset, or a mixture) with a data report.

Every kept record is normalised to one shape, a conversation (see helpers/records.py for the formats read):
    {"system", "tools", "messages": [{"role", "content", ...}, ...], "category",
     "where" (e.g. "line 4", "record 3 (line 12)", "row 5"), "source" (the file or hub id it came from)}
Records that cannot be used are skipped and counted in a DataReport, never silently lost; usable records left
out on purpose (a train_limit, a mixture share) are counted apart. The report always satisfies
read == kept + sum(skipped) + sum(cut).

A data spec (a profile's `train_data`) is one source or a mixture of sources joined by "+":
    spec   := source ("+" source)*
    source := location [":" amount]       location: a project-relative file; "hf:<dataset id>" (loaded by
                                          `datasets`); "hf:<dataset id>/<file>.json[l]" (one file of a hub
                                          dataset repo, for repos `datasets` cannot load, e.g. with a script);
                                          or an http(s) URL of a .json/.jsonl file (downloaded once, cached)
    amount := share | count               share: a number with a decimal point in (0, 1], the fraction of that
                                          source's usable records; count: a whole number of its records
e.g. "data_samples/instructions_zh.json:1.0 + data_samples/cot_zh.json:0.3" or "a.json + hf:org/set:500".
Which records a share or count picks is fixed by the seed; the report has one sub-report per source.
"""
from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from .records import Skip, dedupe_key, normalise_record

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
    "parse_data_spec",
    "load_training_data",
    "SUPPORTED_EXTENSIONS",
]

SUPPORTED_EXTENSIONS = (".json", ".jsonl")
MAX_EXAMPLES = 3  # examples kept per skip reason; enough to find the records, small enough to print

_BOM = b"\xef\xbb\xbf"
_WS = re.compile(r"[ \t\n\r]*")
_HUB_FILE = re.compile(r"hf:(?P<repo>[^/\s]+/[^/\s]+)/(?P<file>\S+\.jsonl?)")  # "hf:org/set/dir/file.jsonl"
_AMOUNT = re.compile(r"(?P<location>.+?)\s*:\s*(?P<amount>\d*\.\d+|\d+\.?\d*)")


class DataError(ValueError):
    """A fatal problem with a data file; the message names the file and, where known, record and field."""

    def __init__(self, message: str, report: DataReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class DataReport:
    """What happened to the records of one source (or, with `sources`, of a mixture):
    read == kept + sum(skipped) + sum(cut)."""

    path: str
    read: int = 0
    kept: int = 0  # records used for training
    skipped: Counter = field(default_factory=Counter)  # unusable records, by reason
    cut: Counter = field(default_factory=Counter)  # usable records left out on purpose (limit, share), by reason
    with_tools: int = 0  # used records that offer tools to the model
    notes: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)  # (where, reason, detail) of the first skips per reason
    sources: list = field(default_factory=list)  # a mixture's per-source reports

    def skip(self, reason: str, where: str | None, detail: str = "") -> None:
        """Count a record that cannot be used."""
        self.skipped[reason] += 1
        if self.skipped[reason] <= MAX_EXAMPLES:
            self.examples.append((where, reason, detail))

    def drop(self, record: dict, reason: str, detail: str = "") -> None:
        """Skip a record already counted as used (e.g. too long to train on), here and in its source's report."""
        for report in [self, *[s for s in self.sources if s.path == record.get("source")]]:
            report.kept -= 1
            report.with_tools -= bool(record.get("tools"))
            report.skip(reason, record.get("where"), detail)

    def note(self, what: str) -> None:
        """Record a non-fatal observation that does not drop any record."""
        self.notes[what] += 1

    def check(self) -> None:
        """Raise AssertionError unless read == kept + sum(skipped) + sum(cut), here and in every source."""
        n_skipped, n_cut = sum(self.skipped.values()), sum(self.cut.values())
        if self.read != self.kept + n_skipped + n_cut:
            raise AssertionError(f"{self.path}: read {self.read} != used {self.kept} + skipped {n_skipped}"
                                 f" + left out {n_cut} ({dict(self.skipped)}, {dict(self.cut)})")
        for source in self.sources:
            source.check()

    def to_dict(self) -> dict:
        """Return a JSON-serialisable copy of the report."""
        return {
            "path": self.path,
            "read": self.read,
            "kept": self.kept,
            "skipped": dict(self.skipped),
            "cut": dict(self.cut),
            "with_tools": self.with_tools,
            "notes": dict(self.notes),
            "examples": [{"where": w, "reason": r, "detail": d} for w, r, d in self.examples],
            "sources": [s.to_dict() for s in self.sources],
        }

    def __str__(self) -> str:
        head = f"{self.path}: read {self.read} = used {self.kept} + skipped {sum(self.skipped.values())}"
        if self.skipped:
            head += " (" + "; ".join(self._reason_summary(r, n) for r, n in self.skipped.most_common()) + ")"
        if self.cut:
            head += f" + left out {sum(self.cut.values())} (" + "; ".join(
                f"{r}: {n}" for r, n in self.cut.most_common()) + ")"
        lines = [head]
        if self.with_tools:
            lines.append(f"  with tools: {self.with_tools} conversations")
        lines += [f"  e.g. {where}: {reason}: {detail}" for where, reason, detail in self._first_detailed_examples()]
        lines += [f"  note: {what}" + (f" (x{n})" if n > 1 else "") for what, n in self.notes.most_common()]
        lines += ["  " + line for source in self.sources for line in str(source).splitlines()]
        return "\n".join(lines)

    def _reason_summary(self, reason: str, count: int) -> str:
        wheres = [w for w, r, _ in self.examples if r == reason and w is not None]
        if not wheres:
            return f"{reason}: {count}"
        more = ", ..." if count > len(wheres) else ""
        return f"{reason}: {count} [{', '.join(wheres)}{more}]"

    def _first_detailed_examples(self) -> list:
        seen, out = set(), []
        for where, reason, detail in self.examples:
            if detail and reason not in seen:
                seen.add(reason)
                out.append(("?" if where is None else where, reason, detail))
        return out


@dataclass(frozen=True)
class InvalidLine:
    """Stands in for a JSONL line that is not valid JSON, so the caller can skip it and go on."""

    message: str


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
    text, _ = read_text(path)
    kind, _ = _file_kind(text, _check_extension(path), path)
    return ((line, value) for _, line, value in _iter_located(text, kind, path))


def iter_json_text(text: str, path) -> Iterator[tuple[int, object]]:
    """(line_number, value) for JSON text sniffed by content: an array if it starts with '[', else JSON Lines."""
    # Some .json files are JSON Lines (Belle's eval_set.json is), so the content decides, not the extension.
    kind = "array" if text.lstrip().startswith("[") else "jsonl"
    return ((line, value) for _, line, value in _iter_located(text, kind, path))


def _check_extension(path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        supported = ", ".join(SUPPORTED_EXTENSIONS)
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; supported: {supported}")
    return suffix


def _file_kind(text: str, suffix: str, path) -> tuple[str, list[str]]:
    """("array" | "jsonl", notes): a .json file holding JSON Lines (pCLUE's are) is read as JSON Lines."""
    if suffix == ".jsonl" or text.lstrip().startswith("["):
        return ("jsonl" if suffix == ".jsonl" else "array"), []
    if not text.strip():
        return "array", []
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return "jsonl", ["read as JSON Lines (one record per line)"]
    kind = "an object" if isinstance(value, dict) else type(value).__name__
    raise DataError(f"{path}: expected a JSON array of records, got {kind}")


def _iter_located(text: str, kind: str, path) -> Iterator[tuple[int | None, int, object]]:
    """(record index in an array or None, line where the record starts, value)."""
    return _iter_jsonl(text) if kind == "jsonl" else _iter_json_array(text, path)


def _iter_jsonl(text: str) -> Iterator[tuple[None, int, object]]:
    # split("\n") rather than splitlines(): U+2028 and friends are legal inside JSON strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield None, number, json.loads(line)
        except json.JSONDecodeError as err:
            yield None, number, InvalidLine(f"{err.msg} at column {err.colno}")


def _iter_json_array(text: str, path) -> Iterator[tuple[int, int, object]]:
    # Decoding element by element (instead of json.loads) lets each record carry its own index and line.
    decoder = json.JSONDecoder()
    pos = _WS.match(text).end()
    if pos == len(text):
        return
    pos, line, last = _WS.match(text, pos + 1).end(), 1, 0
    if text.startswith("]", pos):
        _expect_end(text, pos + 1, path)
        return
    for index in itertools.count(1):
        line += text.count("\n", last, pos)
        last = pos
        value, pos = _decode_at(decoder, text, pos, path)
        yield index, line, value
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


def _expect_end(text: str, pos: int, path) -> None:
    pos = _WS.match(text, pos).end()
    if pos != len(text):
        raise _syntax_error(path, text, pos, "extra data after the closing ']'")


def _syntax_error(path, text: str, pos: int, msg: str) -> DataError:
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return DataError(f"{path}, line {line}: invalid JSON ({msg} at column {column})")


def _where(index: int | None, line: int, several_lines: bool) -> str:
    """How a report names a record: its line in JSON Lines; its index (and start line) in a JSON array."""
    if index is None:
        return f"line {line}"
    return f"record {index} (line {line})" if several_lines else f"record {index}"


# ----------------------------------------------------------------------------- whole files


def validate_records(
    records: Iterable[tuple[int | str, object]],
    path: str,
    *,
    dedupe: bool = True,
    strict: bool = False,
    limit: int | None = None,
    notes: Iterable[str] = (),
) -> tuple[list[dict], DataReport]:
    """Validate and normalise (where, value) pairs (where: a line number or a label); return (records, report)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    report = DataReport(path=str(path))
    for what in notes:
        report.note(what)
    kept, seen, formats = [], {}, Counter()
    for where, value in records:
        report.read += 1
        where = f"line {where}" if isinstance(where, int) else where
        result = _validate_one(report, where, value, seen if dedupe else None, strict)
        if result is None:
            continue
        if limit is not None and len(kept) >= limit:
            report.cut[f"over limit {limit}"] += 1  # usable, left out on purpose: not a data fault
            continue
        record, fmt = result
        kept.append(record)
        formats[fmt] += 1
        report.kept += 1
        report.with_tools += bool(record["tools"])
    _finish(report, formats)
    return kept, report


def _validate_one(report: DataReport, where: str, value: object, seen: dict | None, strict: bool):
    """Return (record, format) for a usable value, or None after counting the skip."""
    try:
        if isinstance(value, InvalidLine):
            raise Skip("invalid JSON", value.message)
        record, fmt, notes = normalise_record(value)
        if seen is not None:
            _check_duplicate(record, where, seen)
    except Skip as skip:
        report.skip(skip.reason, where, skip.detail)
        if strict:
            raise DataError(f"{report.path}, {where}: {skip.reason}" + (f" ({skip.detail})" if skip.detail else ""),
                            report) from None
        return None
    for what in notes:
        report.note(what)
    return record | {"where": where, "source": report.path}, fmt


def _check_duplicate(record: dict, where: str, seen: dict) -> None:
    key = dedupe_key(record)
    if key in seen:
        raise Skip("duplicate", f"same as {seen[key]}")
    seen[key] = where


def _finish(report: DataReport, formats: Counter) -> None:
    if len(formats) > 1:
        report.note("mixed formats: " + ", ".join(f"{f} {n}" for f, n in formats.most_common()))
    report.check()
    if report.read == 0:
        raise DataError(f"{report.path}: no records", report)
    if report.kept == 0:
        raise DataError(f"{report.path}: every record was skipped\n{report}", report)


def load_instructions(
    path, *, dedupe: bool = True, strict: bool = False, limit: int | None = None, source: str | None = None
) -> tuple[list[dict], DataReport]:
    """Load a .json/.jsonl instruction file; return (normalised records, report); `source` names it (default: path)."""
    suffix = _check_extension(path)
    text, notes = read_text(path)
    kind, more_notes = _file_kind(text, suffix, path)
    several_lines = "\n" in text.strip()
    records = ((_where(index, line, several_lines), value) for index, line, value in _iter_located(text, kind, path))
    return validate_records(records, source or str(path), dedupe=dedupe, strict=strict, limit=limit,
                            notes=notes + more_notes)


def load_instructions_from_hub(
    dataset_id: str,
    split: str = "train",
    *,
    dedupe: bool = True,
    strict: bool = False,
    limit: int | None = None,
    **load_kwargs,
) -> tuple[list[dict], DataReport]:
    """Load a Hugging Face dataset split and validate it like a local file (records named "row N")."""
    from datasets import load_dataset  # imported lazily: heavy, and only this loader needs it

    rows = load_dataset(dataset_id, split=split, **load_kwargs)
    records = ((f"row {index + 1}", row) for index, row in enumerate(rows))
    return validate_records(records, f"hf:{dataset_id}", dedupe=dedupe, strict=strict, limit=limit)


# ----------------------------------------------------------------------------- data specs and mixtures


def parse_data_spec(spec: str) -> list[tuple[str, float | int | None]]:
    """[(location, amount)] of a data spec; amount is a share (float), a count (int) or None (every record)."""
    sources = []
    for part in spec.split("+"):
        part = part.strip()
        if not part:
            raise DataError(f"data spec {spec!r}: empty source (check the '+' signs)")
        match = _AMOUNT.fullmatch(part)
        if not match:
            sources.append((part, None))
            continue
        text = match["amount"]
        amount = float(text) if "." in text else int(text)
        if isinstance(amount, float) and not 0 < amount <= 1:
            raise DataError(f"data spec {spec!r}: share {text} of {match['location']} must be in (0, 1]")
        if isinstance(amount, int) and amount < 1:
            raise DataError(f"data spec {spec!r}: count {text} of {match['location']} must be at least 1")
        sources.append((match["location"], amount))
    return sources


def _hub_file(repo_id: str, filename: str) -> Path:
    """A local copy of one file of a hub dataset repo (huggingface_hub's cache: downloaded once)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type="dataset"))
    except Exception as exc:  # offline, unknown repo or file, gated: all mean "get the file another way"
        raise DataError(f"hf:{repo_id}/{filename}: could not download it ({type(exc).__name__}: {exc}); "
                        "download the file by hand and give its local path instead") from exc


def _load_source(location: str, **kwargs) -> tuple[list[dict], DataReport]:
    """One source of a data spec: a hub file or URL is fetched, then read like a local file, under its spec name."""
    if hub := _HUB_FILE.fullmatch(location):
        return load_instructions(_hub_file(hub["repo"], hub["file"]), source=location, **kwargs)
    if location.startswith("hf:"):
        return load_instructions_from_hub(location.removeprefix("hf:"), **kwargs)
    if re.match(r"https?://", location):
        from .eval_sets import BenchmarkError, fetch

        try:
            return load_instructions(fetch(location), source=location, **kwargs)
        except BenchmarkError as err:  # a failed download: the message says where to put the file by hand
            raise DataError(str(err)) from None
    from .paths import project_path

    return load_instructions(project_path(location), **kwargs)


def load_training_data(spec: str, *, limit: int | None = None, seed: int = 42,
                       **kwargs) -> tuple[list[dict], DataReport]:
    """Load a profile's data spec: one file or "hf:<id>", or a mixture with shares/counts (module docstring)."""
    sources = parse_data_spec(spec)
    if len(sources) == 1 and sources[0][1] is None:
        return _load_source(sources[0][0], limit=limit, **kwargs)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    loaded = [_load_source(location, **kwargs) for location, _ in sources]
    wanted = [_wanted(amount, report, location, spec) for (location, amount), (_, report) in zip(sources, loaded)]
    used = _apportion(wanted, limit) if limit is not None and sum(wanted) > limit else wanted
    records = []
    for index, ((location, amount), (rows, report)) in enumerate(zip(sources, loaded)):
        # Seeded per source, so adding a source to a mixture does not change what the others draw.
        chosen = sorted(random.Random(f"{seed}/{index}/{location}").sample(range(len(rows)), used[index]))
        records += [rows[i] for i in chosen]
        _record_cut(report, [rows[i] for i in chosen], len(rows) - wanted[index], wanted[index] - used[index],
                    f"not drawn (share {amount})" if isinstance(amount, float) else f"not drawn (count {amount})",
                    f"over limit {limit}")
    return records, _combine(spec, [report for _, report in loaded])


def _wanted(amount: float | int | None, report: DataReport, location: str, spec: str) -> int:
    """How many of a source's usable records its share or count asks for."""
    if amount is None:
        return report.kept
    if isinstance(amount, float):
        return round(amount * report.kept)
    if amount > report.kept:
        raise DataError(f"data spec {spec!r}: {location} has {report.kept} usable records, fewer than the "
                        f"{amount} asked for\n{report}", report)
    return amount


def _apportion(wanted: list[int], limit: int) -> list[int]:
    """Scale the per-source counts down to `limit` in total, keeping their ratios (largest remainders)."""
    total = sum(wanted)
    quotas = [w * limit / total for w in wanted]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(wanted)), key=lambda i: counts[i] - quotas[i])
    for i in by_remainder[:limit - sum(counts)]:
        counts[i] += 1
    return counts


def _record_cut(report: DataReport, chosen: list[dict], not_drawn: int, over_limit: int,
                share_reason: str, limit_reason: str) -> None:
    for reason, n in ((share_reason, not_drawn), (limit_reason, over_limit)):
        if n:
            report.cut[reason] += n
    report.kept = len(chosen)
    report.with_tools = sum(bool(r["tools"]) for r in chosen)


def _combine(spec: str, reports: list[DataReport]) -> DataReport:
    """A mixture's report: the sums of its sources' counts, with each source's report inside."""
    total = DataReport(path=spec, sources=reports)
    for report in reports:
        total.read += report.read
        total.kept += report.kept
        total.with_tools += report.with_tools
        total.skipped.update(report.skipped)
        total.cut.update(report.cut)
    total.check()
    if total.kept == 0:
        raise DataError(f"{spec}: the mixture selects no record\n{total}", total)
    return total
