"""Experiment arms: named profile overrides, run with one recipe, cached by their settings, compared with intervals.

An arm is a dict: {"name": "zh template", "prompt_template": "alpaca_zh"}. Every key other than the three arm
keys below is a profile field, so an arm can vary anything load_base / tune / evaluate_model honour, and a new
profile field needs no change here. Optional arm keys:
    "paper":      the label of the paper's row this arm stands for (used only to look up the paper's numbers)
    "compare_to": the arm this one is compared with (paired, item by item); default: see comparison_table

Each arm runs as: load the base -> (optionally) evaluate it untuned -> tune -> evaluate the tuned model, and is
stored under <output_root>/<profile>/arms/<key>/, where <key> hashes every training-relevant profile field and
the content of the local files they name. Evaluation results sit beside the adapter, one CSV per stage keyed by
the evaluation settings. Re-running reads finished arms back; an interrupted arm resumes from its last complete
checkpoint (train_model does that in the same folder); a changed setting gives a new key, so only that arm runs.
"""
from __future__ import annotations

import functools
import gc
import hashlib
import json
import math
import os
import re
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from . import experiment
from .models import resolve_model_source
from .paths import PROJECT_ROOT, output_dir, project_path
from .profiles import PROFILES, get_profile
from .stats import macro_bootstrap_ci, summarise

__all__ = [
    "ARM_KEYS", "NON_RESULT_FIELDS", "EVAL_ONLY_FIELDS", "ESTIMATE_RULE", "VERDICTS",
    "resolve_arm", "check_arms", "arm_grid", "data_fingerprint", "arm_key", "eval_key", "arm_folder",
    "model_size", "device_speed", "estimate_memory", "estimate_time", "plan_arms",
    "tidy_rows", "run_arm", "run_arms", "data_table", "untuned_arm", "group_rows",
    "comparison_table", "group_table", "gain_table", "headline", "verdict", "add_verdicts", "paper_view",
    "paper_contrast", "conclusion", "stage_bars", "results_summary", "tokenizer_table", "loss_table", "plan_view",
    "arms_view", "table_view", "beside_rows", "verdict_summary",
]

ARM_KEYS = ("name", "paper", "compare_to")  # arm keys that are not profile fields
# Fields that cannot change a result: left out of the cache key, so editing them re-runs nothing.
NON_RESULT_FIELDS = ("name", "description", "output_root", "result_note", "logging_steps", "save_steps",
                     "torch_threads")
# Fields that change the evaluation but not the adapter: changing them re-evaluates without re-training.
EVAL_ONLY_FIELDS = ("eval_data", "eval_limit", "exam_data", "exam_dev_data", "exam_limit", "max_new_tokens",
                    "eval_batch_size", "eval_suffix", "exam_max_new_tokens")
_VERSION = "2"  # bump when the stored rows change meaning (scoring code, row layout): every arm re-evaluates
_TRAINED = "train.json"  # written after training finished: its presence means the adapter is complete


# ----------------------------------------------------------------------------------------------- arms


def resolve_arm(profile, arm: dict):
    """The profile with the arm's overrides applied, validated by get_profile (the arm named in any error)."""
    base = PROFILES[profile.name]
    changed = {f.name: getattr(profile, f.name) for f in fields(profile)
               if getattr(profile, f.name) != getattr(base, f.name)}
    overrides = {k: v for k, v in arm.items() if k not in ARM_KEYS}
    try:
        return get_profile(profile.name, **{**changed, **overrides})
    except (TypeError, ValueError) as err:
        raise ValueError(f"arm {arm.get('name')!r}: {err}") from err


def check_arms(arms) -> None:
    """Every arm is a dict with a unique name; compare_to names another arm of the list."""
    names = [arm.get("name") if isinstance(arm, dict) else None for arm in arms]
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"arm {i} needs a non-empty 'name', got {arms[i]!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"arm names must be unique; repeated: {dupes}")
    for arm in arms:
        other = arm.get("compare_to")
        if other is not None and (other not in names or other == arm["name"]):
            raise ValueError(f"arm {arm['name']!r}: compare_to={other!r} is not another arm; arms: {names}")


def arm_grid(bases, variants: dict) -> list[dict]:
    """Every base x variant as an arm named "<base> · <variant>", compared with the same base's first variant.

    bases: arms ({"name", "paper"?, overrides}); variants: {name: overrides (with "paper"?)}. The paper labels
    join as "<base paper>/<variant paper or name>", matching paper_view(key=[two columns]).
    """
    arms, first = [], next(iter(variants))
    for base in bases:
        for name, extra in variants.items():
            overrides = {k: v for k, v in {**base, **extra}.items() if k not in ARM_KEYS}
            paper = f"{base['paper']}/{extra.get('paper', name)}" if base.get("paper") else None
            compare = {} if name == first else {"compare_to": f"{base['name']} · {first}"}
            arms.append({"name": f"{base['name']} · {name}", "paper": paper, **compare, **overrides})
    return arms


# ------------------------------------------------------------------------------------------ cache keys


@functools.lru_cache(maxsize=256)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    # Files up to 64 MiB are hashed whole; bigger ones (model shards) by size and their first MiB, which is
    # stable when a folder is copied (to Google Drive, say), unlike the modification time.
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= 64 * 2**20:
            for block in iter(lambda: f.read(2**20), b""):
                h.update(block)
        else:
            h.update(f.read(2**20))
    return h.hexdigest()[:16]


