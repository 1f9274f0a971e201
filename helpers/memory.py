"""Memory planner: predict peak GPU memory of a fine-tuning run from the model config alone, before loading anything.

The estimate adds what a run keeps on the GPU (weights, adapters, their gradients and optimizer states), what one
step saves for the backward pass (activations, with or without checkpointing or offloading), the largest
short-lived buffers, the CUDA context and allocator slack. The per-token activation terms were read off
autograd's saved tensors (see `saved_activation_bytes`) and checked against measured peaks on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GPUS", "ModelShape", "MemoryPlan", "model_shape", "estimate_memory", "plan_memory", "plan_for_profile",
           "choose_activation_memory", "saved_activation_bytes"]

GiB = 2**30
# Memory torch reports for common cards (GiB); the verdict compares against these.
GPUS = {"T4": 14.7, "L4": 22.0, "A10G": 22.0, "V100": 15.8, "RTX 4090": 23.6, "A100-40GB": 39.4,
        "A100-80GB": 79.1, "H100": 79.1, "H200": 139.8}
CUDA_CONTEXT_GIB = 0.67  # CUDA context + libraries outside torch's allocator (measured: H100, torch 2.11, CUDA 13)
ALLOCATOR_SLACK = 0.05  # torch's caching allocator reserved 2-10% more than its live tensors at the peak (H100)
_NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit values + 8-bit absmax per 64 + fp32 per 256 blocks (double quant)
_OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_torch_fused": 8, "adamw_8bit": 2, "paged_adamw_8bit": 2,
                    "paged_adamw_32bit": 8, "adafactor": 0.1, "sgd": 0}  # state bytes per trainable parameter
_HEAD_TOKEN_TILE, _HEAD_VOCAB_TILE = 4096, 32768  # TRL's fused log-prob tiles
_INPUT_GROUP = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "gate_proj": "mlp_in",
                "up_proj": "mlp_in"}  # linear layers that read the same tensor


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that memory depends on."""

    family: str  # "gated" (Llama, Qwen2, Mistral: SwiGLU MLP, SDPA) or "bloom" (GeLU MLP, ALiBi eager attention)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one decoder layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        if self.family == "bloom":
            return {"query_key_value": (h, 3 * h), "dense": (h, h), "dense_h_to_4h": (h, i), "dense_4h_to_h": (i, h)}
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
                "up_proj": (h, i), "down_proj": (i, h)}

    def n_params(self) -> int:
        """Parameters of the full model (embeddings once if tied)."""
        per_layer = sum(a * b for a, b in self.linear_shapes().values()) + 4 * self.hidden
        return self.layers * per_layer + self.vocab * self.hidden * (1 if self.tied else 2)


@dataclass
class MemoryPlan:
    """A predicted peak: components in GiB, the total, and the verdict for a card."""

    breakdown: dict[str, float]
    total_gib: float
    gpu: str
    capacity_gib: float
    verdict: str
    settings: dict = field(default_factory=dict)
    host_gib: float = 0.0  # CPU RAM for offloaded activations

    @property
    def fits(self) -> bool:
        """Whether the run fits the card."""
        return self.total_gib <= self.capacity_gib

    def table(self) -> str:
        """The breakdown as aligned text lines."""
        width = max(map(len, self.breakdown))
        lines = [f"  {k:{width}s} {v:7.2f} GiB" for k, v in self.breakdown.items()]
        return "\n".join(lines + [f"  {'total':{width}s} {self.total_gib:7.2f} GiB", self.verdict])


