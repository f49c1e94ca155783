"""The training engine: `stackgan train EXPERIMENT`, under plain python or `torchrun`.

Determinism contract: the batch of step s is the slice [s*B, (s+1)*B) of a permutation seeded
by (seed, epoch); each item's augmentation is seeded by (seed, epoch, index); the noise of step
s is drawn for the whole global batch from a generator seeded by (seed, step) and each rank
takes its slice. A run killed at any point and resumed from its last checkpoint therefore
replays exactly the steps it would have run, and N ranks see the same data and noise as one
process with the same global batch.
"""

import contextlib
import math
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from stackgan import checkpoint, code_graph, distributed, reproducibility, seeding, speed
from stackgan.atomic import torch_save, write_bytes
from stackgan.config import RunInputs, run_hash
from stackgan.data.prepared import PreparedSplit, check_prepared
from stackgan.errors import UserError
from stackgan.hashing import sha256_file, sha256_json
from stackgan.methods import build_method, family

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
        return seeding.epoch_permutation_rng(self.seed, epoch).permutation(self.n)

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
    gen = seeding.step_noise_generator(seed, step)
    per = global_batch // world
    return {k: v[rank * per:(rank + 1) * per].to(device) for k, v in method.draw_noise(gen, global_batch).items()}


def training_code_fingerprint():
    """sha256 over the sources a training run executes: this module's imports, transitively
    (the train stage's code dependencies in dvc.yaml)."""
    root = Path(__file__).resolve().parent.parent
    return sha256_json({path: sha256_file(root / path) for path in code_graph.sources(__name__)})


def total_steps(cfg, n_items):
    """train.max_steps when given (config validation makes it positive), else the family's own
    run length (epochs, or SGAN's two phases)."""
    max_steps = cfg["train"]["max_steps"]
    return int(max_steps) if max_steps is not None else family(cfg["family"]).default_steps(cfg, n_items)