def _path_hash(path: Path) -> str:
    if path.is_file():
        st = path.stat()
        return _file_hash(str(path), st.st_size, st.st_mtime_ns)
    files = sorted(p for p in path.rglob("*")
                   if p.is_file() and not any(s.startswith(".") for s in p.relative_to(path).parts))
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path).as_posix()}={_path_hash(p)};".encode())
    return h.hexdigest()[:16]


def _local_paths(profile, name: str) -> list[Path]:
    """Existing local files/folders a string field names: a path, each part of a mixture "a.json:1 + b.json:0.3",
    or for base_model the folder it resolves to (a tiny model's folder)."""
    value = getattr(profile, name)
    if not isinstance(value, str) or not value.strip():
        return []
    if name == "base_model":
        parts = [resolve_model_source(value)]
    else:
        parts = [re.sub(r":\d+(\.\d+)?$", "", p) for p in re.split(r"\s*\+\s*", value.strip())]
    paths = [project_path(p) for p in parts if p]
    return [p for p in paths if p.exists() and p.resolve() != PROJECT_ROOT.resolve()]


def data_fingerprint(profile, names) -> dict[str, list[str]]:
    """{field: [content hash, ...]} for the local files and folders the named fields point at."""
    found = {name: [_path_hash(p) for p in _local_paths(profile, name)] for name in names}
    return {name: hashes for name, hashes in found.items() if hashes}


