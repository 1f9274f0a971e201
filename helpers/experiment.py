"""The steps every finding notebook repeats: load a base, tune it on a data spec, evaluate on both benchmarks."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .eval_sets import load_belle_eval, load_exam
from .data import load_training_data
from .evaluate import (answer_instructions, category_table, mc_accuracy_table, score_mc_generate, score_mc_loglik,
                       score_offline, score_with_judge)
from .models import load_model, load_tokenizer, resolve_model_source
from .prompts import build_sft_dataset, resolve_template
from .train import train_model
from .vocab import apply_vocab_expansion

__all__ = ["load_base", "load_benchmarks", "tune", "answer_prompt_sets", "attach_adapter", "evaluate_model",
           "score_tables"]


def load_base(profile):
    """(model, tokenizer) for the profile's base, 4-bit unless the profile says otherwise."""
    if profile.torch_threads:  # also set by check_environment; here too for scripts and tests that skip that cell
        import torch

        torch.set_num_threads(profile.torch_threads)  # process-wide: every later forward pass uses it
    source = resolve_model_source(profile.base_model)
    tokenizer = load_tokenizer(source, trust_remote_code=profile.trust_remote_code)
    model = load_model(source, quantization=profile.quantization, compute_dtype=profile.compute_dtype,
                       trust_remote_code=profile.trust_remote_code)
    # Finding 05: a merged Chinese vocabulary (+ continued pre-training), cached; a no-op unless vocab_expansion.
    model, tokenizer, _ = apply_vocab_expansion(model, tokenizer, profile)
    return model, tokenizer


def load_benchmarks(profile) -> dict[str, pd.DataFrame]:
    """The profile's instruction set (Belle-eval style), exam questions and k-shot exemplars."""
    return {
        "belle": load_belle_eval(profile.eval_data, limit=profile.eval_limit or None),
        "exam": load_exam(profile.exam_data, limit=profile.exam_limit or None),
        "exam_dev": load_exam(profile.exam_dev_data, split="dev"),
    }


def tune(model, tokenizer, profile, output_dir: str | Path, *, train_data: str | None = None):
    """Validate the profile's (or the given) training data, then QLoRA-tune; returns (TrainResult, DataReport)."""
    examples, report = load_training_data(train_data or profile.train_data, limit=profile.train_limit or None,
                                          seed=profile.seed)
    dataset = build_sft_dataset(examples, tokenizer, template=profile.prompt_template,
                                max_length=profile.max_length, overlong=profile.overlong, report=report)
    return train_model(model, tokenizer, dataset, profile, output_dir), report


def evaluate_model(model, tokenizer, profile, benchmarks: dict, *, label: str, shots=(0,), judge=None,
                   progress: bool = True) -> dict[str, pd.DataFrame]:
    """Belle-style answers + scores (offline, and judged when `judge` is set) and exam results in both modes."""
    template = resolve_template(tokenizer, profile.prompt_template)
    suffix = profile.eval_suffix  # CoT* (finding 04): "" adds nothing
    answers = answer_instructions(model, tokenizer, benchmarks["belle"], template=template, progress=progress,
                                  max_new_tokens=profile.max_new_tokens, batch_size=profile.eval_batch_size,
                                  eval_suffix=suffix)
    scores = [score_offline(answers)] + ([score_with_judge(answers, judge, progress=progress)] if judge else [])
    # The cue goes to generate mode only: loglik scores the letter right after "答案：", with no room to think.
    generate = {"template": template, "eval_suffix": suffix, "max_new_tokens": profile.exam_max_new_tokens}
    exam = [fn(model, tokenizer, benchmarks["exam"], shots=k, dev_df=benchmarks["exam_dev"],
               batch_size=profile.eval_batch_size, progress=progress, **kw)
            for k in shots
            for fn, kw in ((score_mc_generate, generate), (score_mc_loglik, {}))]
    return {"answers": answers.assign(model=label), "belle": pd.concat(scores).assign(model=label),
            "exam": pd.concat(exam).assign(model=label)}


def answer_prompt_sets(model, tokenizer, profile, prompts: dict, *, progress: bool = True) -> pd.DataFrame:
    """Greedy replies to extra prompt sets ({name: DataFrame with item_id, category, question}), in the profile's
    template and with its eval_suffix, as rows {item_id, category, question, response, set=name}."""
    template = resolve_template(tokenizer, profile.prompt_template)
    return pd.concat([answer_instructions(model, tokenizer, df[["item_id", "category", "question"]], template=template,
                                          max_new_tokens=profile.max_new_tokens, batch_size=profile.eval_batch_size,
                                          eval_suffix=profile.eval_suffix, progress=progress).assign(set=name)
                      for name, df in prompts.items()], ignore_index=True)


def attach_adapter(model, adapter_dir: str | Path):
    """A tuned model: the base plus a saved adapter, or None when there is none trained on this very base.
    `model` itself stays the base (adapters.with_adapter shares its weights without changing it)."""
    from .adapters import with_adapter
    from .peft_methods import saved_adapter_config

    config = saved_adapter_config(adapter_dir)  # peft's adapter_config.json or a bottleneck adapter's config
    if config is None:
        return None
    trained_on = config.get("base_model_name_or_path")
    if trained_on != model.name_or_path:
        print(f"{adapter_dir} was trained on {trained_on}, not {model.name_or_path}: not using it")
        return None
    return with_adapter(model, adapter_dir)


def score_tables(*evaluations: dict) -> dict[str, pd.DataFrame]:
    """Per-category and per-subject tables (mean with bootstrap CI) for each evaluated model, stacked."""
    belle = [category_table(e["belle"]).assign(model=e["belle"]["model"].iat[0]) for e in evaluations]
    exam = [mc_accuracy_table(e["exam"]).assign(model=e["exam"]["model"].iat[0]) for e in evaluations]
    return {"belle": pd.concat(belle, ignore_index=True), "exam": pd.concat(exam, ignore_index=True)}
