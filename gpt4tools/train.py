"""LoRA training on GPT4Tools records: `python -m gpt4tools train ...`.

Paper settings by default (REFERENCE.md §5): LoRA r=16, alpha=16, dropout 0.05 on
q/k/v/o projections, lr 3e-4, loss on the response tokens only. One linear loop on
`accelerate`, so the same code runs on 2 CPU cores, one GPU, or many under
`accelerate launch` / `torchrun` (DDP).

Why our own loop instead of transformers.Trainer: the prompt is masked, so logits are
needed only for the response. Computing the LM head on those positions alone
(`logits_to_keep`) saves ~30% of a step for small models with large vocabularies
(Gemma's 262k-token head is most of its FLOPs). scripts/bench_train.py measures it
against a plain Trainer + peft run on the same data.

On CPU a step is mostly element-wise work around the matmuls, not the matmuls: the LM head gets its
input in plain strides (`llm.hf.pack_head_input`, as at inference) and the fp32 adapters run under bf16 autocast
(`_half_precision_adapters`), 1.39x together on 2 AMX cores (docs/benchmark.md, "What a CPU step
computes"); LoRA dropout costs as much again.

Samples longer than `cutoff_len` are skipped and counted (truncating would cut either
the tool list the model must read or the answer it must learn). Everything the run
needs to resume — adapter, optimizer, scheduler, data order, step — is checkpointed
every `save_steps`; a resumed run reaches the same result as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt4tools.records import atomic_write, episode_turn, read_jsonl

log = logging.getLogger(__name__)
IGNORE = -100
try:  # glibc, for _trim_heap
    _LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
    _LIBC.malloc_trim  # noqa: B018 (musl has no malloc_trim)
except (OSError, AttributeError):
    _LIBC = None


@dataclass
class TrainConfig:
    base_model: str = "default"  # 'default' (embedded), a manifest name, a local dir, or a hub id
    data: list[str] = field(default_factory=lambda: ["data/train.jsonl"])  # GPT4Tools records, JSON or JSONL
    out_dir: str = "runs/train/default"
    template: str = "default"  # the prompt template saved beside the adapter for inference
    # lora hyperparams (paper)
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05  # 0 trains 1.4x faster on CPU: dropout's random mask is drawn on one thread
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # "" = every layer (paper). "top:N" = the last N layers only: backward then stops at the
    # lowest adapted layer, which measured 1.44x faster on 2 CPU cores with half the layers.
    lora_layers: str = ""
    # optimisation
    learning_rate: float = 3e-4
    warmup_steps: int = 10
    epochs: float = 1.0
    max_steps: int = 0  # optimizer steps; 0 = from epochs
    micro_batch_size: int = 1
    gradient_accumulation: int = 8
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    cutoff_len: int = 1536  # tokens; longer samples are skipped and counted
    max_samples: int = 0  # use only about N records: whole episodes, in seeded random order (0 = all)
    mask_prompt: bool = True  # loss on the response only (alpaca-lora's train_on_inputs=False)
    merge_turns: bool = True  # encode the turns of one episode as one sequence (group_turns)
    # hardware
    device: str = "auto"  # auto: cuda if available else cpu (accelerate decides under a launcher)
    dtype: str = "auto"  # auto: bf16 where the hardware has it natively (CUDA, AVX-512 BF16), else fp32
    gradient_checkpointing: bool = False
    threads: int = 0  # CPU threads (0 = torch default)
    # Pad each batch to a multiple of this many tokens (0 = to its longest): fewer distinct shapes to
    # allocate. Measured on 2 CPU cores (scripts/bench_train_speed.sh): 64 saved 2 of 12 GB untrimmed, 0.95x speed.
    pad_to_multiple: int = 0
    # CPU: glibc malloc_trim after each optimizer step (_trim_heap): ~3 GB instead of 12-18 GB, ~9 % slower
    trim_heap: bool = True
    # Run the fp32 adapters' matmuls in the base model's bf16 (torch.autocast; the adapter weights,
    # their gradients and AdamW stay fp32). No effect on an fp32 or fp16 base. See _half_precision_adapters.
    autocast: bool = True
    # bookkeeping
    seed: int = 42
    save_steps: int = 50
    log_steps: int = 1
    # >0: after this many optimizer steps in one process, checkpoint and exit with PAUSED (75); the same
    # command goes on from there. A CPU run slows as its process ages (glibc's heap: docs/benchmark.md,
    # "What a CPU step computes"), and a new process starts fast again.
    process_steps: int = 0
    resume: bool = True  # continue from out_dir/checkpoint if present
    # Start from this adapter's LoRA weights instead of fresh ones (continue training an adapter on
    # new data); its own rank, targets and layers apply, the lora_* settings above are not used.
    init_adapter: str = ""
    save_dtype: str = "fp32"  # the final adapter file's dtype; bf16 halves it (checkpoints stay fp32)

    def __post_init__(self):
        if self.micro_batch_size < 1 or self.gradient_accumulation < 1:
            raise ValueError("--micro-batch-size and --gradient-accumulation must be >= 1")
        if self.pad_to_multiple < 0:
            raise ValueError("--pad-to-multiple takes 0 (no extra padding) or a positive number of tokens")
        if self.cutoff_len < 64:
            raise ValueError("--cutoff-len below 64 tokens cannot hold a GPT4Tools prompt")
        if isinstance(self.data, str):
            self.data = [self.data]
        self.target_modules = tuple(self.target_modules)
        from gpt4tools.models import ADAPTER_DTYPES  # the dtypes cast_adapter writes

        if self.save_dtype not in ADAPTER_DTYPES:
            raise ValueError(f"--save-dtype takes {', '.join(ADAPTER_DTYPES)}, not {self.save_dtype!r}")
        if self.lora_layers and not re.fullmatch(r"top:\d+", self.lora_layers):
            raise ValueError(f"--lora-layers takes '' (all) or 'top:N', not {self.lora_layers!r}")


# -- data -------------------------------------------------------------------------------
def read_records(paths: list[str]) -> tuple[list[dict], dict[str, int]]:
    """Records from JSON lists or JSONL files; malformed ones are skipped and counted. (A file
    that starts like a JSON list but does not parse is read as JSONL, line by line.)"""
    records, skipped = [], {}
    for p in paths:
        found = read_jsonl(p)
        if found.bad:
            skipped["malformed JSON line"] = skipped.get("malformed JSON line", 0) + len(found.bad)
        for r in found.values():
            if not isinstance(r, dict) or not isinstance(r.get("instruction"), str) \
                    or not isinstance(r.get("output"), str) or not r["output"].strip():
                skipped["missing instruction/output"] = skipped.get("missing instruction/output", 0) + 1
                continue
            records.append(r)
    return records, skipped


def tokenize_record(record: dict, tokenizer, cutoff_len: int, mask_prompt: bool = True) -> dict | None:
    """input_ids and labels for one record; None if it does not fit in cutoff_len."""
    return tokenize_turns([record], tokenizer, cutoff_len, mask_prompt)


def tokenize_turns(chain: list[dict], tokenizer, cutoff_len: int, mask_prompt: bool = True,
                   learn: list[bool] | None = None) -> dict | None:
    """One sequence for the turns of an episode (see `group_turns`): the first prompt, then each
    turn's output and what the next prompt adds (its observation). Outputs are learned (those
    with `learn` True), the rest masked; a lone record is the usual prompt + response. Each
    piece is tokenized on its own, as at inference the prompt is and the model's tokens follow.
    None if it does not fit in cutoff_len, or if a turn's prompt does not continue the text before."""
    from gpt4tools.prompt import record_prompt

    learn = learn or [True] * len(chain)
    ids: list[int] = []
    labels: list[int] = []
    done = ""  # the text encoded so far
    for k, (record, learned) in enumerate(zip(chain, learn)):
        prompt = record_prompt(record)
        if not prompt.startswith(done):
            return None  # not a continuation (inconsistent episode fields): tokenize_all takes the records alone
        p_ids = tokenizer(prompt[len(done):], add_special_tokens=not ids).input_ids
        r_ids = tokenizer(record["output"], add_special_tokens=False).input_ids
        if k == len(chain) - 1:
            r_ids = r_ids + [tokenizer.eos_token_id]
        ids += p_ids + r_ids
        labels += [IGNORE] * len(p_ids) if mask_prompt else list(p_ids)
        labels += r_ids if learned else [IGNORE] * len(r_ids)
        done = prompt + record["output"]
    if len(ids) > cutoff_len:
        return None
    first = next((i for i, t in enumerate(labels) if t != IGNORE), len(labels))
    return {"input_ids": ids, "labels": labels, "response_len": len(ids) - first, "records": len(chain)}