def _hash(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _train_fields(profile) -> list[str]:
    return [f.name for f in fields(profile) if f.name not in NON_RESULT_FIELDS + EVAL_ONLY_FIELDS]


def arm_key(profile) -> str:
    """Hash of every field that can change the adapter (all but NON_RESULT_FIELDS and EVAL_ONLY_FIELDS) + data."""
    names = _train_fields(profile)
    return _hash({"v": _VERSION, "settings": {n: getattr(profile, n) for n in names},
                  "data": data_fingerprint(profile, names)})


def eval_key(profile, shots=(0,), judge=None, prompts=None) -> str:
    """Hash of the evaluation settings: EVAL_ONLY_FIELDS, their files, the shots, the judge and extra prompt sets."""
    names = [n for n in EVAL_ONLY_FIELDS if hasattr(profile, n)]
    sets = {name: _hash(df[["item_id", "question"]].to_json()) for name, df in sorted((prompts or {}).items())}
    return _hash({"v": _VERSION, "settings": {n: getattr(profile, n) for n in names},
                  "data": data_fingerprint(profile, names), "shots": sorted(shots),
                  "judge": f"{judge.model}@{judge.base_url}" if judge else None, **({"prompts": sets} if sets else {})})


def arm_folder(profile) -> Path:
    """Where an arm with this resolved profile lives: <output_root>/<profile>/arms/<arm_key>."""
    return output_dir(profile.output_root, profile.name, "arms") / arm_key(profile)


def _stage_paths(profile, shots, judge, with_base: bool, prompts=None) -> dict[str, Path]:
    """Per stage, the scores CSV; its answers sit beside it (_answers_path). A stage is done when both exist."""
    folder, key = arm_folder(profile), eval_key(profile, shots, judge, prompts)
    return {stage: folder / f"{stage}-{key}.csv" for stage in (("base",) if with_base else ()) + ("tuned",)}


def _answers_path(scores: Path) -> Path:
    return scores.with_suffix(".answers.csv")


def _stage_done(path: Path) -> bool:
    return path.exists() and _answers_path(path).exists()


# ------------------------------------------------------------------------------------------- estimates

ESTIMATE_RULE = (
    "Rough rule, not a measurement, for time: training = 6 x parameters x tokens per optimizer step (batch x "
    "accumulation x max_length; 8x with gradient checkpointing) at 25% of the device's peak FLOP/s, plus 0.05 s "
    "per forward pass; generation = one read of the weights per new token at the device's memory bandwidth plus "
    "1 ms per layer; each of a vocab_expansion's pretrain_steps costs a training step. Memory is the memory "
    "planner's peak (helpers.memory.plan_for_profile, from the base's config, its vocabulary grown by a "
    "vocab_expansion's pieces, and the profile's settings): nf4 or 16-bit weights with peft's fp32 embeddings and "
    "head, the adapter (as LoRA of the profile's rank) with its gradients and optimizer states, the activations saved "
    "for backward (with or without gradient checkpointing), the output layer and loss, short-lived buffers, allocator "
    "slack and the CUDA context; within 7% of peaks measured on an H100 (benchmarks/RESULTS_h100.md). Counts come "
    "from the limits "
    "(or the local files); blank (nan) where neither says."
)
# Peak dense fp16/bf16 FLOP/s and memory bandwidth (bytes/s) of common cards; longer names are matched first.
_DEVICE_SPEED = {"A100": (312e12, 1.6e12), "H100": (990e12, 3.3e12), "H200": (990e12, 4.8e12),
                 "V100": (112e12, 900e9), "A10": (125e12, 600e9), "L4": (121e12, 300e9), "T4": (65e12, 320e9)}
_CPU_SPEED = (1e11, 2e10)
_UTILISATION = 0.25


@functools.lru_cache(maxsize=32)
def _sizes(source: str, trust_remote_code: bool) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    with torch.device("meta"):  # shapes only: no memory, no weights downloaded
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    linear = [m for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head")]
    return {"total": sum(p.numel() for p in model.parameters()), "linear": sum(m.weight.numel() for m in linear),
            "layers": config.num_hidden_layers, "hidden": config.hidden_size, "vocab": config.vocab_size}


def model_size(profile) -> dict | None:
    """Parameter counts and shapes of the profile's base from its config alone (None when it cannot be read)."""
    try:
        return _sizes(resolve_model_source(profile.base_model), profile.trust_remote_code)
    except (OSError, ValueError) as err:  # offline, or a gated/unknown id: the estimates stay blank
        print(f"no size for {profile.base_model}: {type(err).__name__}: {str(err).splitlines()[0]}")
        return None


def device_speed() -> tuple[str, float, float]:
    """(device name, peak FLOP/s, memory bytes/s) of this machine's first GPU, or of a small CPU."""
    import torch

    if not torch.cuda.is_available():
        return "CPU", *_CPU_SPEED
    name = torch.cuda.get_device_name(0)
    match = next((k for k in _DEVICE_SPEED if k in name.upper()), "T4")  # unknown cards: assume the slowest
    return name, *_DEVICE_SPEED[match]


def _dtype_bytes(profile) -> int:
    from .models import pick_dtype

    return pick_dtype(profile.compute_dtype).itemsize


def _weight_bytes(profile, size: dict) -> float:
    per_linear = 0.52 if profile.quantization == "nf4" else _dtype_bytes(profile)
    return size["linear"] * per_linear + (size["total"] - size["linear"]) * _dtype_bytes(profile)


def _expanded_config(profile):
    """The base's config with room for a vocab_expansion's new pieces (None: plan from the base's id as it is)."""
    rows = _new_vocab_rows(profile)
    if not rows:
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model_source(profile.base_model),
                                        trust_remote_code=profile.trust_remote_code)
    config.vocab_size += rows
    return config


def estimate_memory(profile) -> float | None:
    """Predicted peak training memory (GiB) of the profile: helpers.memory.plan_for_profile, from the base's config."""
    from .memory import plan_for_profile

    try:
        return plan_for_profile(profile, config=_expanded_config(profile)).total_gib
    except (OSError, ValueError, AttributeError) as err:  # offline, gated, or a config the planner cannot read
        print(f"no memory estimate for {profile.base_model}: {type(err).__name__}: {str(err).splitlines()[0]}")
        return None


def _new_vocab_rows(profile) -> int:
    """Rows vocab_expansion can add to the embeddings and the output layer: its piece count (an upper bound)."""
    from .vocab import parse_vocab_expansion

    spec = parse_vocab_expansion(profile.vocab_expansion)
    return spec[1] if spec else 0


def _source_count(location: str, amount) -> int | None:
    """Records one source of a data spec gives: its count, else its share of a local file's records."""
    from .data import iter_json_records

    if isinstance(amount, int):
        return amount
    path = project_path(location)
    if not path.is_file() or path.suffix not in (".json", ".jsonl"):
        return None
    n = sum(1 for _ in iter_json_records(path))
    return n if amount is None else round(amount * n)


def _count(spec: str, limit: int) -> int | None:
    """Records a data spec (one source or a mixture) yields: the sum over its sources, capped by the limit; the
    limit alone when a source's size is unknown (a hub set without a count); None when neither says."""
    from .data import parse_data_spec

    counts = [_source_count(location, amount) for location, amount in parse_data_spec(spec)]
    if None in counts:
        return limit or None
    return min(sum(counts), limit) if limit else sum(counts)


def _train_steps(profile) -> int | None:
    if profile.max_steps > 0:
        return profile.max_steps
    n = _count(profile.train_data, profile.train_limit)
    return math.ceil(profile.epochs * n / (profile.batch_size * profile.grad_accum)) if n else None


def estimate_time(profile, *, shots=(0,), n_prompts: int = 0) -> dict:
    """Rough seconds to train the profile ("train_s") and to evaluate one model on both benchmarks and answer
    `n_prompts` extra prompts ("eval_s")."""
    size, steps = model_size(profile), _train_steps(profile)
    n_belle, n_exam = _count(profile.eval_data, profile.eval_limit), _count(profile.exam_data, profile.exam_limit)
    if size is None:
        return {"train_s": None, "eval_s": None}
    _, flops, bandwidth = device_speed()
    rate = flops * _UTILISATION
    tokens = profile.batch_size * profile.grad_accum * profile.max_length
    step = (8 if profile.gradient_checkpointing else 6) * size["total"] * tokens / rate + 0.05 * profile.grad_accum
    train_s = (steps + profile.pretrain_steps) * step if steps else None  # continued pre-training steps cost alike
    if not (n_belle and n_exam):
        return {"train_s": train_s, "eval_s": None}
    new_token = _weight_bytes(profile, size) / bandwidth + size["layers"] * 1e-3
    batches = math.ceil(n_belle / profile.eval_batch_size), math.ceil(n_exam / profile.eval_batch_size)
    # Belle answers; then per shot setting an exam reply (exam_max_new_tokens), plus both modes' prompt passes
    # (~150 tokens/question)
    prompts = sum(2 * 2 * size["total"] * 150 * (k + 1) * n_exam / rate for k in shots)
    replies = (batches[0] + math.ceil(n_prompts / profile.eval_batch_size)) * profile.max_new_tokens * new_token
    exam_s = len(shots) * batches[1] * profile.exam_max_new_tokens * new_token
    eval_s = replies + exam_s + prompts
    return {"train_s": train_s, "eval_s": eval_s}


def plan_arms(profile, arms, *, shots=(0,), judge=None, with_base=False, prompts=None) -> pd.DataFrame:
    """Per arm: base, parameters, training steps, estimated minutes and GiB (ESTIMATE_RULE), and cache status.
    An arm with the same adapter as an earlier one (it differs only in evaluation settings) costs no training."""
    check_arms(arms)
    device = device_speed()[0]
    rows, planned = [], set()
    for arm in arms:
        p = resolve_arm(profile, arm)
        todo = [s for s, path in _stage_paths(p, shots, judge, with_base, prompts).items() if not _stage_done(path)]
        stored, shared = (arm_folder(p) / _TRAINED).exists(), arm_key(p) in planned
        trained = stored or shared
        planned.add(arm_key(p))
        n_prompts = sum(len(df) for df in (prompts or {}).values())
        est, size, memory = estimate_time(p, shots=shots, n_prompts=n_prompts), model_size(p), estimate_memory(p)
        minutes = None
        if todo and est["eval_s"] is not None and (trained or est["train_s"] is not None):
            minutes = ((0 if trained else est["train_s"]) + est["eval_s"] * len(todo)) / 60
        rows.append({"arm": arm["name"], "base_model": p.base_model,
                     "params_m": size["total"] / 1e6 if size else None, "train_steps": _train_steps(p),
                     "est_minutes": 0.0 if not todo else minutes, "est_memory_gib": memory,
                     "status": "cached" if not todo else "trained, to evaluate" if stored
                     else "to evaluate (an earlier arm's adapter)" if shared else "to run",
                     "device": device})
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- running


def tidy_rows(evaluation: dict) -> pd.DataFrame:
    """evaluate_model's output as rows {benchmark, metric, group, item_id, score (0-100; NaN: unscored)}."""
    belle, exam = evaluation["belle"], evaluation["exam"]
    frames = (
        ("belle", belle["scorer"], belle["category"], belle["item_id"], belle["score"].astype(float) * 100),
        ("exam", exam["mode"] + "/" + exam["shots"].astype(str) + "-shot", exam["subject"], exam["item_id"],
         exam["correct"].astype(float) * 100),
    )
    return pd.concat([pd.DataFrame({"benchmark": bench, "metric": metric.to_numpy(), "group": group.to_numpy(),
                                    "item_id": item.astype(str).to_numpy(), "score": score.to_numpy()})
                      for bench, metric, group, item, score in frames], ignore_index=True)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)  # a kill mid-write never leaves a half file that passes for a finished stage


