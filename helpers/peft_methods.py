"""Every parameter-efficient method of the paper's Table 4 (plus DoRA and IA3), built from a profile.

`build_peft_config(profile)` looks the profile's `peft_method` up in PEFT_METHODS (a table of builders) and returns
a peft config, or a BottleneckConfig for the bottleneck adapters peft lacks; `prepare_for_training` attaches either.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
from peft import (AdaLoraConfig, IA3Config, LoraConfig, PeftConfig, PeftModel, PrefixTuningConfig,
                  PromptEncoderConfig, PromptTuningConfig, get_peft_model, prepare_model_for_kbit_training)
from transformers import TrainerCallback
from transformers.loss.loss_utils import ForCausalLMLoss

from .bottleneck import CONFIG_NAME, BottleneckConfig, attach_bottleneck, is_bottleneck_model, load_bottleneck
from .models import count_parameters, target_layer_names

__all__ = [
    "PEFT_METHODS",
    "TABLE4_SETTINGS",
    "EXTRA_SETTINGS",
    "METHOD_SETTINGS",
    "BLOOM_7B1",
    "build_peft_config",
    "build_lora_config",
    "prepare_for_training",
    "saved_adapter_config",
    "load_adapter",
    "optimizer_steps",
    "AdaLoraAllocator",
    "training_callbacks",
    "training_loss",
    "orthogonality_penalty",
    "is_adapted",
    "trainable_sites",
    "method_table",
    "method_arms",
    "adalora_ranks",
    "FIGURE2_CLAIMS",
    "figure2_checks",
]


def build_lora_config(profile, **extra) -> LoraConfig:
    """LoRA of rank lora_r on the profile's target_modules ("all-linear" is the QLoRA recipe)."""
    return LoraConfig(r=profile.lora_r, lora_alpha=profile.lora_alpha, lora_dropout=profile.lora_dropout,
                      target_modules=target_layer_names(profile.target_modules), bias="none", task_type="CAUSAL_LM",
                      **extra)


def _lora(profile, total_steps):
    return build_lora_config(profile)


def _dora(profile, total_steps):
    return build_lora_config(profile, use_dora=True)  # LoRA plus a trainable magnitude per output row


# AdaLoRA's schedule as shares of the run: Alpaca-CoT fixed it at 200 / 1000 / 10 steps, which peft now rejects
# for runs shorter than 1,200 steps. Warm up 10% at full rank, prune until the last 20%, reallocate every 1%.
_ADALORA_SCHEDULE = {"tinit": 0.1, "tfinal": 0.2, "deltaT": 0.01}


def _adalora(profile, total_steps):
    if not total_steps:
        raise ValueError("AdaLoRA needs the run's total optimizer steps (peft's total_step): pass total_steps, "
                         "or set max_steps in the profile")
    tinit, tfinal, delta = (int(share * total_steps) for share in _ADALORA_SCHEDULE.values())
    return AdaLoraConfig(init_r=profile.adalora_init_r, target_r=profile.adalora_target_r,
                         lora_alpha=profile.lora_alpha, lora_dropout=profile.lora_dropout,
                         target_modules=target_layer_names(profile.target_modules), total_step=total_steps,
                         tinit=tinit, tfinal=tfinal, deltaT=max(1, delta), beta1=0.85, beta2=0.85,
                         task_type="CAUSAL_LM")


def _ia3(profile, total_steps):
    return IA3Config(task_type="CAUSAL_LM")  # peft's per-family defaults: scales on k, v and the MLP output


def _prompt(profile, total_steps):
    return PromptTuningConfig(num_virtual_tokens=profile.num_virtual_tokens, task_type="CAUSAL_LM")


def _p_tuning(profile, total_steps):
    return PromptEncoderConfig(num_virtual_tokens=profile.num_virtual_tokens,
                               encoder_hidden_size=profile.encoder_hidden_size, task_type="CAUSAL_LM")


def _prefix(profile, total_steps):
    return PrefixTuningConfig(num_virtual_tokens=profile.num_virtual_tokens, prefix_projection=True,
                              encoder_hidden_size=profile.encoder_hidden_size, task_type="CAUSAL_LM")


def _bottleneck(placement):
    def build(profile, total_steps):
        return BottleneckConfig(placement=placement, bottleneck_size=profile.adapter_size)

    return build