def group_turns(records: list[dict]) -> list[list[int]]:
    """Indices of records grouped into episodes, each group in turn order. The data builder
    writes one record per assistant turn, each repeating the whole prompt; encoding an episode
    once, with a loss on every turn, costs one forward pass instead of one per turn, and gives
    every turn the same context as its own record (causal attention never sees what follows).
    Records that carry `episode` and `turn` (records.Record: our builder's) are grouped by them;
    the others (foreign data, e.g. the paper's files) by their prompts (`_group_by_prompt`).
    Every record is in exactly one group, in the order of `records`' last turns."""
    keys = {j: k for j, k in enumerate(map(episode_turn, records)) if k is not None}
    if not keys:
        return _group_by_prompt(records)
    rest = [j for j in range(len(records)) if j not in keys]
    groups = _group_by_episode(keys) + [[rest[i] for i in g] for g in _group_by_prompt([records[j] for j in rest])]
    return sorted(groups, key=lambda g: g[-1])


def _group_by_episode(keys: dict[int, tuple[str, int]]) -> list[list[int]]:
    """Indices by episode, ordered by turn; a turn that repeats one already placed stays alone."""
    episodes: dict[str, list[int]] = {}
    for j, (episode, _) in keys.items():
        episodes.setdefault(episode, []).append(j)
    groups = []
    for members in episodes.values():
        chain: list[int] = []
        for j in sorted(members, key=lambda j: keys[j][1]):
            if chain and keys[chain[-1]][1] == keys[j][1]:
                groups.append([j])
            else:
                chain.append(j)
        groups.append(chain)
    return groups