def _read_rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"item_id": str, "group": str, "metric": str, "benchmark": str})


def _tuned_model(model, tokenizer, profile, folder: Path):
    """The trained adapter on the base: read back when training finished, else trained (or resumed) now."""
    if (folder / _TRAINED).exists():
        tuned = experiment.attach_adapter(model, folder / "adapter")
        if tuned is None:
            raise RuntimeError(f"{folder / 'adapter'} does not fit {profile.base_model}; delete {folder} to retrain")
        return tuned, "evaluated"
    result, report = experiment.tune(model, tokenizer, profile, folder)
    _write_atomic(folder / _TRAINED, json.dumps({"train": result.to_dict(), "data": report.to_dict()}, indent=1))
    return result.model, ("resumed" if result.resumed_from else "trained")


def _stage_answers(evaluation: dict, extra: pd.DataFrame | None) -> pd.DataFrame:
    """The replies a stage gave: Belle-eval's (set "belle", with its references) and those to the extra prompt sets;
    "asked" is each instruction as the model got it (eval_suffix included)."""
    belle = evaluation["answers"][["item_id", "category", "question", "asked", "reference", "response"]]
    belle = belle.assign(set="belle")
    return pd.concat([belle, extra], ignore_index=True) if extra is not None else belle


def _evaluate_stage(model, tokenizer, profile, benchmarks, path: Path, *, label, shots, judge, prompts, progress):
    """Score a model on both benchmarks, answer the extra prompt sets, and store scores and answers."""
    evaluation = experiment.evaluate_model(model, tokenizer, profile, benchmarks, label=label, shots=tuple(shots),
                                           judge=judge, progress=progress)
    extra = experiment.answer_prompt_sets(model, tokenizer, profile, prompts, progress=progress) if prompts else None
    _write_atomic(_answers_path(path), _stage_answers(evaluation, extra).to_csv(index=False))
    _write_atomic(path, tidy_rows(evaluation).to_csv(index=False))  # last: its presence marks the stage done


def _run_missing(profile, arm: dict, paths: dict, missing: list, shots, judge, prompts, progress: bool) -> str:
    folder = arm_folder(profile)
    _write_atomic(folder / "arm.json", json.dumps({"arm": arm, "profile": profile.to_dict()}, indent=1,
                                                  ensure_ascii=False, default=str))
    model, tokenizer = experiment.load_base(profile)
    benchmarks = experiment.load_benchmarks(profile)
    evaluate = functools.partial(_evaluate_stage, tokenizer=tokenizer, profile=profile, benchmarks=benchmarks,
                                 shots=shots, judge=judge, prompts=prompts, progress=progress)
    if "base" in missing:
        evaluate(model, path=paths["base"], label="base")
    status = "evaluated"
    if "tuned" in missing:
        tuned, status = _tuned_model(model, tokenizer, profile, folder)
        evaluate(tuned, path=paths["tuned"], label="tuned")
    return status


def _arm_info(arm: dict, profile, status: str, seconds: float) -> dict:
    folder = arm_folder(profile)
    trained = json.loads((folder / _TRAINED).read_text()) if (folder / _TRAINED).exists() else {}
    train = trained.get("train", {})
    return {"arm": arm["name"], "base_model": profile.base_model, "key": folder.name, "folder": str(folder),
            "status": status, "seconds": seconds, "steps": train.get("steps"), "train_s": train.get("wall_time_s"),
            "peak_memory_mb": train.get("peak_memory_mb"), "peak_memory_kind": train.get("peak_memory_kind"),
            "trainable_params": train.get("trainable_params"),
            "loss_history": train.get("loss_history", []), "data": trained.get("data")}


