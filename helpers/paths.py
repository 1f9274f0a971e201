"""Where things live: the project root, data files, outputs and caches."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PROJECT_ROOT", "project_path", "cache_dir", "output_dir"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def project_path(relative: str | os.PathLike) -> Path:
    """A path inside the project (data_samples/..., figures/...), whatever the working directory is."""
    path = Path(relative)
    return path if path.is_absolute() else PROJECT_ROOT / path


def cache_dir(name: str) -> Path:
    """A cache folder (tiny models, downloaded benchmarks); ZH_COOKBOOK_CACHE moves them all."""
    root = Path(os.environ.get("ZH_COOKBOOK_CACHE", PROJECT_ROOT / ".cache"))
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_dir(output_root: str, profile: str, notebook: str) -> Path:
    """The folder for one notebook's heavy artifacts (adapters, checkpoints) under one profile."""
    path = project_path(output_root) / profile / notebook
    path.mkdir(parents=True, exist_ok=True)
    return path
