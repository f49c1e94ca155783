"""The training engine: `stackgan train EXPERIMENT`, under plain python or `torchrun`.

Determinism contract: the batch of step s is the slice [s*B, (s+1)*B) of a permutation seeded
by (seed, epoch); each item's augmentation is seeded by (seed, epoch, index); the noise of step
s is drawn for the whole global batch from a generator seeded by (seed, step) and each rank
takes its slice. A run killed at any point and resumed from its last checkpoint therefore
replays exactly the steps it would have run, and N ranks see the same data and noise as one
process with the same global batch.
"""

import contextlib
import hashlib
import json
import math
import random
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stackgan import checkpoint, distributed, reproducibility
from stackgan.atomic import torch_save, write_bytes
from stackgan.config import config_hash
from stackgan.data.prepared import PreparedSplit, check_prepared
from stackgan.errors import UserError
from stackgan.grids import write_branch_grid
from stackgan.methods import build_method


def _mix(*ints):
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1)[0])


class StepBatches(torch.utils.data.Sampler):
    """Yields, for steps [start, end), this rank's (epoch, index) pairs of the global batch."""

    def __init__(self, n, global_batch, rank, world, seed, start, end):
        if global_batch % world:
            raise UserError(f"global batch {global_batch} is not divisible by {world} processes; change train.batch_size")
        self.n, self.gb, self.rank, self.world, self.seed = n, global_batch, rank, world, seed
        self.per_rank = global_batch // world
        self.iters_per_epoch = n // global_batch  # drop_last, as the reference loaders
        if self.iters_per_epoch == 0:
            raise UserError(f"dataset has {n} items, fewer than one batch of {global_batch}; lower train.batch_size")
        self.start, self.end = start, end

    def permutation(self, epoch):
        return np.random.default_rng(_mix(self.seed, epoch)).permutation(self.n)

    def __len__(self):
        return self.end - self.start

    def __iter__(self):
        cached = (None, None)
        for step in range(self.start, self.end):
            epoch, pos = divmod(step, self.iters_per_epoch)
            if cached[0] != epoch:
                cached = (epoch, self.permutation(epoch))
            batch = cached[1][pos * self.gb:(pos + 1) * self.gb]
            mine = batch[self.rank * self.per_rank:(self.rank + 1) * self.per_rank]
            yield [(epoch, int(i)) for i in mine]


class EpochItems(torch.utils.data.Dataset):
    """Adapts an epoch-aware dataset to (epoch, index) keys so worker processes stay in step."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


def step_noise(method, global_batch, seed, step, rank, world, device):
    """Noise for the global batch of `step`; this rank's slice of it."""
    gen = torch.Generator().manual_seed(_mix(seed, step, 7))
    per = global_batch // world
    return {k: v[rank * per:(rank + 1) * per].to(device) for k, v in method.draw_noise(gen, global_batch).items()}