def _release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the next arm loads another base into the same GPU


def run_arm(profile, arm: dict, *, shots=(0,), judge=None, with_base=False, prompts=None, progress=True):
    """One arm: (score rows, answers, info dict), rows and answers with arm and stage columns; only stages without
    a stored result are run. `prompts` {name: DataFrame of item_id, category, question}: extra prompt sets each
    stage answers (e.g. finding 07's harmful prompts); their replies land in the answers with set=name."""
    p = resolve_arm(profile, arm)
    paths = _stage_paths(p, shots, judge, with_base, prompts)
    missing = [stage for stage, path in paths.items() if not _stage_done(path)]
    start = time.perf_counter()
    status = _run_missing(p, arm, paths, missing, shots, judge, prompts, progress) if missing else "cached"
    _release_memory()
    rows = [_read_rows(path).assign(arm=arm["name"], stage=stage) for stage, path in paths.items()]
    answers = [pd.read_csv(_answers_path(path), dtype={"item_id": str}, keep_default_na=False)
               .assign(arm=arm["name"], stage=stage) for stage, path in paths.items()]
    return (pd.concat(rows, ignore_index=True), pd.concat(answers, ignore_index=True),
            _arm_info(arm, p, status, time.perf_counter() - start))


def run_arms(profile, arms, *, shots=(0,), judge=None, with_base=False, reference=None, prompts=None,
             progress=True, n_boot=2000) -> dict:
    """Run every arm (finished ones are read back): {"rows", "answers", "arms", "table", "gains" (None without
    base), "data" ({arm: its training data report as a dict, for data_table})}; `prompts` as in run_arm."""
    check_arms(arms)
    parts, replies, infos = [], [], []
    for i, arm in enumerate(arms, 1):
        print(f"[{i}/{len(arms)}] arm {arm['name']!r} ...", flush=True)
        rows, answers, info = run_arm(profile, arm, shots=shots, judge=judge, with_base=with_base, prompts=prompts,
                                      progress=progress)
        print(f"[{i}/{len(arms)}] arm {arm['name']!r}: {info['status']} in {info['seconds']:.0f} s "
              f"({info['folder']})", flush=True)
        parts.append(rows)
        replies.append(answers)
        infos.append(info)
    rows = pd.concat(parts, ignore_index=True)
    data = {info["arm"]: info.pop("data") for info in infos}  # nested dicts: kept out of the arms table
    return {"rows": rows, "answers": pd.concat(replies, ignore_index=True), "arms": pd.DataFrame(infos),
            "table": comparison_table(rows, arms, reference=reference, n_boot=n_boot),
            "gains": gain_table(rows, n_boot=n_boot) if with_base else None, "data": data}


def data_table(reports: dict) -> pd.DataFrame:
    """One row per arm and data source (a mixture's sources one by one): records read, used for training,
    skipped as unusable and left out on purpose (a limit, a share), with the reasons; read = used + skipped +
    left out. `reports`: run_arms(...)["data"]."""
    rows = []
    for arm, report in reports.items():
        for source in (report or {}).get("sources") or ([report] if report else []):
            reasons = {**source["skipped"], **source["cut"]}
            rows.append({"arm": arm, "source": source["path"], "read": source["read"], "used": source["kept"],
                         "skipped": sum(source["skipped"].values()), "left_out": sum(source["cut"].values()),
                         "reasons": "; ".join(f"{r}: {n}" for r, n in reasons.items())})
    return pd.DataFrame(rows, columns=["arm", "source", "read", "used", "skipped", "left_out", "reasons"])


# ------------------------------------------------------------------------------------------ comparisons


