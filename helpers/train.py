"""QLoRA supervised fine-tuning with TRL's SFTTrainer: crash-safe checkpoints, resume, NaN and OOM guards."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import resource
import shutil
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .batching import LengthGroupedBatches, check_training_rows
from .models import count_parameters, pick_dtype

if TYPE_CHECKING:  # trl, transformers' trainer and peft are imported when training starts: seconds at import
    from trl import SFTConfig

__all__ = [
    "TrainResult",
    "NonFiniteLossError",
    "OutOfMemoryAdvice",
    "precision_args",
    "sft_config",
    "use_padding_free",
    "fit_activation_memory",
    "latest_checkpoint",
    "set_aside_incomplete",
    "train_model",
]

COMPLETE_MARKER = "COMPLETE"  # written last into a checkpoint: its presence means every file is on disk


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before saving a broken model."""


class OutOfMemoryAdvice(RuntimeError):
    """Out of GPU memory even after the allowed batch halvings; the message says what to change."""


@dataclass
class TrainResult:
    """What a training run produced; `model` is the trained PeftModel (left out of to_dict)."""

    loss_history: list[tuple[int, float]]
    trainable_params: int
    total_params: int
    wall_time_s: float
    peak_memory_mb: float
    peak_memory_kind: str
    tokens_seen: int
    steps: int
    batch_size: int
    grad_accum: int
    adapter_dir: str
    resumed_from: str | None = None
    new_steps: int = 0  # optimizer steps run by this call: 0 when it only resumed an already finished run
    new_tokens: int = 0  # tokens seen in those steps (tokens_seen counts the resumed part too)
    model: object = field(default=None, repr=False)

    @property
    def tokens_per_second(self) -> float | None:
        """Training speed of this call (new tokens / wall time); None when no step ran."""
        return self.new_tokens / self.wall_time_s if self.new_steps and self.wall_time_s > 0 else None

    def describe(self) -> str:
        """What this call trained: new steps, time and speed, or that it resumed a run that had already finished."""
        start = f"resumed from {Path(self.resumed_from).name}: " if self.resumed_from else ""
        if not self.new_steps:
            return (f"{start}0 new steps: the run had already finished ({self.steps} steps), so there is no "
                    "training time or speed to report (delete its checkpoints folder to train again)")
        return (f"{start}{self.new_steps} new steps ({self.steps} in all), {self.new_tokens:,} tokens in "
                f"{self.wall_time_s:.1f} s: {self.tokens_per_second:,.0f} tokens/s")

    def to_dict(self) -> dict:
        """JSON-ready summary without the model."""
        d = asdict(self) | {"loss_history": [list(x) for x in self.loss_history],
                            "tokens_per_second": self.tokens_per_second}
        d.pop("model")
        return d