# name -> (builder(profile, total_steps), what it trains and where). The names are profiles' peft_method choices.
PEFT_METHODS: dict[str, tuple[Callable, str]] = {
    "lora": (_lora, "low-rank update B·A (rank lora_r) beside each target_modules layer of every block"),
    "dora": (_dora, "LoRA plus a learned magnitude per output row of each target layer"),
    "adalora": (_adalora, "SVD-form low-rank update (rank adalora_init_r, pruned towards adalora_target_r)"),
    "ia3": (_ia3, "learned scales on attention and MLP activations of every block (peft's layers per family)"),
    "prompt": (_prompt, "num_virtual_tokens trainable input embeddings before the prompt"),
    "p-tuning": (_p_tuning, "virtual-token embeddings produced by an MLP prompt encoder (encoder_hidden_size)"),
    "prefix": (_prefix, "trainable keys and values prepended in every layer, via an MLP (encoder_hidden_size)"),
    "SadapterP": (_bottleneck("pfeiffer"), "bottleneck adapter (adapter_size) after the MLP output projection"),
    "SadapterH": (_bottleneck("houlsby"), "bottleneck adapters before the MLP input and after the MLP output"),
    "P-adapter": (_bottleneck("parallel"), "bottleneck adapter parallel to the attention input projection"),
}

# Profile overrides that reproduce every row of the paper's Table 4 on bloom-7b1 (counts checked in the tests).
_ATTENTION = {"target_modules": "attention-input"}
TABLE4_SETTINGS: dict[str, dict] = {
    # as the paper ran it: its Trainer never called update_and_allocate, so the ranks never moved
    "AdaLoRA": {"peft_method": "adalora", "adalora_init_r": 12, "adalora_update": "none", **_ATTENTION},
    "LoRA": {"peft_method": "lora", "lora_r": 32, **_ATTENTION},
    "prompt": {"peft_method": "prompt", "num_virtual_tokens": 20},
    "p-tuning": {"peft_method": "p-tuning", "num_virtual_tokens": 20, "encoder_hidden_size": 128},
    "prefix": {"peft_method": "prefix", "num_virtual_tokens": 20, "encoder_hidden_size": 128},
    "SadapterP": {"peft_method": "SadapterP", "adapter_size": 32},
    "SadapterH": {"peft_method": "SadapterH", "adapter_size": 32},
    "P-adapter": {"peft_method": "P-adapter", "adapter_size": 32},
    "SadapterP-l": {"peft_method": "SadapterP", "adapter_size": 256},
    "SadapterH-l": {"peft_method": "SadapterH", "adapter_size": 256},
    "P-adapter-l": {"peft_method": "P-adapter", "adapter_size": 256},
}
# What the paper lacked: AdaLoRA as it should run (ranks reallocated), DoRA and IA3 beside its LoRA, and the same
# LoRA on a 16-bit base (on the profiles' default nf4 base the Table 4 LoRA row is QLoRA).
EXTRA_SETTINGS: dict[str, dict] = {
    "AdaLoRA reallocating": {**TABLE4_SETTINGS["AdaLoRA"], "adalora_update": "callback"},
    "DoRA": {"peft_method": "dora", "lora_r": 32, **_ATTENTION},
    "IA3": {"peft_method": "ia3"},
    "LoRA 16-bit": {**TABLE4_SETTINGS["LoRA"], "quantization": "none"},
}


METHOD_SETTINGS: dict[str, dict] = {**TABLE4_SETTINGS, **EXTRA_SETTINGS}  # every named row, for method_table/arms
# bigscience/bloom-7b1's config.json (checked against the published file): the base of the paper's Table 4, for
# method_table(..., config=BloomConfig(**BLOOM_7B1)) on the meta device (shapes only, no download).
BLOOM_7B1 = dict(hidden_size=4096, n_layer=30, n_head=32, vocab_size=250880)


def build_peft_config(profile, *, total_steps: int | None = None) -> PeftConfig | BottleneckConfig:
    """The adapter config of profile.peft_method; AdaLoRA also needs the run's optimizer steps (total_steps)."""
    if profile.peft_method not in PEFT_METHODS:
        raise ValueError(f"unknown peft_method {profile.peft_method!r}; valid: {', '.join(PEFT_METHODS)}")
    build, _ = PEFT_METHODS[profile.peft_method]
    return build(profile, total_steps or (profile.max_steps if profile.max_steps > 0 else None))


def optimizer_steps(profile, n_examples: int) -> int:
    """How many optimizer steps the Trainer will take on n_examples (max_steps, else the epochs)."""
    if profile.max_steps > 0:
        return profile.max_steps
    per_epoch = max(math.ceil(math.ceil(n_examples / profile.batch_size) / profile.grad_accum), 1)
    return math.ceil(profile.epochs * per_epoch)


def is_adapted(model) -> bool:
    """True when `model` already carries an adapter (peft's or bottleneck adapters)."""
    return hasattr(model, "peft_config") or is_bottleneck_model(model)


