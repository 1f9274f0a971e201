"""Project files agree with each other: requirements vs environment.yml, README's commands, CI, paper data."""
from __future__ import annotations

import re

import pandas as pd

from helpers.paper import load_paper_table, paper_tables
from helpers.paths import PROJECT_ROOT as ROOT


def _requirements():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_environment_yml_matches_requirements():
    env = (ROOT / "environment.yml").read_text()
    pip = [m.strip() for m in re.findall(r"^\s+- (.+)$", env.split("- pip:")[1], re.M)]
    assert [p for p in pip if p != "-e ."] == _requirements()


def test_torch_range_admits_the_local_cpu_build():
    assert "torch>=2.4" in _requirements()  # torch 2.13.0 (installed first) satisfies it: no CUDA wheels pulled


def test_readme_has_the_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    commands = [line for b in blocks[:1] for line in b.strip().splitlines()]
    assert commands == ["make cookbook", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_paper_tables_are_shipped_with_the_citation():
    assert len(paper_tables()) == 12
    assert "arXiv 2310.07328" in (ROOT / "data_samples" / "paper" / "README.md").read_text()
    t2 = load_paper_table("table2_belle_eval_bases").set_index("model")
    categories = t2.columns[1:-1]
    assert abs(t2.loc["LLaMA", categories].mean() - t2.loc["LLaMA", "avg"]) < 0.05  # avg = mean of categories
    assert isinstance(load_paper_table("table4_peft_methods"), pd.DataFrame)


def test_sample_data_sizes():
    import json

    instructions = json.loads((ROOT / "data_samples" / "instructions_zh.json").read_text(encoding="utf-8"))
    assert len(instructions) >= 200 and len({i["category"] for i in instructions}) == 10
    evals = json.loads((ROOT / "data_samples" / "eval_zh.json").read_text(encoding="utf-8"))
    assert {"question", "std_answer", "class"} == set(evals[0])
