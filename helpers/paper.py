"""The paper's published numbers (transcribed as CSV in data_samples/paper/), for plotting beside ours."""
from __future__ import annotations

from .paths import project_path

__all__ = ["CITATION", "load_paper_table", "paper_tables"]

CITATION = ("Si, Wang, Lin, Zhang, Cao, Wang. An Empirical Study of Instruction-tuning Large Language Models "
            "in Chinese. Findings of EMNLP 2023 (arXiv 2310.07328).")


def paper_tables() -> list[str]:
    """Names of the transcribed tables and figures."""
    return sorted(p.stem for p in project_path("data_samples/paper").glob("*.csv"))


def load_paper_table(name: str):
    """One of the paper's tables as a DataFrame (e.g. 'table2_belle_eval_bases')."""
    import pandas as pd

    path = project_path("data_samples/paper") / f"{name}.csv"
    if not path.exists():
        raise ValueError(f"no paper table {name!r}; available: {', '.join(paper_tables())}")
    return pd.read_csv(path)