def prepare_for_training(model, peft_config, *, gradient_checkpointing: bool = False):
    """Ready a base for k-bit training (fp32 norms, input grads) and attach the adapter of any method."""
    if isinstance(peft_config, PrefixTuningConfig) and gradient_checkpointing:
        print("Prefix tuning cannot run with gradient checkpointing (peft refuses it): turned off for this run, "
              "so every layer's activations stay in memory (more memory than the other methods at equal batch).")
        gradient_checkpointing = False
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        # transformers 5's own call (peft's goes through the deprecated alias and leaves use_reentrant unset, which
        # torch warns about): non-reentrant recomputation, with input grads on for the frozen embeddings.
        model.activation_checkpointing_enable()
    if isinstance(peft_config, BottleneckConfig):
        return attach_bottleneck(model, peft_config)
    return get_peft_model(model, peft_config)


def saved_adapter_config(directory) -> dict | None:
    """The config saved beside an adapter of any method (a bottleneck adapter's or peft's), or None if there is none."""
    path = Path(directory)
    found = next((path / name for name in (CONFIG_NAME, "adapter_config.json") if (path / name).exists()), None)
    return json.loads(found.read_text()) if found else None


def load_adapter(model, directory, *, trainable: bool = False):
    """A saved adapter of any method on a fresh base: bottleneck adapters attach in place (load_bottleneck), peft's
    come back as a PeftModel (which also injects its layers into the base)."""
    path = Path(directory)
    if (path / CONFIG_NAME).exists():
        return load_bottleneck(model, path, trainable=trainable)
    if (path / "adapter_config.json").exists():
        return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    raise FileNotFoundError(f"{path} holds no adapter: no {CONFIG_NAME} (bottleneck) nor adapter_config.json (peft)")


class AdaLoraAllocator(TrainerCallback):
    """Calls AdaLoRA's update_and_allocate after each optimizer step, while the gradients it scores are present."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model.base_model.update_and_allocate(state.global_step)  # global_step counts steps before this one


def _adalora_config(model) -> AdaLoraConfig | None:
    config = model.peft_config.get("default") if isinstance(model, PeftModel) else None
    return config if isinstance(config, AdaLoraConfig) else None


def training_callbacks(model, profile) -> list[TrainerCallback]:
    """Callbacks the method needs: AdaLoRA's rank allocation unless adalora_update='none' (the paper's run)."""
    return [AdaLoraAllocator()] if _adalora_config(model) and profile.adalora_update == "callback" else []


def orthogonality_penalty(model) -> torch.Tensor:
    """AdaLoRA's regulariser as peft adds it to the model's loss: the mean over its P (lora_A) and Q (lora_B)
    matrices of ||P P^T - I||_F, pushing them towards orthogonal singular vectors."""
    terms = []
    for name, p in model.named_parameters():
        if p.requires_grad and ("lora_A" in name or "lora_B" in name):
            cov = p @ p.T if "lora_A" in name else p.T @ p
            terms.append(torch.linalg.matrix_norm(cov - torch.eye(len(cov), dtype=cov.dtype, device=cov.device)))
    return torch.stack(terms).mean()


def training_loss(model, grad_accum: int):
    """The Trainer's compute_loss_func for methods whose loss is more than cross-entropy (AdaLoRA), else None.

    TRL 1.16 computes the loss from the logits itself, dropping what peft's AdaLoRA adds to the model's loss (its
    orthogonality penalty). The paper's Trainer kept it, and it is most of AdaLoRA's high starting loss in figure 2.
    The price: TRL then runs a second, gradient-free forward pass for its token metrics.
    """
    config = _adalora_config(model)
    if config is None:
        return None

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits
        ce = ForCausalLMLoss(logits, labels, vocab_size=logits.shape[-1], num_items_in_batch=num_items_in_batch)
        ce = ce if num_items_in_batch is not None else ce / grad_accum  # a sum over the accumulated batch either way
        return ce + config.orth_reg_weight * orthogonality_penalty(model) / grad_accum

    return loss


def trainable_sites(model) -> tuple[str, int]:
    """Where the trainable parameters sit: (the layer names they attach to, how many blocks hold them)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sites, blocks = set(), set()
    for name in names:
        parts = name.split(".")
        if parts[0] == "prompt_encoder":
            sites.add("prompt encoder")
            continue
        # the base layer is the part before the adapter's own names (lora_A, lora_magnitude_vector, ia3_l, adapter)
        cut = next(i for i, part in enumerate(parts) if re.match(r"lora_|ia3_|adapter$", part) or i == len(parts) - 1)
        sites.add(parts[cut - 1])
        blocks.update(part for part in parts if part.isdigit())
    return ", ".join(sorted(sites)), len(blocks)