@functools.cache
def _run_guards() -> tuple[type, type]:
    """The callbacks every run gets, made on first use: TrainerCallback's import pulls in peft and bitsandbytes."""
    from transformers import TrainerCallback

    class CheckpointMarker(TrainerCallback):
        """Marks a checkpoint complete after the Trainer wrote all of it (its own save is not atomic)."""

        def on_save(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:  # process 0 writes the checkpoint, so it alone marks it
                return
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            tmp = ckpt / f".{COMPLETE_MARKER}.tmp"
            with open(tmp, "w") as f:
                f.write(str(state.global_step))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, ckpt / COMPLETE_MARKER)

    class NonFiniteLossGuard(TrainerCallback):
        """Stops at the first logged NaN/inf loss, naming the step, learning rate and last good checkpoint."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                last = latest_checkpoint(args.output_dir)
                raise NonFiniteLossError(
                    f"loss became {loss} at step {state.global_step} (learning rate {logs.get('learning_rate')}); "
                    f"training stopped. Last good checkpoint: {last or 'none'}. Try a lower learning_rate, "
                    "compute_dtype='bfloat16' or 'float32' instead of float16, or check the data for empty "
                    "answers.")

    return CheckpointMarker, NonFiniteLossGuard


def precision_args(profile) -> dict:
    """Trainer arguments for this device: mixed precision in the profile's compute dtype and paged 8-bit AdamW on a
    GPU; fp32 and plain AdamW on a CPU. Shared by instruction tuning and continued pre-training (helpers.vocab)."""
    dtype, on_gpu = pick_dtype(profile.compute_dtype), torch.cuda.is_available()
    return {"fp16": on_gpu and dtype == torch.float16,  # fp16 trains with dynamic loss scaling (GradScaler)
            "bf16": on_gpu and dtype == torch.bfloat16,
            "optim": "paged_adamw_8bit" if on_gpu else "adamw_torch"}  # paged 8-bit states save GPU memory


def sft_config(profile, checkpoint_dir: str | os.PathLike, *, batch_size: int, grad_accum: int,
               padding_free: bool = False) -> SFTConfig:
    """TRL settings from a profile: precision from the device, response-only loss, no NaN filtering."""
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        learning_rate=profile.learning_rate,
        num_train_epochs=profile.epochs,
        max_steps=profile.max_steps,
        warmup_steps=profile.warmup_ratio,  # a float below 1 is a share of the total steps
        lr_scheduler_type="cosine",
        logging_steps=profile.logging_steps,
        save_strategy="steps",
        save_steps=profile.save_steps,
        save_total_limit=2,  # keep two, so the previous complete checkpoint survives a kill during a save
        seed=profile.seed,
        data_seed=profile.seed,
        **precision_args(profile),
        # Done by prepare_for_training, before the adapter is attached (TRL defaults the deprecated alias to True).
        activation_checkpointing=False,
        activation_offloading=profile.activation_offloading,
        # Padding-free rows arrive already cut to max_length (TRL refuses padding_free with a max_length to enforce).
        max_length=None if padding_free else profile.max_length,
        padding_free=padding_free,
        # Loss on the answers only: build_sft_dataset's labels are -100 elsewhere, and TRL trains on a labels column
        # as it is (this flag acts only on prompt/completion rows; it stays True as what the recipe table shows).
        completion_only_loss=True,
        logging_nan_inf_filter=False,  # the default would hide a NaN loss behind earlier averages
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        use_cpu=not on_gpu,  # also what makes torchrun's CPU processes one (gloo) group instead of N lone runs
        ddp_find_unused_parameters=False,  # each adapter weight takes part in every forward pass: skip the search
    )


def _checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])  # checkpoint-<global step>


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint that was completely written, or None."""
    root = Path(checkpoint_dir)
    done = [p for p in root.glob("checkpoint-*") if (p / COMPLETE_MARKER).exists()] if root.exists() else []
    return max(done, key=_checkpoint_step, default=None)


def _move_aside(checkpoints: list[Path], folder: Path) -> Path | None:
    """Move checkpoints into a new timestamped folder under `folder` (kept, never deleted); returns it."""
    if not checkpoints:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(dir=folder, prefix=time.strftime("%Y%m%d-%H%M%S-")))  # unique, even twice a second
    for p in checkpoints:
        shutil.move(str(p), dest)
    return dest


def set_aside_incomplete(checkpoint_dir: str | os.PathLike) -> Path | None:
    """Move half-written checkpoints (a kill during a save) out of the way; returns where they went."""
    root = Path(checkpoint_dir)
    broken = [p for p in root.glob("checkpoint-*") if not (p / COMPLETE_MARKER).exists()] if root.exists() else []
    return _move_aside(broken, root / "incomplete")


# Profile fields that do not shape the training trajectory; every other field does, so a checkpoint made under
# other values is not resumed (a new field counts until it is listed here: a needless re-run, never a mixed one).
# The data fields are covered by the hash of the tokenized rows, batch_size x grad_accum by the effective batch
# (an OOM retry trades one for the other), and max_steps / epochs are left out so that a longer run resumes.
_OFF_TRAJECTORY_FIELDS = (
    "name", "description", "output_root", "result_note", "expects_gpu", "trust_remote_code", "torch_threads",
    "train_data", "train_limit", "overlong", "batch_size", "grad_accum", "max_steps", "epochs", "oom_retries",
    "logging_steps", "save_steps", "gradient_checkpointing", "activation_offloading", "auto_checkpointing",
    "padding_free", "eval_data", "eval_limit", "exam_data", "exam_dev_data", "exam_limit", "max_new_tokens",
    "eval_batch_size", "eval_suffix", "exam_max_new_tokens",
)


def _run_signature(profile, dataset, batch_size: int, grad_accum: int) -> dict:
    digest = hashlib.sha256()
    for ids, labels in zip(dataset["input_ids"], dataset["labels"]):  # the tokenized rows, exactly as trained on
        digest.update(array("q", [len(ids), *ids, *labels]).tobytes())
    data = digest.hexdigest()[:16]
    settings = {k: v for k, v in profile.to_dict().items() if k not in _OFF_TRAJECTORY_FIELDS}
    return {**settings,
            "effective_batch": batch_size * grad_accum, "data": data}


