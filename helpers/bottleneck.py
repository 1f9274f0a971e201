"""Bottleneck adapters (Houlsby, Pfeiffer, parallel) as in the LLM-Adapters code the paper ran, on plain modules.

peft has no bottleneck adapters, and the `adapters` library pins transformers 4.x, so these are small modules
that wrap a frozen nn.Linear or bitsandbytes Linear4bit in place. The adapted model stays a transformers model:
the same Trainer trains it, and it saves only the adapter (safetensors + a JSON config).
"""
from __future__ import annotations

import json
import os
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.activations import ACT2FN

from .models import SITE_NAMES

__all__ = [
    "BottleneckConfig",
    "BottleneckAdapter",
    "BottleneckLinear",
    "PLACEMENTS",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "attach_bottleneck",
    "is_bottleneck_model",
    "bottleneck_state_dict",
    "save_bottleneck",
    "load_bottleneck",
    "detach_bottleneck",
]

CONFIG_NAME = "bottleneck_config.json"
# The Trainer resumes a model that is not a PeftModel from "model.safetensors" (loaded with strict=False), so the
# adapter weights go under that name, keyed by their module paths in the base model.
WEIGHTS_NAME = "model.safetensors"

# Where each variant puts its adapters, by the layer roles of models.SITE_NAMES (LLM-Adapters: use_adapterp /
# default Houlsby / use_parallel_adapter).
# A gated MLP (gate_proj and up_proj both read the MLP input) gets an input adapter on each, as LLM-Adapters does.
PLACEMENTS = {
    "pfeiffer": {"mlp_output": "output"},  # after the MLP output projection
    "houlsby": {"mlp_input": "input", "mlp_output": "output"},  # before the MLP input and after its output
    "parallel": {"attention_input": "parallel"},  # beside the attention input projection
}


@dataclass
class BottleneckConfig:
    """What to attach: a placement (or explicit sites) and the adapter's size; saved beside the weights."""

    placement: str  # a key of PLACEMENTS
    bottleneck_size: int = 32  # adapter width: parameters per site = size x (n_in + n_out)
    non_linearity: str = "tanh"
    scaling: float = 1.0  # multiplies the adapter output (LLM-Adapters' default)
    sites: dict[str, str] = field(default_factory=dict)  # layer name -> input/output/parallel; filled on attach
    base_model_name_or_path: str = ""

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown bottleneck placement {self.placement!r}; valid: {', '.join(PLACEMENTS)}")
        if self.bottleneck_size < 1:
            raise ValueError(f"bottleneck_size must be at least 1, got {self.bottleneck_size}")
        if self.non_linearity not in ACT2FN:
            raise ValueError(f"unknown non_linearity {self.non_linearity!r}")


class BottleneckAdapter(nn.Module):
    """down -> non-linearity -> up, no bias, no dropout; computed in the adapter's dtype (fp32 on a 4-bit base)."""

    def __init__(self, n_in: int, n_out: int, size: int, non_linearity: str = "tanh", scaling: float = 1.0):
        super().__init__()
        self.down = nn.Linear(n_in, size, bias=False)
        self.up = nn.Linear(size, n_out, bias=False)
        self.act = ACT2FN[non_linearity]
        self.scaling = scaling
        # LLM-Adapters' default ("bert") init: both projections N(0, 0.02), so the adapter starts small, not zero.
        nn.init.normal_(self.down.weight, std=0.02)
        nn.init.normal_(self.up.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.up(self.act(self.down(x.to(self.down.weight.dtype)))) * self.scaling
        return out.to(x.dtype)


class BottleneckLinear(nn.Module):
    """A frozen linear layer with a bottleneck adapter on its input, on its output, or beside it (parallel)."""

    def __init__(self, base_layer: nn.Linear, position: str, adapter: BottleneckAdapter):
        super().__init__()
        if position not in ("input", "output", "parallel"):
            raise ValueError(f"unknown adapter position {position!r}")
        self.base_layer = base_layer
        self.position = position
        self.adapter = adapter

    @property
    def weight(self):  # modelling code and peft helpers read .weight (dtype, device) off linear layers
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.position == "input":
            return self.base_layer(x + self.adapter(x))
        y = self.base_layer(x)
        return y + self.adapter(y if self.position == "output" else x)

    def extra_repr(self) -> str:
        return f"position={self.position}"


def _find_sites(model: nn.Module, placement: str) -> dict[str, str]:
    """Layer name -> position for every linear layer of the roles the placement names that this model has."""
    roles = PLACEMENTS[placement]
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    sites = {n: pos for role, pos in roles.items() for n in SITE_NAMES[role] if n in present}
    missing = [role for role in roles if not any(n in present for n in SITE_NAMES[role])]
    if missing:
        raise ValueError(f"{type(model).__name__} has no linear layer named like {missing} "
                         f"({', '.join(n for r in missing for n in SITE_NAMES[r])}): cannot place {placement} adapters")
    return sites


def attach_bottleneck(model: nn.Module, config: BottleneckConfig) -> nn.Module:
    """Wrap the target layers of `model` in place with fresh adapters; only the adapters stay trainable."""
    if is_bottleneck_model(model):
        raise ValueError("this model already carries bottleneck adapters; load a fresh base")
    config.sites = config.sites or _find_sites(model, config.placement)
    config.base_model_name_or_path = config.base_model_name_or_path or getattr(model, "name_or_path", "")
    for param in model.parameters():
        param.requires_grad = False
    targets = [(name, m) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in config.sites]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no linear layer named {sorted(config.sites)}: "
                         "the adapter does not fit this base")
    for name, layer in targets:
        position = config.sites[name.rsplit(".", 1)[-1]]
        n_in, n_out = layer.in_features, layer.out_features
        dims = {"input": (n_in, n_in), "output": (n_out, n_out), "parallel": (n_in, n_out)}[position]
        adapter = BottleneckAdapter(*dims, config.bottleneck_size, config.non_linearity, config.scaling)
        adapter.to(layer.weight.device)  # fp32 whatever the base dtype: small, and stable to train
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, BottleneckLinear(layer, position, adapter))
    _make_trainer_compatible(model, config)
    return model