def _meta_base(config, trust_remote_code: bool):
    """The architecture of `config` on the meta device: shapes without weights, memory or download."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _where(sites: str, blocks: int, prefix: bool) -> str:
    if prefix:
        return "keys and values of every layer (from a prompt encoder)"
    return f"{sites} of each of {blocks} blocks" if blocks else "the input embeddings (a prompt encoder)"


def method_table(profile, rows: dict[str, dict] | None = None, *, config=None):
    """Table 4 for the profile's base: each method's trainable parameters and where they sit, counted on the
    meta device (M = parameters / 2^20, the paper's unit). `config` defaults to the base's own config."""
    import dataclasses

    import pandas as pd

    from .models import load_config

    if config is None:
        config = load_config(profile.base_model, trust_remote_code=profile.trust_remote_code)
    table = []
    for name, overrides in (rows or METHOD_SETTINGS).items():
        settings = dataclasses.replace(profile, **overrides)
        base = _meta_base(config, profile.trust_remote_code)
        _, base_params = count_parameters(base)
        with torch.device("meta"):  # adapters are created on the meta device too: no memory even for 120M
            peft_config = build_peft_config(settings, total_steps=100)  # any step count: sizes do not depend on it
            model = prepare_for_training(base, peft_config)
        trainable, _ = count_parameters(model)
        sites, blocks = trainable_sites(model)
        prefix = isinstance(peft_config, PrefixTuningConfig)  # a prefix enters every layer via its encoder
        table.append({"method": name, "peft_method": settings.peft_method, "trainable_params": trainable,
                      "trainable_M": trainable / 2**20, "share_of_base_pct": 100 * trainable / base_params,
                      "layers": "each" if blocks > 0 or prefix else "embed", "sites": sites, "blocks": blocks,
                      "where": _where(sites, blocks, prefix), "what": PEFT_METHODS[settings.peft_method][1]})
    return pd.DataFrame(table)


def method_arms(names, *, reference: str = "LoRA", compare_to: dict | None = None) -> list[dict]:
    """Arms for helpers.arms.run_arms from TABLE4_SETTINGS / EXTRA_SETTINGS names: a Table 4 row names its paper
    row; each arm is compared with compare_to[name] when that arm runs too, else with `reference`."""
    unknown = [n for n in names if n not in METHOD_SETTINGS]
    if unknown:
        raise ValueError(f"unknown method rows {unknown}; valid: {', '.join(METHOD_SETTINGS)}")
    arms = []
    for name in names:
        against = next((a for a in ((compare_to or {}).get(name), reference) if a in names and a != name), None)
        arms.append({"name": name, **({"paper": name} if name in TABLE4_SETTINGS else {}),
                     **({"compare_to": against} if against else {}), **METHOD_SETTINGS[name]})
    return arms


def adalora_ranks(adapter_dir) -> pd.Series:
    """The rank each AdaLoRA matrix ended with (its non-zero singular values), by layer, from a saved adapter."""
    import pandas as pd
    from safetensors.torch import load_file

    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    ranks = {k.removeprefix("base_model.model.").removesuffix(".lora_E"): int((v != 0).sum())
             for k, v in weights.items() if k.endswith("lora_E")}
    if not ranks:
        raise ValueError(f"{adapter_dir} holds no AdaLoRA adapter (no lora_E tensors)")
    return pd.Series(ranks, name="rank")


# Figure 2's claims (the paper printed curves only): which arms' first or last logged loss sits at the top or
# below another's. (claim, "first"/"last", arms, test: "top" = they hold the highest places, "below" = under arm)
FIGURE2_CLAIMS = (
    ("AdaLoRA starts with the highest loss", "first", ("AdaLoRA",), ("top", None)),
    ("prompt and P-tuning end with the highest losses", "last", ("prompt", "p-tuning"), ("top", None)),
    ("LoRA and SadapterH end below prefix tuning", "last", ("LoRA", "SadapterH"), ("below", "prefix")),
)


def _claim_holds(values: pd.Series, arms, test) -> bool:
    kind, other = test
    if kind == "top":
        return set(values.nlargest(len(arms)).index) == set(arms)
    return bool((values[list(arms)] < values[other]).all())


def figure2_checks(losses: pd.DataFrame) -> pd.DataFrame:
    """Each FIGURE2_CLAIMS claim tested on a loss table (index arm; columns first, last): our values and whether it
    holds among the Table 4 arms present; a claim whose arms did not run is left out."""
    import pandas as pd

    table4 = losses[losses.index.isin(TABLE4_SETTINGS)]
    rows = []
    for claim, which, arms, test in FIGURE2_CLAIMS:
        needed = [*arms, *([test[1]] if test[1] else [])]
        if set(needed) <= set(table4.index):
            ours = ", ".join(f"{a} {table4.loc[a, which]:.2f}" for a in needed)
            rows.append({"claim": claim, "loss": which, "ours": ours, "arms": len(table4),
                         "holds": _claim_holds(table4[which], arms, test)})
    return pd.DataFrame(rows, columns=["claim", "loss", "ours", "arms", "holds"])
