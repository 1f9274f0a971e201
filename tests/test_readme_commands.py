"""Every papermill command the README shows runs as written, up to the resolved profile (issue 7.11).

What is run, and why: the README's commands name GPU profiles (colab-t4) whose models and data cannot be
downloaded here, so each command is run through the real papermill CLI with its own arguments and its own
profile, on a copy of the notebook that stops right after the cell that resolves the parameters
(`profile = get_profile(...)`) and then writes the resolved profile to JSON. That exercises everything the
README example broke on (CLI parsing, parameter injection, OVERRIDES + named parameters, validation) in a few
seconds per command, with no download. Two changes to each command: the output notebook goes to a temp dir,
and OVERRIDES gains `output_root: <temp dir>` so nothing is written into the repository. Executing the whole
notebook end to end is test_notebooks.py's job (every notebook, on smoke).
"""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import nbformat
import pytest
import yaml

from helpers.paths import PROJECT_ROOT
from helpers.profiles import get_profile


def readme_papermill_commands() -> list[str]:
    """The papermill command lines in README.md (inline code spans and code blocks alike)."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"`((?:\S*/)?papermill\s[^`\n]*)`", readme)  # spans that start with the command


COMMANDS = readme_papermill_commands()


def test_the_readme_shows_a_papermill_command():
    assert COMMANDS, "README.md shows no papermill command any more: update this test"
    assert any("OVERRIDES" in c for c in COMMANDS)  # the example that used to crash


def _parse(command: str) -> dict:
    """The notebook, the -p parameters and the -y YAML of one papermill command line."""
    argv = shlex.split(command)
    start = next(i for i, a in enumerate(argv) if a.endswith("papermill"))
    args = argv[start + 1:]
    positional, params, i = [], {}, 0
    while i < len(args):
        if args[i] in ("-p", "--parameters"):
            params[args[i + 1]] = yaml.safe_load(args[i + 2])  # papermill reads -p values as YAML scalars
            i += 3
        elif args[i] in ("-y", "--parameters_yaml"):
            params.update(yaml.safe_load(args[i + 1]))
            i += 2
        else:
            positional.append(args[i])
            i += 1
    return {"argv": args, "notebook": positional[0], "params": params}


def _cut_after_parameters(source, dest, resolved_json) -> None:
    """The notebook up to its get_profile cell, plus one cell writing the resolved profile to JSON."""
    nb = nbformat.read(source, as_version=4)
    cut = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "get_profile(" in c.source
               and "parameters" not in c.metadata.get("tags", []))
    nb.cells = nb.cells[:cut + 1] + [nbformat.v4.new_code_cell(
        f"import json\nopen({str(resolved_json)!r}, 'w').write(json.dumps(profile.to_dict()))")]
    nbformat.write(nb, dest)


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_papermill_command_resolves_its_parameters(command, tmp_path):
    parsed = _parse(command)
    notebook = PROJECT_ROOT / parsed["notebook"]
    cut, resolved = tmp_path / notebook.name, tmp_path / "resolved.json"
    _cut_after_parameters(notebook, cut, resolved)
    argv = [str(cut) if a == parsed["notebook"] else a for a in parsed["argv"]]
    argv[argv.index(str(cut)) + 1] = str(tmp_path / "out.ipynb")  # the output notebook
    overrides = {**parsed["params"].get("OVERRIDES", {}), "output_root": str(tmp_path / "outputs")}
    argv += ["-y", yaml.safe_dump({"OVERRIDES": overrides}), "--no-progress-bar"]
    proc = subprocess.run([sys.executable, "-m", "papermill", *argv], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(resolved.read_text(encoding="utf-8"))
    expected = get_profile(parsed["params"].get("PROFILE", "smoke"), overrides).to_dict()
    assert got == expected
    for field, value in parsed["params"].get("OVERRIDES", {}).items():
        assert got[field] == value  # the README's own values arrive in the profile