def _match_or_set_aside(ckpt_dir: Path, signature: dict) -> None:
    """Keep checkpoints only if they come from the same run settings and data; else move them aside."""
    path = ckpt_dir / "run.json"
    if path.exists() and json.loads(path.read_text()) != signature:
        dest = _move_aside(list(ckpt_dir.glob("checkpoint-*")), ckpt_dir / "previous")
        if dest:
            print(f"Settings or data changed since the last run: its checkpoints were moved to {dest}; "
                  "starting fresh.")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(signature, indent=1))


def _adapters_to_fp32(model) -> None:
    """Undo TRL's bf16 cast of QLoRA adapters: a resumed run reloads them as fp32, so a fresh run must train in
    fp32 too for the two to match. fp32 adapters cost a few MB, and a T4 has no native bf16 anyway."""
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()


def _peak_memory() -> tuple[float, str]:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20, "cuda max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS (CPU)"


def use_padding_free(profile, model) -> bool:
    """Whether to train padding-free: 'auto' turns it on where the model runs a FlashAttention kernel, whose
    variable-length path makes one concatenated row cost what its rows cost alone (SDPA would build a full mask)."""
    if profile.padding_free != "auto":
        return profile.padding_free == "on"
    return str(getattr(model.config, "_attn_implementation", None)).startswith("flash")


def fit_activation_memory(profile, model):
    """On a GPU with auto_checkpointing, the profile with gradient checkpointing off when the memory planner says
    the run fits without it (saving its recompute), on when it does not."""
    if not (profile.auto_checkpointing and torch.cuda.is_available()) or hasattr(model, "peft_config"):
        return profile  # on CPU there is no card to fit; a model already wrapped was prepared by its caller
    from .memory import choose_activation_memory

    choice, plan = choose_activation_memory(profile, model.config)
    if {k: getattr(profile, k) for k in choice} != choice:
        print(f"Memory planner: {plan.verdict} with {choice}; using that instead of the profile's "
              f"gradient_checkpointing={profile.gradient_checkpointing}, "
              f"activation_offloading={profile.activation_offloading}.")
    return dataclasses.replace(profile, **choice)


def _group_by_length(trainer, lengths: list[int], seed: int) -> None:
    """Batch rows of similar length together; a group is one optimizer step of every process, so one process
    with batch 2b and two with batch b see the same rows per step."""
    args = trainer.args
    group = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
    trainer._get_train_sampler = lambda train_dataset=None: LengthGroupedBatches(lengths, group, seed)


