"""The machine a notebook runs on: GPU and memory, library versions, what training used, and how progress shows."""
from __future__ import annotations

import functools
import os
import platform
import sys
import warnings
from importlib.metadata import PackageNotFoundError, version

import torch

from .console import tqdm

__all__ = [
    "LIBRARIES",
    "NoGPUWarning",
    "environment_info",
    "describe_environment",
    "check_environment",
    "memory_in_use",
    "training_footprint",
    "describe_footprint",
    "TrainingProgress",
    "use_plain_progress",
]

LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets")


class NoGPUWarning(UserWarning):
    """The profile is sized for a GPU but none is visible."""


warnings.simplefilter("always", NoGPUWarning)  # shown on every re-run of the cell, not only the first


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _total_ram_mb() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):  # not a POSIX system
        return None


def environment_info() -> dict:
    """Python, library versions, the GPU (name, memory, bf16) or, without one, CPU cores and RAM."""
    info = {"python": platform.python_version(), **{lib: _version(lib) for lib in LIBRARIES}}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"device": "cuda", "gpu": props.name, "gpu_count": torch.cuda.device_count(),
                 "gpu_memory_mb": props.total_memory / 2**20, "cuda": torch.version.cuda,
                 "bf16": torch.cuda.is_bf16_supported()}
    else:
        info |= {"device": "cpu", "gpu": None, "gpu_count": 0, "gpu_memory_mb": None, "cuda": torch.version.cuda,
                 "bf16": False}
    return info | {"cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "ram_mb": _total_ram_mb()}


def describe_environment(info: dict) -> str:
    """Three lines for the environment cell: the accelerator, the libraries, Python and CPU."""
    if info["device"] == "cuda":
        more = f" (x{info['gpu_count']})" if info["gpu_count"] > 1 else ""
        device = (f"GPU: {info['gpu']}{more}, {info['gpu_memory_mb'] / 1024:.1f} GiB, CUDA {info['cuda']}, "
                  f"bf16 {'yes' if info['bf16'] else 'no (fp16 compute)'}")
    else:
        device = "GPU: none visible, running on the CPU"
    libraries = " · ".join(f"{lib} {info[lib] or 'not installed'}" for lib in LIBRARIES)
    ram = f", {info['ram_mb'] / 1024:.1f} GiB RAM" if info["ram_mb"] else ""
    cores = f"{info['cpu_cores']} CPU cores (torch uses {info['torch_threads']})"
    return f"{device}\n{libraries}\nPython {info['python']}, {cores}{ram}"


def _no_gpu_message(profile) -> str:
    return (f"Profile {profile.name!r} expects a GPU, but none is visible (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'no'}). {profile.base_model} would load and train on the CPU: hours instead of "
            "minutes, or out of memory. On Colab: Runtime > Change runtime type > a GPU (T4), then run the notebook "
            "again. Elsewhere: check `nvidia-smi` and install a CUDA build of torch. Or use PROFILE = 'smoke'.")


def check_environment(profile) -> dict:
    """The environment cell: set torch's CPU threads (profile.torch_threads), print machine and versions, warn if
    the profile expects a GPU and none is present, and set up progress display (use_plain_progress); returns
    environment_info()."""
    if getattr(profile, "torch_threads", 0):
        torch.set_num_threads(profile.torch_threads)
    info = environment_info()
    print(describe_environment(info))
    if getattr(profile, "expects_gpu", False) and info["device"] != "cuda":
        warnings.warn(_no_gpu_message(profile), NoGPUWarning, stacklevel=2)
    use_plain_progress()
    return info


def _peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def memory_in_use() -> dict:
    """Peak memory so far and the total it is a share of: reserved GPU memory, or on a CPU the process's peak RSS."""
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory / 2**20
        return {"kind": "peak reserved GPU memory", "mb": torch.cuda.max_memory_reserved() / 2**20,
                "total_mb": total}
    # No GPU memory to report on a CPU: the process's resident memory (weights, activations, Python) stands in.
    return {"kind": "peak process RSS (CPU run, not GPU memory)", "mb": _peak_rss_mb(), "total_mb": _total_ram_mb()}


def training_footprint(result, before: dict, after: dict) -> dict:
    """Memory before/after training (and as a share of the total), time and tokens/s: flat, for the results JSON."""
    total = after["total_mb"]
    return {
        "memory_kind": after["kind"], "memory_before_mb": before["mb"], "memory_after_mb": after["mb"],
        "memory_for_training_mb": after["mb"] - before["mb"], "memory_total_mb": total,
        "memory_share_pct": 100 * after["mb"] / total if total else None,
        "new_steps": result.new_steps, "train_seconds": result.wall_time_s if result.new_steps else None,
        "tokens_per_s": result.tokens_per_second,
    }


def describe_footprint(result, footprint: dict) -> str:
    """Two lines: what training did and how fast (result.describe()), and the memory it held."""
    f = footprint
    share = f", {f['memory_share_pct']:.0f}% of {f['memory_total_mb']:,.0f} MB" if f["memory_share_pct"] else ""
    return (f"{result.describe()}\n{f['memory_kind']}: {f['memory_before_mb']:,.0f} MB before training, "
            f"{f['memory_after_mb']:,.0f} MB after (+{f['memory_for_training_mb']:,.0f} MB){share}")


@functools.cache
def _training_progress() -> type:
    """The TrainingProgress class, made on first use (use_plain_progress): TrainerCallback's import pulls in peft
    and bitsandbytes, seconds that importing this module should not cost."""
    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        """One training bar with the latest loss beside it; the loss curve is the plot drawn after training."""

        def __init__(self):
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:  # a resumed run starts the bar where its checkpoint left off
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="training", unit="step")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and "loss" in (logs or {}):
                self.bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)  # shown at the next refresh

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return TrainingProgress


def __getattr__(name: str):
    if name == "TrainingProgress":  # `from helpers.environment import TrainingProgress` still works
        return _training_progress()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _through_console(factory, args, kwargs):
    from transformers.utils.logging import EmptyTqdm

    return factory(*args, **kwargs) if factory is EmptyTqdm else tqdm(*args, **kwargs)


def use_plain_progress() -> None:
    """Progress that reads the same live and saved: one training bar (no per-step loss table), transformers' bars
    as text in headless runs (papermill), and no datasets/hub bars there, which could only show as frozen widgets."""
    import transformers.trainer
    from transformers.utils import logging as hf_logging

    from .console import headless

    # transformers picks its progress display from this module-level default at each Trainer's creation; in a
    # notebook that default draws a table of every logged loss, which the loss figure repeats.
    transformers.trainer.DEFAULT_PROGRESS_CALLBACK = _training_progress()
    hf_logging.set_tqdm_hook(_through_console)  # the documented hook: widget when live, text when headless
    if headless():
        import datasets
        import huggingface_hub

        datasets.disable_progress_bars()  # their bar class is fixed to a widget at import; no text mode to switch to
        huggingface_hub.utils.disable_progress_bars()
