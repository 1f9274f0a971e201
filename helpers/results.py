"""Headline numbers leave a notebook as JSON; the batch runner summarises them."""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path

__all__ = ["plain", "record_results", "add_figures", "read_results", "summary_line"]

_SECRET_ENV = ("JUDGE_API_KEY", "OPENAI_API_KEY", "HF_TOKEN")  # never allowed into a results file


def _check_no_secrets(text: str) -> None:
    for name in _SECRET_ENV:
        value = os.environ.get(name)
        if value and len(value) >= 8 and value in text:
            raise ValueError(f"refusing to write results: they contain the value of ${name}")


def plain(value):
    """Numbers as Python numbers (numpy scalars become int/float, so they print as 0.25, not np.float64(0.25)),
    recursively through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy / torch scalars
        return value.item()
    return value


def _finite(value):
    """NaN/inf are not JSON; record them as null so the file stays valid."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(path: Path, payload: dict) -> Path:
    text = json.dumps(payload, ensure_ascii=False, indent=2)
    _check_no_secrets(text)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def record_results(path: str | os.PathLike, *, notebook: str, profile, measured: str, metrics: dict,
                   figures=(), elapsed_s: float | None = None) -> Path:
    """Write a notebook's headline numbers (what it measured, metrics, figures, profile) atomically as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "notebook": notebook, "profile": profile.name, "result_note": profile.result_note, "measured": measured,
        "metrics": _finite(plain(metrics)), "figures": [str(f) for f in figures], "elapsed_s": elapsed_s,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    return _write_json(path, payload)


def add_figures(path: str | os.PathLike, figures, *, elapsed_s: float | None = None) -> Path:
    """Add figure paths to a results JSON already written, so scores are saved before any figure is drawn."""
    path = Path(path)
    payload = read_results(path)
    payload["figures"] = list(dict.fromkeys([*payload["figures"], *map(str, figures)]))
    payload["elapsed_s"] = elapsed_s if elapsed_s is not None else payload["elapsed_s"]
    return _write_json(path, payload)


def read_results(path: str | os.PathLike) -> dict:
    """Load a results JSON written by record_results."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def summary_line(results: dict, wall_s: float) -> str:
    """One markdown table row: notebook, what it measured, headline numbers, profile, time."""
    numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in results["metrics"].items() if not isinstance(v, (dict, list)))
    note = f" ({results['result_note']})" if results.get("result_note") else ""
    cells = [results["notebook"], results["measured"], numbers, results["profile"] + note, f"{wall_s:.0f} s"]
    return "| " + " | ".join(cells) + " |"


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