def to_device(batch, device, memory_format=torch.contiguous_format):
    def move(t):
        t = t.to(device, non_blocking=True)
        return t.contiguous(memory_format=memory_format) if t.dim() == 4 else t

    return {k: [move(t) for t in v] if isinstance(v, list) else move(v) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def apply_gpu_switches(t, method, ctx):
    """TF32, SyncBatchNorm, channels_last and torch.compile, each off by default (stackgan/speed.py)."""
    if t.sync_bn and ctx.world > 1 and ctx.device.type != "cuda":
        raise UserError("train.sync_bn needs CUDA (SyncBatchNorm has no CPU kernel); set it false on CPU")
    speed.set_tf32(t.tf32)
    speed.apply(method.nets, t)


def _live_logger(live_dir, ctx, start):
    if not ctx.is_main:
        return contextlib.nullcontext(None)
    from dvclive import Live

    if start > 0:
        trim_live_log(live_dir, start)
    return Live(live_dir, resume=start > 0, save_dvc_exp=False, dvcyaml=None)


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


class LossLog:
    """The losses of the steps since the last read, kept as the method returned them (0-d
    tensors): reading them forces a device synchronisation, so they are read in one go on log,
    checkpoint and grid steps and at the end, and the first non-finite one stops the run."""

    def __init__(self, name):
        self.name, self.pending = name, []

    def add(self, step, logs):
        self.pending.append((step, logs))

    def read(self, saved):
        """{step: {name: float}} of the pending steps; stops at the first NaN or infinite loss."""
        values = {}
        for step, logs in self.pending:
            values[step] = {k: float(v) for k, v in logs.items()}
            bad = next(((k, v) for k, v in values[step].items() if not math.isfinite(v)), None)
            if bad is not None:
                kept = f"the last good checkpoint (step {saved}) is kept" if saved else "no checkpoint was written"
                raise UserError(f"training {self.name} produced a non-finite loss at step {step} "
                                f"({bad[0]} = {bad[1]}); {kept} and no model.pt was written; lower optim.lr_g / "
                                "optim.lr_d (or turn train.amp off) or check the prepared data, then train again")
        self.pending = []
        return values


def train(cfg, device_pref="auto", stop_after=None, verify=False):
    """Train to cfg's length (or stop after `stop_after` steps, for tests); returns the final step.
    `verify` checks every prepared file's sha256 first (sizes are always checked)."""
    ctx = distributed.setup(device_pref)
    try:
        return _train(cfg, ctx, stop_after, verify)
    finally:
        distributed.teardown()


def _train(cfg, ctx, stop_after, verify):
    c = family(cfg["family"]).Config.of(cfg)
    t = c.train
    prepared = Path(c.data["prepared_dir"])
    if not (prepared / "manifest.json").exists():
        ds = c.data["name"]
        raise UserError(f"{prepared} holds no prepared dataset; run `stackgan fetch {ds}` and "
                        f"`stackgan prepare {ds}` (or `dvc repro`) first")
    if verify:
        check_prepared(prepared)
    split = PreparedSplit(prepared, "train")
    seeding.seed_globals(t.seed)
    method = build_method(cfg, ctx.device, distributed.make_grad_sync(ctx))
    apply_gpu_switches(t, method, ctx)
    for net in method.nets.values():
        distributed.broadcast_module(net)
    dataset = method.make_dataset(split)
    end = final = total_steps(cfg, len(dataset))
    # Regenerated data, changed training code (which is also when DVC re-runs this stage), other
    # CPU kernels or a changed parent model start the run fresh.
    inputs = RunInputs(data_fingerprint=sha256_json(split.manifest["files"]),
                       code_fingerprint=training_code_fingerprint(),
                       reproducibility=reproducibility.contract(), trained_from=method.trained_from())
    h = run_hash(cfg, inputs)
    ckpt_dir = Path(c.paths["checkpoint"])
    state, why = checkpoint.load(ckpt_dir, h)
    start = 0
    if state is not None and state["step"] <= end:
        method.load_state_dict(state["method"])
        checkpoint.set_rng_state(state["rng"])
        start = state["step"]
    elif state is not None:
        why = f"checkpoint at step {state['step']} is past the configured end {end}; starting fresh"
    if ctx.is_main:
        print(f"[train {c.name}] {why}; steps {start} -> {end}, global batch {t.batch_size}, "
              f"{ctx.world} process(es) on {ctx.device}", flush=True)
    if stop_after is not None:
        end = min(end, start + stop_after)
    saved = start  # the step of this run's newest checkpoint on disk (0: none)
    if ctx.is_main:
        drop_snapshots_after(c.paths["snapshots"], start)

    sampler = StepBatches(len(dataset), t.batch_size, ctx.rank, ctx.world, t.seed, start, end)
    # One pass over a sampler of every remaining step: the workers live for the whole run.
    loader = torch.utils.data.DataLoader(
        EpochItems(dataset), batch_sampler=sampler, num_workers=t.workers, pin_memory=ctx.device.type == "cuda")
    write_grid = method.progress_grid(prepared)
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    losses = LossLog(c.name)
    step = start
    # The bar is closed on an error too, so the error's line starts a line of its own.
    bar = tqdm(total=end - start, initial=0, desc=c.name, disable=not ctx.is_main, mininterval=2)
    with _live_logger(c.paths["live"], ctx, start) as live, bar:
        for batch in loader:
            epoch = step // sampler.iters_per_epoch
            method.on_epoch(epoch)
            torch.manual_seed(seeding.step_torch_seed(t.seed, step, ctx.rank))
            noise = step_noise(method, t.batch_size, t.seed, step, ctx.rank, ctx.world, ctx.device)
            batch = dataset.finish_on_device(to_device(batch, ctx.device, fmt), fmt)
            with speed.autocast(ctx.device, t.amp):
                logs = method.train_step(batch, noise, step)
            step += 1
            losses.add(step, logs)
            bar.update(1)
            # Only values that the same run reproduces go into the DVC-tracked log (no wall-clock
            # speed: tqdm shows it), each at the step that produced it: the cadence and the run's
            # last step, not where a --stop-after segment ends, so a run in pieces logs the same rows.
            log_step = step % t.log_every == 0 or step == final
            save_step = step % t.checkpoint_every == 0 and step < end
            grid_step = ctx.is_main and step % t.grid_every == 0
            if log_step or save_step or grid_step:
                values = losses.read(saved)[step]
                if live is not None and log_step:
                    live.step = step
                    for k, v in values.items():
                        live.log_metric(f"train/{k}", v)
                    live.next_step()
            # Before the checkpoint of the same step, which a resumed run starts after. The last
            # step's snapshot is model.pt itself.
            if ctx.is_main and t.eval_every and step % t.eval_every == 0 and step < final:
                save_model(cfg, method, step, h, inputs, Path(c.paths["snapshots"]) / snapshot_name(step))
            if save_step:
                if ctx.is_main:
                    checkpoint.save(ckpt_dir, method, step, h)
                saved = step
            if grid_step:
                write_grid(Path(c.paths["grids"]) / f"step{step:07d}.png")
    losses.read(saved)
    if ctx.is_main:
        checkpoint.save(ckpt_dir, method, step, h)
        if step == final:
            write_grid(Path(c.paths["grids"]) / "final.png")
            save_model(cfg, method, step, h, inputs)
    distributed.barrier()
    return step


def snapshot_name(step):
    return f"step{step:07d}.pt"


def drop_snapshots_after(folder, step):
    """Remove this command's snapshots of steps after `step` (an earlier run's, or ones past the
    checkpoint a killed run resumes from), which the resumed run writes again; nothing else."""
    Path(folder).mkdir(parents=True, exist_ok=True)  # a DVC output even when train.eval_every is off
    for path in Path(folder).glob("step*.pt"):
        digits = path.name[len("step"):-len(".pt")]
        if digits.isdigit() and path.name == snapshot_name(int(digits)) and int(digits) > step:
            path.unlink()


def save_model(cfg, method, step, hash_, inputs, path=None):
    """model.pt (or, with `path`, a snapshot in its format: what `stackgan curves` scores)."""
    g = method.eval_generator()
    torch_save({"family": cfg["family"], "config": cfg, "config_hash": hash_, "trained_on": asdict(inputs),
                "step": step, "generator": g.state_dict(), **method.export_extra()}, path or cfg["paths"]["model"])