def _group_by_prompt(records: list[dict]) -> list[list[int]]:
    """The fallback for records without `episode`/`turn`: [a, b, c] when b's prompt is a's prompt
    plus a's output plus more (a's observation), and c's likewise continues b's."""
    from gpt4tools import react
    from gpt4tools.prompt import record_prompt

    prompts = [record_prompt(r) for r in records]
    ends = {}
    for i, (p, r) in enumerate(zip(prompts, records)):
        ends.setdefault(p + r["output"], i)
    parent: dict[int, int] = {}
    for j, p in enumerate(prompts):
        for m in re.finditer(re.escape(react.OBSERVATION), p):  # where an earlier turn could have ended
            i = ends.get(p[: m.end()])
            if i is not None and i != j:
                parent[j] = i  # the latest earlier turn wins
    has_child = set(parent.values())
    groups, placed = [], set()
    for j in range(len(records)):
        if j in has_child:
            continue  # encoded inside a later turn's sequence
        chain = [j]
        while chain[-1] in parent and parent[chain[-1]] not in chain:
            chain.append(parent[chain[-1]])
        groups.append(chain[::-1])
        placed.update(chain)
    for j in range(len(records)):  # parents of several children: their other children above kept them
        if j not in placed:
            groups.append([j])
    return groups


def collate(batch: list[dict], pad_id: int, pad_to_multiple: int = 0):
    """Left-pad so every response ends at the last position (needed for logits_to_keep)."""
    import torch

    n = max(len(b["input_ids"]) for b in batch)
    if pad_to_multiple > 1:
        n = -(-n // pad_to_multiple) * pad_to_multiple
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[i, n - k:] = torch.tensor(b["input_ids"])
        labels[i, n - k:] = torch.tensor(b["labels"])
        mask[i, n - k:] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # left padding must not shift positions
    keep = max(b["response_len"] for b in batch) if all(IGNORE in b["labels"] for b in batch) else n - 1
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels, "keep": keep}


