"""Run every notebook headlessly with papermill under one profile; write executed copies, results and a summary.

    python scripts/run_cookbook.py --profile smoke [--only 00_quickstart]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parent.parent


def run_notebook(notebook: Path, profile: str, runs: Path, parameters: dict | None = None) -> tuple[Path, float]:
    """Execute one notebook; returns (results JSON path, seconds)."""
    results = runs / f"{notebook.stem}.json"
    results.unlink(missing_ok=True)  # a stale file must not pass for this run's numbers
    start = time.perf_counter()
    pm.execute_notebook(
        str(notebook), str(runs / notebook.name),
        parameters={"PROFILE": profile, "RESULTS_PATH": str(results), **(parameters or {})},
        cwd=str(notebook.parent), progress_bar=False, log_output=True,
    )
    return results, time.perf_counter() - start


def write_summary(runs: Path, rows: list[str], profile: str, total_s: float) -> Path:
    """runs/<profile>/summary.md: one line per notebook with its wall time, then the total."""
    header = [f"# Cookbook run, profile `{profile}`", "",
              "| notebook | measured | numbers | profile | time |", "|---|---|---|---|---|"]
    total = f"| **total** ({len(rows)} notebooks) | | | | {total_s:.0f} s ({total_s / 60:.1f} min) |"
    path = runs / "summary.md"
    path.write_text("\n".join(header + rows + [total]) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> int:
    from helpers.results import read_results, summary_line

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--only", nargs="*", help="notebook stems to run (default: all)")
    args = parser.parse_args(argv)
    runs = ROOT / "runs" / args.profile
    runs.mkdir(parents=True, exist_ok=True)
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    rows, failed, total = [], [], 0.0
    for nb in notebooks:
        if args.only and nb.stem not in args.only:
            continue
        print(f"== {nb.stem} ({args.profile})", flush=True)
        start = time.perf_counter()
        try:
            results, seconds = run_notebook(nb, args.profile, runs)
            rows.append(summary_line(read_results(results), seconds))
        except Exception as err:  # keep going: one broken notebook should not hide the others' results
            seconds = time.perf_counter() - start
            failed.append(nb.stem)
            rows.append(f"| {nb.stem} | FAILED: {type(err).__name__} | see runs/{args.profile}/{nb.name} | "
                        f"{args.profile} | {seconds:.0f} s |")
        total += seconds
        print(f"== {nb.stem}: {seconds:.0f} s (so far {total:.0f} s)", flush=True)
    summary = write_summary(runs, rows, args.profile, total)
    print(f"\n{summary.read_text(encoding='utf-8')}\n(written to {summary})")
    if failed:
        print(f"failed notebooks: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
