"""Bootstrap confidence intervals for per-item scores (Belle-eval, MMCU).

Small reproductions score a few hundred items, so a 2-point gap can be noise. Every number a notebook
reports comes with a percentile-bootstrap interval, and run-vs-run comparisons resample items jointly
(paired), which is far tighter than comparing two independent intervals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["bootstrap_ci", "macro_bootstrap_ci", "paired_difference", "summarise", "compare_runs"]

# Last grouping columns that name a per-item label; summarise() adds their "avg" row.
_LABEL_COLS = ("category", "subject", "task", "domain")


def _as_array(values, name: str = "values") -> np.ndarray:
    if hasattr(values, "__iter__") and not hasattr(values, "__len__"):
        values = list(values)  # generators
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty: cannot compute a confidence interval")
    # Refuse NaN rather than drop it: a silently shrunken sample would misstate n and the interval.
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains {int(np.isnan(arr).sum())} NaN value(s); drop or fill them first")
    return arr


def _percentile_ci(arr: np.ndarray, n_boot: int, confidence: float, seed: int) -> tuple[float, float, float]:
    if np.all(arr == arr[0]):
        v = float(arr[0])  # no spread to resample; arr.mean() would add float noise (0.7 -> 0.7000000000000002)
        return v, v, v
    mean = float(arr.mean())
    rng = np.random.default_rng(seed)
    # One (n_boot, n) index matrix: vectorised and memory-light for the few-thousand-item sets here.
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    means = arr[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return mean, float(low), float(high)


def bootstrap_ci(values, *, n_boot=2000, confidence=0.95, seed=0) -> tuple[float, float, float]:
    """(mean, low, high): the mean of values with a percentile-bootstrap confidence interval."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return _percentile_ci(_as_array(values), n_boot, confidence, seed)


def macro_bootstrap_ci(groups, *, n_boot=2000, confidence=0.95, seed=0) -> tuple[float, float, float]:
    """(mean of group means, low, high), resampling items within each group (a stratified bootstrap)."""
    arrays = [_as_array(g, f"group {i}") for i, g in enumerate(groups)]
    if not arrays:
        raise ValueError("macro_bootstrap_ci needs at least one group")
    mean = float(np.mean([a.mean() for a in arrays]))
    rng = np.random.default_rng(seed)
    boot = np.mean([a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1) for a in arrays], axis=0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return mean, min(float(low), mean), max(float(high), mean)


def paired_difference(a, b, *, n_boot=2000, confidence=0.95, seed=0) -> tuple[float, float, float]:
    """(mean(b - a), low, high), resampling items jointly so each item is compared with itself."""
    a_arr, b_arr = _as_array(a, "a"), _as_array(b, "b")
    if a_arr.size != b_arr.size:
        raise ValueError(f"paired_difference needs equal lengths, got len(a)={a_arr.size} and len(b)={b_arr.size}")
    # Bootstrapping the per-item differences is exactly joint resampling of (a_i, b_i) pairs.
    return bootstrap_ci(b_arr - a_arr, n_boot=n_boot, confidence=confidence, seed=seed)


def _ci_row(keys: dict, values, n_boot: int, seed: int) -> dict:
    mean, low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {**keys, "n": len(values), "mean": mean, "ci_low": low, "ci_high": high}


def summarise(df, value_col, group_cols, *, n_boot=2000, seed=0) -> pd.DataFrame:
    """Tidy table of n, mean, ci_low, ci_high per group, plus an "avg" row (mean of group means) per higher group."""
    group_cols = [group_cols] if isinstance(group_cols, str) else list(group_cols)
    if not group_cols:
        return pd.DataFrame([_ci_row({}, df[value_col].to_numpy(), n_boot, seed)])
    rows = [_ci_row(dict(zip(group_cols, _as_tuple(k))), g[value_col].to_numpy(), n_boot, seed)
            for k, g in df.groupby(group_cols, sort=True, dropna=False)]
    last = group_cols[-1]
    if last.lower() in _LABEL_COLS:
        rows += _avg_rows(df, value_col, group_cols[:-1], last, n_boot, seed)
    return pd.DataFrame(rows, columns=[*group_cols, "n", "mean", "ci_low", "ci_high"])


def _as_tuple(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def _avg_rows(df, value_col, outer, label_col, n_boot, seed) -> list[dict]:
    # The paper's "avg" is the mean of the category (subject) means, so every category weighs the same
    # whatever its size; its interval comes from resampling items within each category.
    groups = [((), df)] if not outer else df.groupby(outer, sort=True, dropna=False)
    rows = []
    for k, g in groups:
        parts = [part[value_col].to_numpy() for _, part in g.groupby(label_col, sort=True)]
        mean, low, high = macro_bootstrap_ci(parts, n_boot=n_boot, seed=seed)
        rows.append({**dict(zip(outer, _as_tuple(k))), label_col: "avg", "n": len(g), "mean": mean,
                     "ci_low": low, "ci_high": high})
    return rows


def compare_runs(df_a, df_b, key_cols, value_col, *, n_boot=2000, seed=0) -> dict:
    """Paired comparison of two runs on the same items: {n, mean_a, mean_b, diff, ci_low, ci_high}."""
    key_cols = [key_cols] if isinstance(key_cols, str) else list(key_cols)
    for name, frame in (("df_a", df_a), ("df_b", df_b)):
        if frame.duplicated(key_cols).any():
            raise ValueError(f"{name} has duplicate rows for key columns {key_cols}")
    merged = df_a[key_cols + [value_col]].merge(
        df_b[key_cols + [value_col]], on=key_cols, how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = int((merged["_merge"] == "left_only").sum())
    only_b = int((merged["_merge"] == "right_only").sum())
    if only_a or only_b:
        raise ValueError(f"runs cover different items: {only_a} only in df_a, {only_b} only in df_b "
                         f"(missing {only_a + only_b} in total)")
    a, b = merged[f"{value_col}_a"].to_numpy(float), merged[f"{value_col}_b"].to_numpy(float)
    diff, low, high = paired_difference(a, b, n_boot=n_boot, seed=seed)
    return {"n": len(merged), "mean_a": float(a.mean()), "mean_b": float(b.mean()),
            "diff": diff, "ci_low": low, "ci_high": high}