def model_shape(model) -> ModelShape:
    """The memory-relevant sizes of a config (object, local dir, hub id or "tiny:<arch>")."""
    from .models import load_config

    c = load_config(model) if isinstance(model, str) else model
    c = c.get_text_config() if hasattr(c, "get_text_config") else c
    if c.model_type == "bloom":
        h, heads = c.hidden_size, c.n_head
        return ModelShape("bloom", h, 4 * h, c.n_layer, heads, heads, h // heads, c.vocab_size, True, True)
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    return ModelShape("gated", c.hidden_size, c.intermediate_size, c.num_hidden_layers, heads,
                      getattr(c, "num_key_value_heads", None) or heads, head_dim, c.vocab_size,
                      bool(getattr(c, "tie_word_embeddings", False)), c.model_type in ("qwen2", "qwen2_moe"))


def _targets(shape: ModelShape, target_modules) -> dict[str, tuple[int, int]]:
    """The adapted linear layers: target_modules as a profile writes it (models.target_layer_names) or a list."""
    from .models import target_layer_names

    linears = shape.linear_shapes()
    names = target_layer_names(target_modules) if isinstance(target_modules, str) else target_modules
    if names in ("all-linear", None):
        return linears
    return {k: v for k, v in linears.items() if k in names}


def _layer_activation_bytes(shape: ModelShape, targets: dict, seq: int, act: int, resid: int, mask: int,
                            lora_r: int, dropout: bool) -> float:
    """Bytes one decoder layer saves for backward, per token. `act`: compute dtype bytes; `resid`: dtype bytes
    of the residual stream (fp32 when the embeddings were upcast for k-bit training); `mask`: dropout mask bytes."""
    h, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    # Each adapted layer keeps its input for the adapter's gradient: under autocast a half copy per layer; in
    # fp32 (no autocast) layers fed the same tensor (q/k/v, gate/up) share one.
    inputs = {_INPUT_GROUP.get(name, name): i for name, (i, _) in targets.items()} if act == 4 else None
    lora_in = sum(inputs.values()) if inputs else sum(i for i, _ in targets.values())
    if shape.family == "bloom":  # GeLU input, eager attention: fp32 softmax (+ its half copy), S per token
        mlp, attn = shape.intermediate * resid, 3 * h * act + shape.heads * seq * (4 + (act if act < 4 else 0))
    else:  # SwiGLU: gate, SiLU(gate) and up outputs; SDPA keeps q, k, v, output and a log-sum-exp
        mlp, attn = 3 * shape.intermediate * resid, (2 * q + 2 * kv) * act + 4 * shape.heads
    lora = lora_in * act + len(targets) * lora_r * act + (lora_in * mask if dropout else 0)
    return mlp + attn + 2 * h * resid + 8 + lora


def _head_bytes(shape: ModelShape, tokens: int, act: int, resid: int, fused: bool) -> tuple[float, float]:
    """(saved, short-lived) bytes of the output layer and loss."""
    if fused:  # TRL: hidden states kept, logits computed in tiles (and again in backward)
        tile = min(tokens, _HEAD_TOKEN_TILE) * min(shape.vocab, _HEAD_VOCAB_TILE) * act
        return tokens * shape.hidden * resid, tile + tokens * shape.hidden * 4
    logits = tokens * shape.vocab  # fp32 log-softmax kept; under autocast also a half copy of the fp32 head weight
    return logits * 4 + (shape.vocab * shape.hidden * act if act < 4 else 0), logits * (act + 4)


def estimate_memory(model, *, method: str = "qlora", seq_len: int = 512, batch_size: int = 4,
                    gradient_checkpointing: bool = False, activation_offloading: bool = False,
                    optimizer: str = "paged_adamw_8bit", compute_dtype: str = "float16", lora_r: int = 16,
                    target_modules="all-linear", lora_dropout: float = 0.05, fused_loss: bool = True,
                    trainable_params: int | None = None) -> dict[str, float]:
    """Predicted peak GPU memory of one training step, by component, in GiB.

    method: "qlora" (nf4 base; peft upcasts embeddings, head and norms to fp32), "lora" (16-bit base) or "full".
    trainable_params: the adapter's size when it is not LoRA (prefix, bottleneck...); LoRA's is computed.
    fused_loss: TRL's tiled log-probabilities (our path) instead of full logits (a plain Trainer).
    """
    s = model if isinstance(model, ModelShape) else model_shape(model)
    act = 4 if compute_dtype == "float32" else 2
    tokens, linear = seq_len * batch_size, s.layers * sum(a * b for a, b in s.linear_shapes().values())
    other = s.n_params() - linear
    targets = _targets(s, target_modules) if method != "full" else s.linear_shapes()
    lora_params = s.layers * sum(lora_r * (i + o) for i, o in targets.values())
    trainable = s.n_params() if method == "full" else (trainable_params or lora_params)
    if method == "qlora":
        weights, resid = linear * _NF4_BYTES + other * 4, 4
    elif method == "lora":
        weights, resid = (linear + other) * act, act
    else:
        weights, resid = (linear + other) * 4, 4  # fp32 master weights under autocast
    per_layer = _layer_activation_bytes(s, targets, seq_len, act, resid, 1 if act == 2 else 4,
                                        lora_r if method != "full" else 0, lora_dropout > 0)
    if gradient_checkpointing:  # each layer keeps its input; one layer is recomputed at a time in backward
        saved = s.layers * s.hidden * resid * tokens + per_layer * tokens
    elif activation_offloading:  # TRL keeps a few tensors in flight and the rest in CPU RAM
        saved = 2 * per_layer * tokens
    else:
        saved = s.layers * per_layer * tokens
    head_saved, head_peak = _head_bytes(s, tokens, act, resid, fused_loss)
    dequant = max(a * b for a, b in s.linear_shapes().values()) * act
    parts = {
        "weights": weights,
        "trainable weights (fp32)": trainable * 4 if method != "full" else 0,
        "gradients (fp32)": trainable * 4,
        f"optimizer states ({optimizer})": trainable * _OPTIMIZER_BYTES.get(optimizer, 8),
        "activations saved for backward": saved,
        "output layer and loss": head_saved + head_peak,
        # a 4-bit weight unpacked for a matmul; without checkpointing also half a layer of gradients in flight
        "short-lived buffers": dequant + (0 if gradient_checkpointing else per_layer * tokens * 0.5),
    }
    parts = {k: v / GiB for k, v in parts.items()}
    live = sum(parts.values())
    parts["allocator slack"] = live * ALLOCATOR_SLACK
    parts["CUDA context"] = CUDA_CONTEXT_GIB
    return parts


def _host_gib(model, **settings) -> float:
    on = estimate_memory(model, **(settings | {"activation_offloading": False, "gradient_checkpointing": False}))
    return on["activations saved for backward"]


def _verdict(total: float, gpu: str, capacity: float, fix: str | None) -> str:
    if total <= capacity:
        return f"fits a {gpu} ({capacity:.1f} GiB) with {capacity - total:.1f} GiB to spare"
    need = f"needs {total:.1f} GiB, a {gpu} has {capacity:.1f} GiB"
    return f"does not fit: {need}; " + (fix or "use a smaller base model or a larger GPU")


_KNOBS = (  # (what to say, settings to change), tried in this order; the first that fits is the advice
    ("turn on gradient_checkpointing", {"gradient_checkpointing": True, "activation_offloading": False}),
)


def plan_memory(model, *, gpu: str = "T4", capacity_gib: float | None = None, **settings) -> MemoryPlan:
    """Predicted peak with a verdict for a card: "fits a T4 with N GiB to spare" or which knob to turn."""
    capacity = capacity_gib if capacity_gib is not None else GPUS[gpu]
    shape = model if isinstance(model, ModelShape) else model_shape(model)
    parts = estimate_memory(shape, **settings)
    total = sum(parts.values())
    fix = None
    if total > capacity:
        fix = _first_fix(shape, capacity, settings)
    host = _host_gib(shape, **settings) if settings.get("activation_offloading") else 0.0
    return MemoryPlan(parts, total, gpu, capacity, _verdict(total, gpu, capacity, fix), settings, host)


def _first_fix(shape: ModelShape, capacity: float, settings: dict) -> str | None:
    candidates = [(say, change) for say, change in _KNOBS if any(settings.get(k) != v for k, v in change.items())]
    batch = settings.get("batch_size", 4)
    while batch > 1:  # then smaller batches, with gradient checkpointing, keeping the effective batch
        batch //= 2
        candidates.append((f"turn on gradient_checkpointing and use batch_size={batch} (raise grad_accum to keep "
                           "the effective batch)", {"gradient_checkpointing": True, "batch_size": batch,
                                                    "activation_offloading": False}))
    for say, change in candidates:
        total = sum(estimate_memory(shape, **(settings | change)).values())
        if total <= capacity:
            return f"{say} (predicted {total:.1f} GiB)"
    return None


def _profile_settings(profile) -> dict:
    method = "qlora" if profile.quantization == "nf4" else "lora"
    dtype = {"auto": "float16"}.get(profile.compute_dtype, profile.compute_dtype)
    return dict(method=method, seq_len=profile.max_length, batch_size=profile.batch_size, compute_dtype=dtype,
                gradient_checkpointing=profile.gradient_checkpointing, lora_r=profile.lora_r,
                target_modules=profile.target_modules, lora_dropout=profile.lora_dropout,
                activation_offloading=profile.activation_offloading)


def plan_for_profile(profile, *, gpu: str | None = None, capacity_gib: float | None = None, config=None) -> MemoryPlan:
    """The plan for a profile's base model and settings on a card (default: the one present, else a T4).

    Reads only the model's config (config.json), so it runs before any weights are downloaded."""
    gpu, capacity_gib = _card(gpu, capacity_gib)
    return plan_memory(config or profile.base_model, gpu=gpu, capacity_gib=capacity_gib,
                       **_profile_settings(profile))


def _card(gpu: str | None, capacity_gib: float | None) -> tuple[str, float | None]:
    import torch

    if gpu is None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, capacity_gib or props.total_memory / GiB
    return gpu or "T4", capacity_gib


def choose_activation_memory(profile, config=None, *, gpu: str | None = None,
                             capacity_gib: float | None = None, margin: float = 0.9) -> tuple[dict, MemoryPlan]:
    """The fastest way to hold activations that fits with a margin: keep them all (no recompute), else recompute
    them (gradient checkpointing, ~0.7x the speed). Returns (profile overrides, plan). TRL's activation offloading is
    not picked: on an H100 it ran at ~0.4x the speed of keeping activations and peaked
    no lower than checkpointing (benchmarks/bench_gpu_qlora.py); it stays a profile field to try."""
    gpu, capacity_gib = _card(gpu, capacity_gib)
    settings = _profile_settings(profile)
    plan = None
    for choice in ({"gradient_checkpointing": False, "activation_offloading": False},
                   {"gradient_checkpointing": True, "activation_offloading": False}):
        plan = plan_memory(config or profile.base_model, gpu=gpu, capacity_gib=capacity_gib, **(settings | choice))
        if plan.total_gib <= margin * plan.capacity_gib:
            return choice, plan
    return {"gradient_checkpointing": True, "activation_offloading": False}, plan


def saved_activation_bytes(model, inputs: dict, *, autocast_dtype=None) -> int:
    """Bytes autograd saves for backward in one forward pass (parameters excluded), measured with saved-tensor
    hooks: the ground truth the per-token terms above were read from."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    device = next(model.parameters()).device.type
    with torch.autocast(device, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(**inputs)
    return sum(seen.values())