def training_code_fingerprint():
    """sha256 over the sources a training run executes (the train stage's code dependencies)."""
    root = Path(__file__).resolve().parent
    files = sorted(p for d in ("models", "losses", "methods", "data") for p in (root / d).glob("*.py"))
    h = hashlib.sha256()
    for path in files + [root / "train.py"]:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def total_steps(cfg, n_items):
    """train.max_steps when given (config validation makes it positive), else the epochs' steps."""
    t = cfg["train"]
    if t.get("max_steps") is not None:
        return int(t["max_steps"])
    if "joint_steps" in t:  # SGAN: independent phase, then joint phase
        return int(t["independent_steps"]) + int(t["joint_steps"])
    return int(t["max_epoch"]) * (n_items // t["batch_size"])


def to_device(batch, device, memory_format=torch.contiguous_format):
    def move(t):
        t = t.to(device, non_blocking=True)
        return t.contiguous(memory_format=memory_format) if t.dim() == 4 else t

    return {k: [move(t) for t in v] if isinstance(v, list) else move(v) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def apply_gpu_switches(cfg, method, ctx):
    """channels_last and SyncBatchNorm, off by default (fp32, per-rank BN: the faithful setting)."""
    t = cfg["train"]
    if t.get("sync_bn") and ctx.world > 1:
        if ctx.device.type != "cuda":
            raise UserError("train.sync_bn needs CUDA (SyncBatchNorm has no CPU kernel); set it false on CPU")
        for name, net in method.nets.items():
            method.nets[name] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if t.get("channels_last"):
        for net in method.nets.values():
            net.to(memory_format=torch.channels_last)


def autocast(cfg, ctx):
    """bf16 autocast when train.amp is set; BCE and KL are kept in fp32 (stackgan/losses/common.py)."""
    return torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16, enabled=bool(cfg["train"].get("amp")))


def _live_logger(cfg, ctx, start):
    if not ctx.is_main:
        return contextlib.nullcontext(None)
    from dvclive import Live

    if start > 0:
        trim_live_log(cfg["paths"]["live"], start)
    return Live(cfg["paths"]["live"], resume=start > 0, save_dvc_exp=False, dvcyaml=None)


def trim_live_log(live_dir, step):
    """Drop the rows logged after `step` from DVCLive's metric files. A run killed after logging
    past its last checkpoint replays those steps when it resumes from it; each step must appear
    once, with the value the replay gives. A row cut short by the kill goes too."""
    for tsv in sorted((Path(live_dir) / "plots" / "metrics").rglob("*.tsv")):
        lines = tsv.read_bytes().splitlines(keepends=True)
        names = lines[0].rstrip(b"\r\n").split(b"\t") if lines else []
        if not lines or not lines[0].endswith(b"\n") or b"step" not in names:
            tsv.unlink()  # not even a whole header: DVCLive starts the file afresh
            continue
        kept = [row for row in lines[1:] if _logged_step(row, names) <= step]
        if len(kept) < len(lines) - 1:
            write_bytes(tsv, b"".join(lines[:1] + kept))


def _logged_step(row, names):
    """The step of a whole DVCLive row; infinity for one cut short."""
    cells = row.rstrip(b"\r\n").split(b"\t")
    whole = row.endswith(b"\n") and len(cells) == len(names)
    step = cells[names.index(b"step")] if whole else b""
    return int(step) if step.isdigit() else math.inf


def check_text_width(cfg, split):
    """Caption embeddings as wide as the networks' text input, before any step is taken (else
    the mismatch surfaces as a shape error inside the first matrix product)."""
    if "text_dim" not in cfg or not cfg.get("conditional", True) or split.embeddings is None:
        return
    width = split.embeddings.shape[-1]
    if width != cfg["text_dim"]:
        raise UserError(f"{split.dir / 'embeddings.npy'} holds {width}-wide caption embeddings but {cfg['name']} "
                        f"has text_dim {cfg['text_dim']}; set text_dim: {width} for it in params.yaml or prepare "
                        f"the dataset with {cfg['text_dim']}-wide embeddings")


def check_finite(cfg, logs, step, saved):
    """Stop at the first NaN or infinite loss: training on would only write a broken model. The
    logged values are Python floats already, so this adds no device synchronisation."""
    bad = next(((k, v) for k, v in logs.items() if not math.isfinite(v)), None)
    if bad is None:
        return
    kept = f"the last good checkpoint (step {saved}) is kept" if saved else "no checkpoint was written"
    raise UserError(f"training {cfg['name']} produced a non-finite loss at step {step} ({bad[0]} = {bad[1]}); "
                    f"{kept} and no model.pt was written; lower optim.lr_g / optim.lr_d (or turn train.amp off) "
                    "or check the prepared data, then train again")


def train(cfg, device_pref="auto", stop_after=None, verify=False):
    """Train to cfg's length (or stop after `stop_after` steps, for tests); returns the final step.
    `verify` checks every prepared file's sha256 first (sizes are always checked)."""
    ctx = distributed.setup(device_pref)
    try:
        return _train(cfg, ctx, stop_after, verify)
    finally:
        distributed.teardown()


def _train(cfg, ctx, stop_after, verify):
    prepared = Path(cfg["data"]["prepared_dir"])
    if not (prepared / "manifest.json").exists():
        ds = cfg["data"]["name"]
        raise UserError(f"{prepared} holds no prepared dataset; run `stackgan fetch {ds}` and "
                        f"`stackgan prepare {ds}` (or `dvc repro`) first")
    if verify:
        check_prepared(prepared)
    split = PreparedSplit(prepared, "train")
    check_text_width(cfg, split)
    # torch's seed gives the network initialisation; numpy's and Python's global generators are
    # unused but saved in checkpoints, so they are seeded too (byte-reproducible checkpoints).
    torch.manual_seed(cfg["train"]["seed"])
    np.random.seed(cfg["train"]["seed"])
    random.seed(cfg["train"]["seed"])
    method = build_method(cfg, ctx.device, distributed.make_grad_sync(ctx))
    apply_gpu_switches(cfg, method, ctx)
    for net in method.nets.values():
        distributed.broadcast_module(net)
    dataset = method.make_dataset(split)
    t = cfg["train"]
    end = final = total_steps(cfg, len(dataset))
    # The prepared data and the training code are part of what a checkpoint was trained on:
    # regenerated data or changed code (which is also when DVC re-runs this stage) starts fresh.
    cfg["data"]["fingerprint"] = hashlib.sha256(json.dumps(split.manifest["files"], sort_keys=True).encode()).hexdigest()
    cfg["code_fingerprint"] = training_code_fingerprint()
    cfg["reproducibility"] = reproducibility.contract()  # a checkpoint from other CPU kernels is not resumed
    h = config_hash(cfg)  # after build_method: a Stage-II method records its parent's hash in cfg
    ckpt_dir = Path(cfg["paths"]["checkpoint"])
    state, why = checkpoint.load(ckpt_dir, h)
    start = 0
    if state is not None and state["step"] <= end:
        method.load_state_dict(state["method"])
        checkpoint.set_rng_state(state["rng"])
        start = state["step"]
    elif state is not None:
        why = f"checkpoint at step {state['step']} is past the configured end {end}; starting fresh"
    if ctx.is_main:
        print(f"[train {cfg['name']}] {why}; steps {start} -> {end}, global batch {t['batch_size']}, "
              f"{ctx.world} process(es) on {ctx.device}", flush=True)
    if stop_after is not None:
        end = min(end, start + stop_after)
    saved = start  # the step of this run's newest checkpoint on disk (0: none)

    sampler = StepBatches(len(dataset), t["batch_size"], ctx.rank, ctx.world, t["seed"], start, end)
    loader = torch.utils.data.DataLoader(
        EpochItems(dataset), batch_sampler=sampler, num_workers=t.get("workers", 0),
        pin_memory=ctx.device.type == "cuda", persistent_workers=False,
    )
    grid_batch = None if hasattr(method, "write_grid") else fixed_grid_batch(cfg, prepared)
    fmt = torch.channels_last if t.get("channels_last") else torch.contiguous_format
    step = start
    # The bar is closed on an error too, so the error's line starts a line of its own.
    bar = tqdm(total=end - start, initial=0, desc=cfg["name"], disable=not ctx.is_main, mininterval=2)
    with _live_logger(cfg, ctx, start) as live, bar:
        for batch in loader:
            epoch = step // sampler.iters_per_epoch
            method.on_epoch(epoch)
            torch.manual_seed(_mix(t["seed"], step, ctx.rank, 11))
            noise = step_noise(method, t["batch_size"], t["seed"], step, ctx.rank, ctx.world, ctx.device)
            with autocast(cfg, ctx):
                logs = method.train_step(to_device(batch, ctx.device, fmt), noise, step)
            step += 1
            check_finite(cfg, logs, step, saved)
            bar.update(1)
            # Only values that the same run reproduces go into the DVC-tracked log (no wall-clock
            # speed: tqdm shows it), each at the step that produced it: the cadence and the run's
            # last step, not where a --stop-after segment ends, so a run in pieces logs the same rows.
            if live is not None and (step % t["log_every"] == 0 or step == final):
                live.step = step
                for k, v in logs.items():
                    live.log_metric(f"train/{k}", v)
                live.next_step()
            if step % t["checkpoint_every"] == 0 and step < end:
                if ctx.is_main:
                    checkpoint.save(ckpt_dir, method, step, h)
                saved = step
            if ctx.is_main and step % t["grid_every"] == 0:
                write_grid(method, grid_batch, Path(cfg["paths"]["grids"]) / f"step{step:07d}.png")
    if ctx.is_main:
        checkpoint.save(ckpt_dir, method, step, h)
        if step == final:
            write_grid(method, grid_batch, Path(cfg["paths"]["grids"]) / "final.png")
            save_model(cfg, method, step, h)
    distributed.barrier()
    return step


def write_grid(method, grid_batch, path):
    """Text-conditional families: all branches per caption; class-conditional ones draw their own."""
    if grid_batch is None:
        method.write_grid(path)
    else:
        write_branch_grid(method, grid_batch, path)


def save_model(cfg, method, step, cfg_hash):
    g = method.eval_generator()
    torch_save({"family": cfg["family"], "config": cfg, "config_hash": cfg_hash, "step": step,
                "generator": g.state_dict(), **method.export_extra()}, cfg["paths"]["model"])


def fixed_grid_batch(cfg, prepared, rows=8):
    """Captions (and embeddings) of test images spread over the split: the same rows in every
    grid. Unconditional datasets (a single train split) show fixed noise rows."""
    split = PreparedSplit(prepared, "test" if (Path(prepared) / "test").is_dir() else "train")
    n = min(rows, len(split))
    idx = np.linspace(0, len(split) - 1, n).astype(int)
    batch = {"captions": [split.captions[i][0] if split.captions else split.keys[i] for i in idx]}
    if cfg.get("conditional", True) and split.embeddings is not None:
        batch["emb"] = torch.from_numpy(np.ascontiguousarray(split.embeddings[idx, 0]))
    batch["z"] = torch.randn(n, cfg["z_dim"], generator=torch.Generator().manual_seed(cfg["eval"]["seed"]))
    return batch