# Instance attributes attach_bottleneck sets (detach_bottleneck restores them) so that the Trainer handles the model.
_TRAINER_ATTRS = ("save_pretrained", "_hf_peft_config_loaded", "_keys_to_ignore_on_save")


def _make_trainer_compatible(model: nn.Module, config: BottleneckConfig) -> None:
    """Let transformers' Trainer train, checkpoint and resume the adapted model as it does a PeftModel."""
    model._before_bottleneck = {a: model.__dict__[a] for a in _TRAINER_ATTRS if a in model.__dict__}
    model.bottleneck_config = config
    # Trainer._save calls model.save_pretrained for checkpoints and save_model: store the adapter only.
    model.save_pretrained = types.MethodType(_save_pretrained, model)
    # The Trainer refuses to train a quantized model without adapters, and knows only peft's: this flag says
    # adapters are attached (it also keeps input gradients on under gradient checkpointing).
    model._hf_peft_config_loaded = True
    # On resume the Trainer loads the checkpoint with strict=False and warns about every key missing from it unless
    # they are exactly the keys the model does not save: the frozen base. A no-op load lists those keys.
    model._keys_to_ignore_on_save = model.load_state_dict(bottleneck_state_dict(model), strict=False).missing_keys


def detach_bottleneck(model: nn.Module) -> nn.Module:
    """Undo attach_bottleneck in place: the original layers come back and the adapters go (base weights unchanged)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BottleneckLinear):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.base_layer)
    for attr in (*_TRAINER_ATTRS, "bottleneck_config"):
        model.__dict__.pop(attr, None)
    model.__dict__.update(model.__dict__.pop("_before_bottleneck", {}))
    return model


def _save_pretrained(model, save_directory, *args, is_main_process: bool = True, **kwargs):
    if is_main_process:
        save_bottleneck(model, save_directory)


def is_bottleneck_model(model) -> bool:
    """True when `model` carries bottleneck adapters from attach_bottleneck."""
    return isinstance(getattr(model, "bottleneck_config", None), BottleneckConfig)


def bottleneck_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only, keyed by module path."""
    return {f"{name}.adapter.{k}": v for name, m in model.named_modules() if isinstance(m, BottleneckLinear)
            for k, v in m.adapter.state_dict().items()}


def save_bottleneck(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write the adapter weights (safetensors) and its config (JSON) into `directory`; returns it."""
    if not is_bottleneck_model(model):
        raise ValueError("this model has no bottleneck adapters to save")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in bottleneck_state_dict(model).items()}
    save_file(weights, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    (out / CONFIG_NAME).write_text(json.dumps(asdict(model.bottleneck_config), indent=1))
    return out


def load_bottleneck(model: nn.Module, directory: str | os.PathLike, *, trainable: bool = False) -> nn.Module:
    """Attach the adapters saved in `directory` to a fresh base (in place) and load their weights."""
    path = Path(directory)
    if not (path / CONFIG_NAME).exists():
        raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: not a bottleneck adapter directory")
    config = BottleneckConfig(**json.loads((path / CONFIG_NAME).read_text()))
    attach_bottleneck(model, config)
    weights = load_file(str(path / WEIGHTS_NAME))
    expected = bottleneck_state_dict(model)
    if weights.keys() != expected.keys():
        raise ValueError(f"{path / WEIGHTS_NAME} does not fit this base: "
                         f"{len(weights.keys() - expected.keys())} unexpected, "
                         f"{len(expected.keys() - weights.keys())} missing adapter tensors")
    model.load_state_dict(weights, strict=False)
    for name, param in model.named_parameters():
        param.requires_grad = trainable and ".adapter." in name
    return model