def _mean_row(frame: pd.DataFrame, n_boot: int, seed: int) -> dict:
    # The paper's average is the mean of category (subject) means; its interval resamples items per group.
    scored = frame.dropna(subset=["score"])
    if scored.empty:
        return {"n": 0, "n_unscored": len(frame), "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    groups = [g["score"].to_numpy() for _, g in scored.groupby("group", sort=True)]
    mean, low, high = macro_bootstrap_ci(groups, n_boot=n_boot, seed=seed)
    return {"n": len(scored), "n_unscored": len(frame) - len(scored), "mean": mean, "ci_low": low, "ci_high": high}


def _diff_row(a: pd.DataFrame, b: pd.DataFrame, n_boot: int, seed: int, names=("a", "b")) -> dict:
    """Paired difference b - a over the same items (macro over groups), with a stratified bootstrap interval."""
    keys = ["group", "item_id"]
    merged = a[keys + ["score"]].merge(b[keys + ["score"]], on=keys, how="outer", suffixes=("_a", "_b"),
                                       indicator=True)
    unmatched = int((merged["_merge"] != "both").sum())
    if unmatched:
        raise ValueError(f"{names[0]} and {names[1]} were scored on different items ({unmatched} unmatched); "
                         "give both the same eval/exam data and limits")
    pairs = merged.dropna(subset=["score_a", "score_b"]).assign(d=lambda m: m["score_b"] - m["score_a"])
    if pairs.empty:
        return {"diff": np.nan, "diff_low": np.nan, "diff_high": np.nan}
    groups = [g["d"].to_numpy() for _, g in pairs.groupby("group", sort=True)]
    diff, low, high = macro_bootstrap_ci(groups, n_boot=n_boot, seed=seed)
    return {"diff": diff, "diff_low": low, "diff_high": high}


def _against(arms, order: list, reference) -> dict:
    """Each arm's comparison arm: its compare_to; else `reference` (default: the first arm, unless some arm names
    a compare_to, in which case arms without one are references themselves)."""
    pairs = {a["name"]: a.get("compare_to") for a in arms or ()}
    if reference is None and not any(pairs.values()):
        reference = order[0]
    return {name: pairs.get(name) or (reference if name != reference else None) for name in order}


def group_rows(rows: pd.DataFrame, groups: dict) -> pd.DataFrame:
    """The rows of the named groups, {benchmark: [group, ...]}, each as a benchmark of its own ("belle:math"), so
    comparison_table gives one group's mean, interval and paired difference (a category or subject alone)."""
    wanted = [(bench, name) for bench, names in groups.items() for name in names]
    missing = [f"{b}:{g}" for b, g in wanted if not ((rows["benchmark"] == b) & (rows["group"] == g)).any()]
    if missing:
        present = {b: sorted(map(str, g.unique())) for b, g in rows.groupby("benchmark")["group"]}
        raise ValueError(f"no rows for {', '.join(missing)}; groups present: {present}")
    return pd.concat([rows[(rows["benchmark"] == b) & (rows["group"] == g)].assign(benchmark=f"{b}:{g}")
                      for b, g in wanted], ignore_index=True)


def comparison_table(rows: pd.DataFrame, arms=(), *, reference=None, n_boot=2000, seed=0) -> pd.DataFrame:
    """Per stage, benchmark, metric and arm: n, n_unscored, mean [ci_low, ci_high], and the paired difference
    (diff [diff_low, diff_high]) to its `against` arm: the arm's compare_to, else `reference` (default: the first
    arm; but when some arms name a compare_to, arms without one are not compared). Means are macro averages
    (mean of category or subject means, as the paper reports) with stratified bootstrap intervals."""
    order = list(pd.unique(rows["arm"]))
    against = _against(arms, order, reference)
    out = []
    for (stage, bench, metric), block in rows.groupby(["stage", "benchmark", "metric"], sort=False):
        by_arm = dict(list(block.groupby("arm", sort=False)))
        for name in (n for n in order if n in by_arm):
            ref = against.get(name)
            row = {"stage": stage, "benchmark": bench, "metric": metric, "arm": name,
                   **_mean_row(by_arm[name], n_boot, seed), "against": ref}
            if ref in by_arm:
                row.update(_diff_row(by_arm[ref], by_arm[name], n_boot, seed, names=(ref, name)))
            out.append(row)
    if not out:
        return pd.DataFrame()
    # the diff columns once, last, whether or not the first row (an arm compared with another) already has them
    return pd.DataFrame(out).reindex(columns=list(dict.fromkeys([*out[0], "diff", "diff_low", "diff_high"])))


def untuned_arm(rows: pd.DataFrame, name: str = "untuned base") -> pd.DataFrame:
    """The "base" stage of run_arms(..., with_base=True) rows as one more arm, `name`, beside the tuned arms (its
    stage relabelled "tuned" so they are compared): comparison_table(..., reference=name) then gives each arm's
    paired gain over the untuned base, and group_table puts the base row into tables 6/7, as the paper does."""
    base = rows[rows["stage"] == "base"]
    if base.empty:
        raise ValueError("no untuned scores in these rows: run one arm with run_arms(..., with_base=True) first")
    if base["arm"].nunique() > 1:
        raise ValueError(f"untuned scores of several arms ({', '.join(pd.unique(base['arm']))}): pass one arm's rows")
    return base.assign(arm=name, stage="tuned")


def group_table(rows: pd.DataFrame, *, n_boot=2000, seed=0) -> pd.DataFrame:
    """Per stage, benchmark, metric, arm and group (category or subject): n, mean [ci_low, ci_high] of the scored
    items, plus an "avg" group (the mean of group means, as comparison_table's mean): tables 6/7 as data. Arms
    keep their run order; groups follow the paper's columns (Belle-eval's categories, MMCU's subjects), avg last."""
    from .eval_sets import BELLE_CATEGORIES, EXAM_SUBJECTS

    scored = rows.dropna(subset=["score"]).rename(columns={"group": "category"})  # summarise's label column
    table = summarise(scored, "score", ["stage", "benchmark", "metric", "arm", "category"], n_boot=n_boot,
                      seed=seed).rename(columns={"category": "group"})
    arms = {name: i for i, name in enumerate(pd.unique(rows["arm"]))}
    groups = {name: i for i, name in enumerate([*BELLE_CATEGORIES, *EXAM_SUBJECTS])}
    rank = table.assign(_arm=table["arm"].map(arms),
                        _group=table["group"].map(lambda g: groups.get(g, len(groups) + (g == "avg"))))
    return table.loc[rank.sort_values(["_arm", "_group"], kind="stable").index].reset_index(drop=True)


def gain_table(rows: pd.DataFrame, *, n_boot=2000, seed=0) -> pd.DataFrame:
    """Per benchmark, metric and arm: base and tuned means with intervals, and the paired gain (tuned - base)."""
    out = []
    for (bench, metric, name), block in rows.groupby(["benchmark", "metric", "arm"], sort=False):
        stages = dict(list(block.groupby("stage")))
        if not {"base", "tuned"} <= stages.keys():
            continue
        base = _mean_row(stages["base"], n_boot, seed)
        out.append({"benchmark": bench, "metric": metric, "arm": name, "against": "base",
                    "base_mean": base["mean"], "base_ci_low": base["ci_low"], "base_ci_high": base["ci_high"],
                    **_mean_row(stages["tuned"], n_boot, seed),
                    **_diff_row(stages["base"], stages["tuned"], n_boot, seed, names=(f"{name} base", name))})
    return pd.DataFrame(out)


def _shots(metric: str) -> int:
    return int(metric.split("/")[1].split("-")[0])  # "generate/3-shot" -> 3


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """Rows scored the paper's way: Belle-eval by the judge (ROUGE-L without one), exams by generation, fewest shots."""
    metrics = table.groupby("benchmark")["metric"].unique()
    belle = list(metrics.get("belle", []))
    exam = sorted((m for m in metrics.get("exam", []) if m.startswith("generate/")), key=_shots)
    keep = {("belle", next((m for m in belle if m.startswith("judge:")), "rouge_l_chars")),
            ("exam", exam[0] if exam else None)}
    return table[[(b, m) in keep for b, m in zip(table["benchmark"], table["metric"])]].reset_index(drop=True)


VERDICTS = ("agrees, interval excludes 0", "same direction, not significant", "disagrees, interval excludes 0",
            "disagrees, not significant", "no difference, not significant", "no paper direction to compare")


def verdict(diff: float, low: float, high: float, paper_diff) -> str:
    """Does our difference point the paper's way, and does its interval exclude 0? (one of VERDICTS)"""
    if paper_diff is None or not math.isfinite(paper_diff) or paper_diff == 0:
        return VERDICTS[5]
    significant = low > 0 or high < 0
    if diff == 0 and not significant:
        return VERDICTS[4]
    if (diff > 0) == (paper_diff > 0):
        return VERDICTS[0] if significant else VERDICTS[1]
    return VERDICTS[2] if significant else VERDICTS[3]


def add_verdicts(table: pd.DataFrame, paper: dict) -> pd.DataFrame:
    """Rows of `table` that have a difference, with the paper's difference ({arm: {benchmark: diff}}) and verdict."""
    rows = table.dropna(subset=["diff"]).reset_index(drop=True)
    rows["paper_diff"] = [paper.get(a, {}).get(b, np.nan) for a, b in zip(rows["arm"], rows["benchmark"])]
    rows["verdict"] = [verdict(*v) for v in zip(rows["diff"], rows["diff_low"], rows["diff_high"], rows["paper_diff"])]
    return rows


def paper_view(arms, table: pd.DataFrame, *, key, columns: dict) -> dict:
    """{arm: {benchmark: the paper's number}} for arms naming a paper row ("paper": key column values joined by "/")."""
    keys = [key] if isinstance(key, str) else list(key)
    labelled = table.set_index(table[keys].astype(str).agg("/".join, axis=1))
    out = {}
    for arm in arms:
        label = arm.get("paper")
        if label and label not in labelled.index:
            raise ValueError(f"arm {arm['name']!r}: no paper row {label!r}; rows: {', '.join(labelled.index)}")
        if label:
            out[arm["name"]] = {bench: float(labelled.loc[label, col]) for bench, col in columns.items()}
    return out


def paper_contrast(values: dict, table: pd.DataFrame) -> dict:
    """The paper's difference for each compared pair of `table` (arm minus its `against` arm), from paper_view."""
    pairs = table.dropna(subset=["against"])[["arm", "against"]].drop_duplicates()
    return {a: {b: v - values[r][b] for b, v in values[a].items() if b in values[r]}
            for a, r in pairs.itertuples(index=False) if a in values and r in values}


_BENCHMARK_NAMES = {"belle": "Belle-eval", "exam": "MMCU-style exam"}


def _benchmark_name(benchmark: str) -> str:
    bench, _, group = benchmark.partition(":")  # group_rows' "belle:math" -> "Belle-eval math"
    return " ".join(x for x in (_BENCHMARK_NAMES.get(bench, bench), group) if x)


def _signed(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1f}"


def conclusion(verdicts: pd.DataFrame, base_models) -> str:
    """Markdown: one line per compared pair and benchmark with our difference, the paper's and the verdict."""
    lines = []
    tiny = sorted({str(m) for m in base_models if str(m).startswith("tiny:")})
    if tiny:
        lines.append(f"**A tiny random model cannot test this finding.** {', '.join(tiny)} were built from a config "
                     "with random weights; the verdicts below only show that the computation runs. Use a GPU "
                     "profile (colab-t4, a100) for an answer.\n")
    for r in verdicts.itertuples():
        lines.append(f"- {r.arm} vs {r.against}, {_benchmark_name(r.benchmark)} ({r.metric}): "
                     f"{_signed(r.diff)} points (95% CI {_signed(r.diff_low)} to {_signed(r.diff_high)}); "
                     f"paper {_signed(r.paper_diff)}: **{r.verdict}**")
    return "\n".join(lines)


def stage_bars(gains: pd.DataFrame) -> pd.DataFrame:
    """A gain_table as plotting rows: one per arm and stage (base, tuned) with mean and interval; the tuned row
    carries the gain and its interval as a note."""
    base = gains.assign(stage="base", mean=gains["base_mean"], ci_low=gains["base_ci_low"],
                        ci_high=gains["base_ci_high"], note="")
    note = [f"{_signed(d)}\n[{_signed(lo)}, {_signed(hi)}]"  # two short lines: fits above a narrow bar
            for d, lo, hi in zip(gains["diff"], gains["diff_low"], gains["diff_high"])]
    tuned = gains.assign(stage="tuned", note=note)
    cols = ["benchmark", "metric", "arm", "stage", "mean", "ci_low", "ci_high", "note"]
    return pd.concat([base[cols], tuned[cols]], ignore_index=True)


def beside_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Our rows (a comparison, gain or stage_bars table) for plot_tidy_panels beside the paper's: panel "ours ·
    <benchmark> · <metric>" (group_rows' "belle:math" on the belle panel) and, as the text above each bar, its
    difference to the compared arm (blank where none; stage_bars' own note where the table has no diff)."""
    panel = "ours · " + table["benchmark"].str.split(":").str[0] + " · " + table["metric"]
    note = table["diff"].map(lambda d: "" if pd.isna(d) else f"{d:+.1f}") if "diff" in table else table["note"]
    return table.assign(panel=panel, note=note)


def _triple(row, prefix: str = "") -> list[float]:
    return [float(getattr(row, f"{prefix}{k}")) for k in ("mean", "ci_low", "ci_high")]  # numpy -> JSON floats


def _stage(row) -> str | None:
    stage = getattr(row, "stage", None)
    return stage if isinstance(stage, str) else None  # gain tables have no stage (NaN once concatenated)


def loss_table(arms: pd.DataFrame) -> pd.DataFrame:
    """Per arm of run_arms' "arms": the first, last and lowest logged training loss and how many were logged."""
    rows = {r.arm: [loss for _, loss in r.loss_history] for r in arms.itertuples()}
    return pd.DataFrame({"first": [v[0] if v else np.nan for v in rows.values()],
                         "last": [v[-1] if v else np.nan for v in rows.values()],
                         "lowest": [min(v, default=np.nan) for v in rows.values()],
                         "logged": [len(v) for v in rows.values()]}, index=pd.Index(list(rows), name="arm"))


def results_summary(table: pd.DataFrame, verdicts: pd.DataFrame | None = None) -> dict:
    """For record_results: {arm: {"[stage/]benchmark/metric": {"mean": [m, low, high], "base": [...] (gain tables),
    "diff": [d, low, high], "against": arm, "verdict": text}}}."""
    said = {} if verdicts is None else {(r.arm, r.benchmark, r.metric, _stage(r)): r.verdict
                                        for r in verdicts.itertuples()}
    out: dict = {}
    for r in table.itertuples():
        entry = {"mean": _triple(r), "against": r.against if isinstance(r.against, str) else None, "n": int(r.n)}
        if hasattr(r, "base_mean"):
            entry["base"] = _triple(r, "base_")
        if pd.notna(r.diff):
            entry["diff"] = [float(r.diff), float(r.diff_low), float(r.diff_high)]
        if (r.arm, r.benchmark, r.metric, _stage(r)) in said:
            entry["verdict"] = said[(r.arm, r.benchmark, r.metric, _stage(r))]
        out.setdefault(r.arm, {})["/".join(x for x in (_stage(r), r.benchmark, r.metric) if x)] = entry
    return out


def verdict_summary(verdicts: pd.DataFrame, *, with_metric: bool = False) -> dict:
    """For record_results: {"verdicts": {"<arm> vs <against> / <benchmark>[ / <metric>]": verdict},
    "verdicts_agreeing": how many agree with the paper, interval excluding 0, "n_verdicts": how many pairs}."""
    keys = [f"{r.arm} vs {r.against} / {r.benchmark}" + (f" / {r.metric}" if with_metric else "")
            for r in verdicts.itertuples()]
    return {"verdicts": dict(zip(keys, verdicts["verdict"])),
            "verdicts_agreeing": int((verdicts["verdict"] == VERDICTS[0]).sum()), "n_verdicts": len(verdicts)}


def tokenizer_table(profile, arms, texts) -> pd.DataFrame:
    """tokenizer_efficiency of each arm's base tokenizer on `texts`, one row per arm."""
    from .models import load_tokenizer
    from .vocab import tokenizer_efficiency

    rows = []
    for arm in arms:
        p = resolve_arm(profile, arm)
        tok = load_tokenizer(resolve_model_source(p.base_model), trust_remote_code=p.trust_remote_code)
        rows.append({"arm": arm["name"], "base_model": p.base_model, "vocab_size": len(tok),
                     **tokenizer_efficiency(tok, texts)})
    return pd.DataFrame(rows)


# -------------------------------------------------------------------------------------------- display


def plan_view(plan: pd.DataFrame) -> pd.DataFrame:
    """plan_arms' table for display: sizes, minutes and memory with their units."""
    from .plots import with_units

    units = {"params_m": "{:.1f} M", "est_minutes": "{:.1f} min", "est_memory_gib": "{:.2f} GiB"}
    return with_units(plan, units).set_index("arm")


def arms_view(info: pd.DataFrame) -> pd.DataFrame:
    """run_arms' per-arm info for display: what ran, how long, peak memory, trainable parameters."""
    from .plots import with_units

    units = {"seconds": "{:.0f} s", "train_s": "{:.0f} s", "peak_memory_mb": "{:,.0f} MB", "trainable_params": "{:,}"}
    return with_units(info.drop(columns=["loss_history", "folder", "key"], errors="ignore"), units).set_index("arm")


def table_view(table: pd.DataFrame, index=("benchmark", "metric", "arm"), *, precision: int = 1) -> pd.DataFrame:
    """A comparison or gain table for display: each mean and difference as `value [low, high]`."""
    from .plots import interval_columns

    keep = [*index, *(c for c in ("n", "n_unscored", "against") if c in table)]
    shown = interval_columns(table, keep=keep, precision=precision)
    if "against" in shown:
        shown["against"] = shown["against"].fillna("")  # not compared: blank, not "nan"
    return shown.set_index(list(index))