def loss_on_tail(model, batch) -> tuple:
    """Cross-entropy computed from logits of the last `keep`+1 positions only."""
    import torch.nn.functional as F

    keep = batch["keep"]
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep + 1)
    logits = out.logits[:, :-1, :].float()  # position t predicts token t+1
    targets = batch["labels"][:, -keep:]
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE)
    return loss, int((targets != IGNORE).sum())


def choose_groups(records: list[dict], cfg: TrainConfig) -> list[list[int]]:
    """The episodes to train on (`group_turns`, or single records without cfg.merge_turns), in a
    seeded random order; with cfg.max_samples, whole episodes up to that many records."""
    groups = group_turns(records) if cfg.merge_turns else [[i] for i in range(len(records))]
    random.Random(cfg.seed).shuffle(groups)
    if cfg.max_samples:
        kept, n = [], 0
        for g in groups:
            if n >= cfg.max_samples:
                break
            kept.append(g)
            n += len(g)
        groups = kept
    return groups


def tokenize_all(records: list[dict], tokenizer, cfg: TrainConfig, skipped: dict[str, int],
                 groups: list[list[int]] | None = None) -> list[dict]:
    """Training sequences: episodes encoded once (`group_turns`) when cfg.merge_turns, else one
    per record. A record that does not fit in cutoff_len is skipped and counted; an episode that
    does not fit falls back to its records one by one."""
    if groups is None:
        groups = group_turns(records) if cfg.merge_turns else [[i] for i in range(len(records))]
    too_long = f"longer than cutoff_len={cfg.cutoff_len}"
    samples, claimed = [], set()
    for group in groups:
        learn = [i not in claimed for i in group]  # a turn shared by two episodes is learned once
        s = tokenize_turns([records[i] for i in group], tokenizer, cfg.cutoff_len, cfg.mask_prompt, learn)
        if s is not None:
            s["records"] = sum(learn)
            samples.append(s)
            claimed.update(group)
            continue
        for i in group:
            if i in claimed:
                continue
            s = tokenize_record(records[i], tokenizer, cfg.cutoff_len, cfg.mask_prompt)
            if s is None:
                skipped[too_long] = skipped.get(too_long, 0) + 1
            else:
                samples.append(s)
                claimed.add(i)
    return samples