def _restore_finished(trainer, checkpoint: Path) -> None:
    """Load a finished run's adapter and trainer state without training. transformers resumes a checkpoint taken at
    max_steps mid-epoch by running one step past it, changing a result that was already final."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))


def _train_once(model, tokenizer, dataset, profile, out: Path, batch_size, grad_accum, resume, callbacks):
    from trl import SFTTrainer

    from .peft_methods import training_loss

    # Rows come tokenised (build_sft_dataset) and are checked here, so TRL neither re-truncates nor drops any of them.
    lengths = check_training_rows(dataset, profile.max_length)
    ckpt_dir = out / "checkpoints"
    if os.environ.get("RANK", "0") == "0":  # one process tidies the folder under torchrun / accelerate launch
        _match_or_set_aside(ckpt_dir, _run_signature(profile, dataset, batch_size, grad_accum))
        set_aside_incomplete(ckpt_dir)
    resume_from = latest_checkpoint(ckpt_dir) if resume else None
    padding_free = use_padding_free(profile, model)
    trainer = SFTTrainer(
        model=model,
        args=sft_config(profile, ckpt_dir, batch_size=batch_size, grad_accum=grad_accum, padding_free=padding_free),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[guard() for guard in _run_guards()] + list(callbacks),
        compute_loss_func=training_loss(model, grad_accum),  # None (TRL's loss) except for AdaLoRA
    )
    if profile.group_by_length and not padding_free:  # padding-free batches have no padding to save
        _group_by_length(trainer, lengths, profile.seed)
    _adapters_to_fp32(trainer.model)
    if resume_from and 0 < trainer.args.max_steps <= _checkpoint_step(resume_from):
        _restore_finished(trainer, resume_from)  # already done: train() would still run one more step
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trainer.save_model(str(out / "adapter"))  # adapter weights only, as safetensors
    return trainer, resume_from


def _oom_advice(profile, batch_size: int, grad_accum: int) -> str:
    return (
        f"Out of GPU memory at batch_size={batch_size}, grad_accum={grad_accum}, max_length={profile.max_length}. "
        "Try, in order: a smaller batch_size with a larger grad_accum (same effective batch); a shorter "
        "max_length; gradient_checkpointing=True; quantization='nf4'; or a smaller profile/base model."
    )


def train_model(model, tokenizer, dataset, profile, output_dir: str | os.PathLike, *, peft_config=None,
                resume: bool = True, callbacks=()) -> TrainResult:
    """Fine-tune with an adapter (profile.peft_method unless peft_config is given), resuming from the latest
    complete checkpoint in output_dir."""
    from transformers import set_seed

    from .peft_methods import build_peft_config, is_adapted, optimizer_steps, prepare_for_training, training_callbacks

    out = Path(output_dir)
    profile = fit_activation_memory(profile, model)
    set_seed(profile.seed)  # before the adapter is created: its initial weights come from this RNG
    if not is_adapted(model):
        config = peft_config or build_peft_config(profile, total_steps=optimizer_steps(profile, len(dataset)))
        model = prepare_for_training(model, config, gradient_checkpointing=profile.gradient_checkpointing)
    callbacks = [*training_callbacks(model, profile), *callbacks]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()  # this run's peak, not the process's (runs in a row compare memory)
    start = time.perf_counter()
    trainer, resumed, batch_size, grad_accum = _train_halving_on_oom(model, tokenizer, dataset, profile, out,
                                                                     resume, callbacks)
    return _result(trainer, model, out, start, batch_size, grad_accum, resumed)


def _train_halving_on_oom(model, tokenizer, dataset, profile, out: Path, resume: bool, callbacks):
    """_train_once, retried up to oom_retries times on out-of-memory with half the batch and twice the accumulation
    (same effective batch), from the latest complete checkpoint; (trainer, resumed from, batch_size, grad_accum)."""
    batch_size, grad_accum = profile.batch_size, profile.grad_accum
    for attempt in range(profile.oom_retries + 1):
        try:
            trainer, resumed = _train_once(model, tokenizer, dataset, profile, out, batch_size, grad_accum,
                                           resume, callbacks)
            return trainer, resumed, batch_size, grad_accum
        except torch.OutOfMemoryError as err:
            if attempt == profile.oom_retries or batch_size == 1:
                raise OutOfMemoryAdvice(_oom_advice(profile, batch_size, grad_accum)) from err
            torch.cuda.empty_cache() if torch.cuda.is_available() else None
            batch_size, grad_accum = batch_size // 2, grad_accum * 2
            print(f"Out of memory: retrying with batch_size={batch_size}, grad_accum={grad_accum} "
                  "(same effective batch), from the latest complete checkpoint.")
            resume = True


def _resume_point(log_history: list[dict], resumed) -> tuple[int, int]:
    """(step, tokens seen) where this call resumed: read from the restored log, as rotation may delete the folder."""
    if not resumed:
        return 0, 0
    step = _checkpoint_step(Path(resumed))
    tokens = next((h["num_input_tokens_seen"] for h in log_history
                   if h.get("step") == step and "num_input_tokens_seen" in h), 0)
    return step, int(tokens)


def _result(trainer, model, out: Path, start: float, batch_size: int, grad_accum: int, resumed) -> TrainResult:
    history = [(h["step"], h["loss"]) for h in trainer.state.log_history if "loss" in h]
    trainable, total = count_parameters(model)
    peak, kind = _peak_memory()
    tokens, steps = int(trainer.state.num_input_tokens_seen), trainer.state.global_step
    resumed_step, resumed_tokens = _resume_point(trainer.state.log_history, resumed)
    return TrainResult(
        loss_history=history, trainable_params=trainable, total_params=total,
        wall_time_s=time.perf_counter() - start, peak_memory_mb=peak, peak_memory_kind=kind,
        tokens_seen=tokens, steps=steps, batch_size=batch_size, grad_accum=grad_accum,
        adapter_dir=str(out / "adapter"), resumed_from=str(resumed) if resumed else None,
        new_steps=steps - resumed_step, new_tokens=tokens - resumed_tokens, model=model,
    )