# -- model ------------------------------------------------------------------------------
def load_base(cfg: TrainConfig, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gpt4tools.hardware import resolve_dtype
    from gpt4tools.models import resolve_model

    path, _ = resolve_model(cfg.base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    dtype = resolve_dtype(cfg.dtype, device)
    if device == "cpu" and dtype == torch.float16:
        dtype = torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return path, tokenizer, model


def lora_layer_ids(spec: str, n_layers: int) -> list[int] | None:
    """'' -> None (every layer); 'top:N' -> the indices of the last N layers."""
    if not spec:
        return None
    n = int(spec.split(":")[1])
    if not 1 <= n <= n_layers:
        raise ValueError(f"--lora-layers {spec}: the model has {n_layers} layers")
    return list(range(n_layers - n, n_layers))


def data_checksum(paths: list[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


@dataclass
class _StopRequest:
    requested: bool = False


PAUSED = 75  # the exit code of a run that stopped at cfg.process_steps (sysexits' EX_TEMPFAIL: run it again)


class TrainingPaused(Exception):
    """The run saved a checkpoint after cfg.process_steps steps; the same command resumes it."""


@dataclass
class _Run:
    """What the steps of one training run share (see `train`)."""

    cfg: TrainConfig
    accelerator: Any
    tokenizer: Any
    model: Any  # the LoRA-wrapped model, prepared by accelerate
    samples: list[dict]
    trainable: list
    optimizer: Any
    scheduler: Any
    n_micro_per_epoch: int
    total_steps: int
    # {"step": optimizer steps done, "micro": micro-batches done, "seconds"/"tokens": training time and
    # tokens up to the checkpoint, so that a resumed run reports the whole run's}; checkpointed
    state: dict
    resolved: dict = field(default_factory=dict)  # train_config.json
    writer: Any = None  # tensorboard, on the main process when installed
    t_start: float = 0.0
    tokens_seen: int = 0
    kernel_use: tuple[float, int] = (0.0, 0)  # _kernel_use() at the last log
    stop: _StopRequest = field(default_factory=_StopRequest)  # SIGTERM asks the loop to save and end

    @property
    def out(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def ckpt(self) -> Path:
        return self.out / "checkpoint"


def train(cfg: TrainConfig, progress=None, command: str | None = None) -> Path:
    """Train and save the adapter into cfg.out_dir. `progress(step, total, metrics)` is optional;
    `command` (the command line) is recorded in train_config.json so the run can be repeated.
    The steps: set up accelerate and the seeds, load the base model, load and tokenize the data,
    add LoRA and the optimizer (resumed from out_dir/checkpoint when there is one), loop, save."""
    accelerator = _setup(cfg)
    base_path, tokenizer, model = load_base(cfg, str(accelerator.device))
    samples, skipped = load_samples(cfg, tokenizer, accelerator.print)
    run = _prepare(cfg, accelerator, tokenizer, model, samples)
    _trim_metrics(run)
    run.resolved = _write_run_config(run, base_path, skipped, command)
    run.writer = _tensorboard(run.out) if accelerator.is_main_process else None
    with _stop_on_sigterm(run.stop):
        _loop(run, progress)
    if run.stop.requested:  # saved at the last step: `train` again (same out_dir) resumes there
        raise SystemExit(f"stopped at step {run.state['step']} of {run.total_steps} (SIGTERM); "
                         f"the checkpoint in {run.ckpt} resumes it")
    if run.state["step"] < run.total_steps:  # the loop ends early only on SIGTERM or at cfg.process_steps
        raise TrainingPaused(f"paused at step {run.state['step']} of {run.total_steps} (--process-steps "
                             f"{cfg.process_steps}); the same command goes on from {run.ckpt}")
    _save_adapter(run)
    return run.out


@contextlib.contextmanager
def _stop_on_sigterm(stop: _StopRequest):
    """SIGTERM (what Job.stop and most schedulers send) ends training after the optimizer step in
    progress, with a checkpoint, instead of killing it mid-step. Only in the main thread (where
    Python delivers signals); elsewhere the handler is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(stop, "requested", True))
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)


def _setup(cfg: TrainConfig):
    """The accelerator (cpu unless cfg.device or a GPU says otherwise), out_dir, seeds."""
    import torch
    from accelerate import Accelerator

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu, gradient_accumulation_steps=cfg.gradient_accumulation)
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    return accelerator


def load_samples(cfg: TrainConfig, tokenizer, echo=print) -> tuple[list[dict], dict[str, int]]:
    """The training sequences of cfg.data (`choose_groups`, `tokenize_all`) and what was skipped."""
    records, skipped = read_records(cfg.data)
    samples = tokenize_all(records, tokenizer, cfg, skipped, choose_groups(records, cfg))
    if not samples:
        raise ValueError(f"no usable training samples in {cfg.data} (skipped: {skipped})")
    n_records = sum(s["records"] for s in samples)
    echo(f"{n_records} records in {len(samples)} sequences; skipped {skipped or 'none'}")
    return samples, skipped


def add_lora(cfg: TrainConfig, model, ckpt: Path):
    """The base model with LoRA adapters: fresh, or the checkpoint's when resuming."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM",
                      layers_to_transform=lora_layer_ids(cfg.lora_layers, model.config.num_hidden_layers))
    if cfg.resume and (ckpt / "adapter_config.json").is_file():
        return PeftModel.from_pretrained(model, str(ckpt), is_trainable=True)
    if cfg.init_adapter:
        if not (Path(cfg.init_adapter) / "adapter_config.json").is_file():
            raise ValueError(f"--init-adapter {cfg.init_adapter}: no adapter_config.json there")
        # peft casts the adapter to the model's compute dtype (a bf16-saved adapter trains in fp32 or bf16)
        return PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
    return get_peft_model(model, lora)


def _prepare(cfg: TrainConfig, accelerator, tokenizer, model, samples: list[dict]) -> _Run:
    """LoRA, the step count, AdamW and the linear warmup schedule, resumed state if any."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    from gpt4tools.llm.hf import pack_head_input

    ckpt = Path(cfg.out_dir) / "checkpoint"
    pack_head_input(model)  # the head's weight is frozen from here on: without it, a copy of it per step
    model = add_lora(cfg, model, ckpt)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_micro_per_epoch = math.ceil(len(samples) / (cfg.micro_batch_size * accelerator.num_processes))
    steps_per_epoch = max(1, n_micro_per_epoch // cfg.gradient_accumulation)
    total_steps = cfg.max_steps or max(1, int(steps_per_epoch * cfg.epochs))
    optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, min(cfg.warmup_steps, total_steps // 10 + 1), total_steps)
    # The scheduler is stepped by hand once per optimizer step: accelerate's wrapper would
    # step it once per process, which runs the schedule N times too fast under DDP.
    model, optimizer = accelerator.prepare(model, optimizer)
    state = _resume_state(cfg, ckpt, optimizer, scheduler, accelerator)
    return _Run(cfg, accelerator, tokenizer, model, samples, trainable, optimizer, scheduler, n_micro_per_epoch,
                total_steps, state)


def _resume_state(cfg: TrainConfig, ckpt: Path, optimizer, scheduler, accelerator) -> dict:
    """Optimizer, scheduler, step and RNG from the checkpoint when resuming; else step 0."""
    import torch

    state = {"step": 0, "micro": 0}
    if cfg.resume and (ckpt / "trainer_state.pt").is_file():
        saved = torch.load(ckpt / "trainer_state.pt", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        torch.set_rng_state(saved["torch_rng"])
        accelerator.print(f"resumed at step {state['step']}")
    return state


def _write_run_config(run: _Run, base_path, skipped: dict[str, int], command: str | None) -> dict:
    """The prompt template beside the adapter, and train_config.json: settings, data, sizes."""
    from gpt4tools.prompt import PromptTemplate

    cfg, samples = run.cfg, run.samples
    PromptTemplate.load(cfg.template).save(run.out)
    resolved = {**dataclasses.asdict(cfg), "command": command, "base_model_path": str(base_path),
                "data_sha256": data_checksum(cfg.data), "samples": len(samples),
                "records": sum(x["records"] for x in samples), "skipped": skipped,
                "dtype_resolved": str(next(run.model.parameters()).dtype).replace("torch.", ""),
                "total_steps": run.total_steps, "processes": run.accelerator.num_processes}
    atomic_write(run.out / "train_config.json", json.dumps(resolved, indent=2))
    return resolved


def _trim_metrics(run: _Run) -> None:
    """Keep in metrics.jsonl only the steps the run starts after: the steps a killed run logged
    past its last checkpoint are run (and logged) again, and would otherwise appear twice."""
    path = run.out / "metrics.jsonl"
    if not run.accelerator.is_main_process or not path.is_file():
        return

    def step_of(line: str) -> float:
        try:
            return json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):  # a line cut by the kill
            return math.inf

    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line.rstrip("\n") + "\n" for line in lines if step_of(line) <= run.state["step"]]
    if kept != lines:
        atomic_write(path, "".join(kept))


def _loop(run: _Run, progress=None) -> None:
    """Optimizer steps up to run.total_steps: log every cfg.log_steps, checkpoint every cfg.save_steps."""
    cfg, accelerator, state = run.cfg, run.accelerator, run.state
    rank, world = accelerator.process_index, accelerator.num_processes
    run.model.train()
    # a resumed run's clock and token count go on from its checkpoint
    run.t_start, window = time.perf_counter() - state.get("seconds", 0.0), []
    run.tokens_seen = state.get("tokens", 0)
    run.kernel_use = _kernel_use()
    first = state["step"]
    while state["step"] < run.total_steps:
        # Deterministic order per pass, so a resumed run sees the same batches.
        epoch = state["micro"] // run.n_micro_per_epoch
        order = list(range(len(run.samples)))
        random.Random(cfg.seed + epoch).shuffle(order)
        order = order[rank::world]
        start = (state["micro"] % run.n_micro_per_epoch) * cfg.micro_batch_size
        for i in range(start, len(order), cfg.micro_batch_size):
            window.append(_micro_step(run, [run.samples[j] for j in order[i: i + cfg.micro_batch_size]]))
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            step = state["step"]
            if cfg.trim_heap:
                _trim_heap(accelerator.device)
            if step % cfg.log_steps == 0 or step == run.total_steps:
                _log_step(run, step, window, progress)
                window = []
            pausing = bool(cfg.process_steps) and step - first >= cfg.process_steps
            stopping = run.stop.requested or pausing
            if step % cfg.save_steps == 0 or step == run.total_steps or stopping:
                state.update(seconds=time.perf_counter() - run.t_start, tokens=run.tokens_seen)
                _save_checkpoint(accelerator, run.model, run.optimizer, run.scheduler, state, run.ckpt)
            if step >= run.total_steps or stopping:
                return


def _micro_step(run: _Run, batch_samples: list[dict]) -> tuple[float, float, int]:
    """Forward and backward on one micro-batch; the optimizer steps when accumulation is complete.
    Returns (loss, seconds, tokens) for the log."""
    import torch

    accelerator = run.accelerator
    batch = collate(batch_samples, run.tokenizer.pad_token_id, run.cfg.pad_to_multiple)
    batch = {k: (v.to(accelerator.device) if hasattr(v, "to") else v) for k, v in batch.items()}
    t0 = time.perf_counter()
    with accelerator.accumulate(run.model):
        try:
            with _half_precision_adapters(run):
                loss, _ = loss_on_tail(run.model, batch)
            accelerator.backward(loss)
        except torch.OutOfMemoryError as e:
            raise MemoryError(f"out of memory at sequence length {batch['input_ids'].shape[1]}: lower "
                              "--micro-batch-size or --cutoff-len, or add --gradient-checkpointing") from e
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(run.trainable, run.cfg.max_grad_norm)
        run.optimizer.step()
        if accelerator.sync_gradients:
            run.scheduler.step()
        run.optimizer.zero_grad()
    run.state["micro"] += 1
    tokens = int(batch["attention_mask"].sum())
    run.tokens_seen += tokens
    return float(loss.detach()), time.perf_counter() - t0, tokens


def _half_precision_adapters(run: _Run):
    """The forward pass under torch.autocast in the base model's bf16, with peft's cast of each
    adapted layer's input to the adapter's fp32 turned off. peft keeps LoRA weights in fp32 beside a
    bf16 base: every adapted layer then casts its (tokens x 4864) input up, multiplies in fp32, adds
    in fp32 and casts back, which on CPU cost more than the base's bf16 matmuls (torch.profiler).
    Under autocast the adapter's matmuls run in bf16 from fp32 master weights (gradients and AdamW
    stay fp32). A no-op with cfg.autocast off or a base in fp32 or fp16."""
    import torch
    from peft.helpers import disable_input_dtype_casting

    model = run.accelerator.unwrap_model(run.model)
    dtype = next(p.dtype for p in model.parameters() if not p.requires_grad)
    if not run.cfg.autocast or dtype != torch.bfloat16:  # fp16 would want a gradient scaler: left as it was
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(run.accelerator.device.type, dtype=dtype))
    stack.enter_context(disable_input_dtype_casting(model))
    return stack


def _trim_heap(device) -> None:
    """Hand the heap's free pages back to the OS after each CPU optimizer step (glibc malloc_trim).
    Every step allocates and frees activations of another sequence length, and glibc keeps what was
    freed: in the default's from-scratch retrain (scripts/retrain_default.sh) the process held
    17.6 GB by step 135 without this, 3.2 GB (between steps) at step 54 with it. The pages handed
    back are faulted in again by the next step (~1.8 M faults, ~3 s of kernel time a step): ~9 % slower
    than --no-trim-heap (docs/benchmark.md, "Where a CPU step's time goes"). A no-op off glibc and on GPUs."""
    if getattr(device, "type", str(device)) != "cpu" or _LIBC is None:
        return
    _LIBC.malloc_trim(0)


def _rss_mb() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss >> 20
    except ImportError:  # psutil comes with gradio; training without it just logs no memory
        return 0


def _kernel_use() -> tuple[float, int]:
    """The process's system CPU seconds and minor page faults so far (0s where there is no getrusage)."""
    try:
        import resource

        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_stime, u.ru_minflt
    except (ImportError, OSError):
        return 0.0, 0


def _log_step(run: _Run, step: int, window: list[tuple[float, float, int]], progress=None) -> None:
    """metrics.jsonl, tensorboard and the console (main process), and the progress callback."""
    accelerator = run.accelerator
    seconds = sum(w[1] for w in window)
    # Kernel time and page faults since the last log: a CPU run that slows as it ages shows it here.
    sys_s, faults = _kernel_use()
    (last_sys, last_faults), run.kernel_use = run.kernel_use, (sys_s, faults)
    m = {"step": step, "total": run.total_steps, "loss": sum(w[0] for w in window) / len(window),
         "lr": run.scheduler.get_last_lr()[0],
         "tokens_per_s": sum(w[2] for w in window) / max(seconds, 1e-9),
         "elapsed_s": round(time.perf_counter() - run.t_start, 1), "rss_mb": _rss_mb(),
         "sys_s": round(sys_s - last_sys, 2), "page_faults": faults - last_faults}
    if accelerator.is_main_process:
        with open(run.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(m) + "\n")
        if run.writer:
            for k in ("loss", "lr", "tokens_per_s"):
                run.writer.add_scalar(f"train/{k}", m[k], step)
        accelerator.print(f"step {step}/{run.total_steps} loss {m['loss']:.4f} lr {m['lr']:.2e} "
                          f"{m['tokens_per_s']:.0f} tok/s {m['rss_mb']} MB sys {m['sys_s']:.1f} s")
    if progress:
        progress(step, run.total_steps, m)


def _save_adapter(run: _Run) -> None:
    """The final adapter (cast to cfg.save_dtype), the tokenizer, and the run's time and tokens."""
    accelerator, out = run.accelerator, run.out
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(run.model).save_pretrained(out)
        if run.cfg.save_dtype != "fp32":
            from gpt4tools.models import cast_adapter

            cast_adapter(out, run.cfg.save_dtype)
        run.tokenizer.save_pretrained(out)
        run.resolved.update(train_seconds=round(time.perf_counter() - run.t_start, 1), train_tokens=run.tokens_seen)
        atomic_write(out / "train_config.json", json.dumps(run.resolved, indent=2))
    if run.writer:
        run.writer.close()


def _save_checkpoint(accelerator, model, optimizer, scheduler, state, ckpt: Path) -> None:
    """Save into checkpoint-<step>/, then point the `checkpoint` link at it in one rename: at every
    moment `checkpoint` is a whole checkpoint (the previous one until the swap), whenever a kill comes."""
    import torch

    if not accelerator.is_main_process:
        return
    folder = ckpt.with_name(f"{ckpt.name}-{state['step']}")
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.unwrap_model(model).save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": dict(state),
                "torch_rng": torch.get_rng_state()}, tmp / "trainer_state.pt")
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    if ckpt.is_dir() and not ckpt.is_symlink():  # a run saved by an older version: a plain folder
        os.replace(ckpt, ckpt.with_name(f"{ckpt.name}-old"))
    link = ckpt.with_name(ckpt.name + ".link")
    link.unlink(missing_ok=True)
    link.symlink_to(folder.name)  # relative: the run folder may move
    os.replace(link, ckpt)  # the swap
    for other in ckpt.parent.glob(f"{ckpt.name}-*"):  # earlier checkpoints, stray temporaries
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(out / "tensorboard"))
    except ImportError:
        return None


# -- CLI ----------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m gpt4tools train",
                                 description="LoRA-tune a causal LM on GPT4Tools records (paper defaults). "
                                             "Multi-GPU: accelerate launch -m gpt4tools train ... (or torchrun).")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, (list, tuple)):
            ap.add_argument(flag, nargs="+", default=list(default))
        else:
            ap.add_argument(flag, type=type(default), default=default)
    return ap


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = TrainConfig(**vars(args))
        out = train(cfg, command="python -m gpt4tools train " + " ".join(shlex.quote(a) for a in argv))
    except (ValueError, FileNotFoundError, MemoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingPaused as e:
        print(e, file=sys.stderr)
        return PAUSED
    print(f"adapter saved in {out}")
    return 0
