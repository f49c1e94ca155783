"""The one prepared GPU check (issue 14): every CUDA path of the harness, timed, in one bounded run.

    bash bench/gpu_check.sh                        # CUDA, paper configs, <= 8 min: results/bench/<gpu>.json
    bash bench/gpu_check.sh --device cpu --tiny    # the same code paths on CPU in about two minutes (CI)

Parts, each in a child process of its own with a time cap (a crash, hang or CUDA error in one is
recorded in the JSON and the next part runs), in this order:
- train:<experiment>: one training iteration (`method.train_step` on a synthetic batch of the
  config's global batch) of cub-v2, cub-v1-s1-64 (v1 Stage-I 64), cub-v1 (Stage-II, on a parent
  model.pt of random weights) and cifar10-sgan (on a random-weight encoder.pt) at their paper
  configs, in the eager MODES; warm-up excluded, CUDA-synchronised around the timed loop;
- torchrun: `torchrun --nproc_per_node 1 stackgan train synthetic-v2` for a few steps in a scratch
  project, then again, resuming from its checkpoint; and a one-rank NCCL (gloo on CPU) process
  group running the engine's parameter broadcast;
- eval: evaluation sampling (generator forward at the sampling batch) and IS/FID feature
  extraction of the true-architecture extractors with random weights, timed on a few batches and
  extrapolated to the protocols' sample counts;
- tests: `pytest -m gpu` on the test files that have CUDA-marked tests;
- compile:<experiment>: the torch.compile mode, last, because compilation takes the longest.
Each part has a time limit (Plan.caps), cut so that every later part keeps a floor of the budget
(--budget): the run ends in time, and a part that ends early leaves its time to the later ones.

--tiny (CI) shrinks every config (TINY_OVERRIDES: widths, sizes and batch; recorded in the JSON),
times 2 iterations, runs all experiments in one worker per part kind, one thread per process on a
CPU, and compiles only TINY.compiled, with aot_eager (see TINY); everything else runs as on the GPU.
The JSON (schema in stackgan/cost.py load_bench) is rewritten after every part, "complete": false
until the end, so a run killed from outside still leaves what it measured.
"""

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's stackgan, installed or not

EXPERIMENTS = ("cub-v2", "cub-v1-s1-64", "cub-v1", "cifar10-sgan")


@dataclasses.dataclass(frozen=True)
class Mode:
    adam: str
    amp: bool
    channels_last: bool
    compile: bool
    words: str


# "fp32" keeps the numerics of fp32 but not the reference's optimiser arithmetic: fused Adam (one
# kernel per parameter group) is the fastest implementation and the one a fast run would use.
MODES = {
    "reference": Mode("loop", False, False, False, "the reference's loop shape: fp32, eager, single-tensor Adam, "
                                                   "contiguous tensors (the faithful default settings)"),
    "fp32": Mode("fused", False, False, False, "fp32, eager, fused Adam"),
    "bf16-cl": Mode("fused", True, True, False, "bf16 autocast, channels_last networks and batch, fused Adam"),
    "bf16-cl-compile": Mode("fused", True, True, True, "bf16-cl with every network torch.compile'd"),
}
EAGER_MODES = ("reference", "fp32", "bf16-cl")
COMPILE_MODES = ("bf16-cl-compile",)

# Tiny configs: the paper configs with small widths, sizes and batch (v1's are tests/test_v1_method.py's).
_V1_TINY = {"gf_dim": 4, "df_dim": 4, "ef_dim": 8, "z_dim": 16, "r_num": 1, "train": {"batch_size": 2}}
TINY_OVERRIDES = {
    "cub-v2": {"gf_dim": 8, "df_dim": 8, "ef_dim": 8, "r_num": 1, "branch_sizes": [16, 32, 64],
               "train": {"batch_size": 2}},
    "cub-v1-s1-64": {**_V1_TINY, "out_size": 32},
    "cub-v1": {**_V1_TINY, "stage1_size": 32, "out_size": 64},
    "cifar10-sgan": {"width": 0.25, "train": {"batch_size": 4}},
}
TINY_ENCODER_WIDTH = 0.25
# One thread per process in tiny CPU runs, as the tests run: two threads on a 2-core machine that
# also runs anything else spin in OpenMP's barriers and make a step ten times slower.
TINY_CPU_THREADS = 1

SAMPLING = ("cub-v2", "cifar10-sgan")
# (protocol, experiment whose samples it scores)
FEATURES = (("fid30k_test", "cub-v2"), ("is30k_cub-inc", "cub-v2"), ("is50k_imagenet", "cifar10-sgan"))
SAMPLE_BATCH = 100  # stackgan sample's batch
FEATURE_BATCH = 64  # stackgan evaluate's torch-fidelity batch


@dataclasses.dataclass(frozen=True)
class Plan:
    budget_s: float  # the whole run
    caps: dict  # a part kind's time limit (seconds)
    floor_s: float  # the time each part still to run is kept
    grouped: bool  # one worker per part kind (tiny: each process start costs seconds), else per experiment
    warmup: int  # iterations before timing (compilation happens here)
    target_s: float  # the timed loop's length, about
    min_iters: int
    max_iters: int
    sample_batch: int
    feature_batch: int
    feature_batches: int  # timed
    synthetic_images: int  # the torchrun project's dataset
    torchrun_steps: tuple  # --stop-after of the first run, then of the resumed one
    torchrun_batch: int | None  # synthetic-v2's global batch there (None: the ci profile's)
    compile_backend: str  # torch.compile's
    compiled: tuple | None  # the experiments the compile mode runs on (None: all)


FULL = Plan(budget_s=450, caps={"train": 60, "torchrun": 75, "eval": 45, "tests": 90, "compile": 120}, floor_s=15,
            grouped=False, warmup=3, target_s=2.0, min_iters=3, max_iters=200, sample_batch=SAMPLE_BATCH,
            feature_batch=FEATURE_BATCH, feature_batches=5, synthetic_images=160, torchrun_steps=(2, 3),
            torchrun_batch=None, compile_backend="inductor", compiled=None)
# On CPU, inductor takes minutes to compile even the tiny nets, and AOT autograd (aot_eager) half a
# minute for cub-v2 (its discriminators recompile up to dynamo's limit): tiny mode compiles the
# smallest experiment, with aot_eager (dynamo and AOT autograd, no code generation).
TINY = dataclasses.replace(FULL, budget_s=180, caps={"train": 50, "torchrun": 60, "eval": 30, "tests": 30,
                                                     "compile": 30}, floor_s=5,
                           grouped=True, warmup=1, target_s=0.0, min_iters=2, max_iters=2, sample_batch=4,
                           feature_batch=1, feature_batches=1, torchrun_steps=(1, 1), torchrun_batch=4,
                           compile_backend="aot_eager",
                           compiled=("cub-v1-s1-64",))


# -- pure helpers (tests/test_gpu_check.py)

def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def iterations(first_s, plan, left_s):
    """Timed iterations: about plan.target_s of them, within [min_iters, max_iters], fewer when
    less time is left (at least one)."""
    per = max(first_s, 1e-6)
    n = min(plan.max_iters, max(plan.min_iters, math.ceil(plan.target_s / per)))
    return max(1, min(n, int(left_s / per)))


def part_limit(cap, left_s, parts_after, floor_s):
    """A part's time limit: its cap, less what keeps `floor_s` for each part after it (earlier
    parts matter more; time a part leaves unused goes to the later ones)."""
    return max(0.0, min(cap, left_s - parts_after * floor_s))


def resumed_step(log: str):
    """The step a `stackgan train` run says it resumes from, else None."""
    m = re.search(r"resuming from \S+ at step (\d+)", log)
    return int(m.group(1)) if m else None


def speedups(rows):
    """{experiment: {mode: images/s over the reference mode's}} where both were measured."""
    ref = {r["experiment"]: r["images_per_s"] for r in rows if r["mode"] == "reference" and r["images_per_s"]}
    out = {}
    for r in rows:
        base = ref.get(r["experiment"])
        out.setdefault(r["experiment"], {})[r["mode"]] = r["images_per_s"] / base if base and r["images_per_s"] \
            else None
    return out


def _memory(n):
    if n is None:
        return "-"
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def format_table(rows, speedup):
    """experiment x mode: img/s, ms/iter, peak memory, % of bf16 peak, speedup; an error in place."""
    head = f"{'experiment':14s} {'mode':16s} {'img/s':>9s} {'ms/iter':>9s} {'peak mem':>10s} {'%peak':>6s} " \
           f"{'speedup':>7s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        first = f"{r['experiment']:14s} {r['mode']:16s}"
        if r.get("error"):
            lines.append(f"{first} error: {r['error'][:60]}")
            continue
        frac = r.get("bf16_peak_fraction")
        up = speedup.get(r["experiment"], {}).get(r["mode"])
        lines.append(f"{first} {r['images_per_s']:9.1f} {r['iteration_s'] * 1e3:9.2f} "
                     f"{_memory(r.get('peak_memory_bytes')):>10s} {'-' if frac is None else f'{100 * frac:.1f}%':>6s} "
                     f"{'-' if up is None else f'{up:.2f}x':>7s}")
    return "\n".join(lines)


def error_text(err):
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:300]}"


# -- configs and the files they start from (worker side)

def _under(scratch, paths):
    """A config's paths (groups of them included, e.g. `curves`) moved under `scratch`."""
    return {k: _under(scratch, v) for k, v in paths.items()} if isinstance(paths, dict) else str(scratch / paths)


def experiment_cfg(params, name, tiny, scratch):
    """The experiment's paper config (tiny: shrunk), every path under `scratch`, and the trained
    inputs it loads (a Stage-II's parent model.pt, SGAN's encoder.pt) written there with random weights."""
    from stackgan import config as C

    cfg = C.experiment_config(params, name, "paper")
    if tiny:
        cfg = C.deep_merge(cfg, TINY_OVERRIDES[name])
    cfg["paths"] = _under(scratch, cfg["paths"])
    if cfg["family"] == "v1" and cfg["stage"] == 2:
        _write_parent(params, cfg["parent"], tiny, scratch)
    if cfg["family"] == "sgan":
        cfg["encoder"] = str(_write_encoder(params, cfg, tiny, scratch))
    return cfg


def _write_parent(params, name, tiny, scratch):
    """A Stage-I model.pt as `stackgan train` saves it, of freshly initialised networks, where the
    Stage-II finds it (a sibling run folder)."""
    import torch

    from stackgan.config import RunInputs
    from stackgan.methods import build_method
    from stackgan.train import save_model

    cfg = experiment_cfg(params, name, tiny, scratch)
    if not Path(cfg["paths"]["model"]).exists():
        method = build_method(cfg, torch.device("cpu"))
        inputs = RunInputs(data_fingerprint="none: random weights (bench/gpu_check.py)", code_fingerprint="",
                           reproducibility={}, trained_from={})
        save_model(cfg, method, 0, "gpu-check", inputs)


def _write_encoder(params, cfg, tiny, scratch):
    """An encoder.pt with the entries `stackgan encoder` writes (stackgan/encoder.py train_encoder),
    random weights, for the arch, classes and view the SGAN config asks for."""
    import torch

    from stackgan.atomic import torch_save
    from stackgan.encoder import ENCODER_FILE, build_encoder, encoder_config

    path = scratch / "encoders" / cfg["data"]["name"] / ENCODER_FILE
    if path.exists():
        return path
    recipe = encoder_config(params, cfg["data"]["name"], "paper")
    width = TINY_ENCODER_WIDTH if tiny else recipe["width"]
    k = cfg["num_classes"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        encoder = build_encoder(cfg["arch"], k, width)
    payload = {"arch": cfg["arch"], "width": width, "num_classes": k, "class_ids": list(range(k)),
               "view": cfg["view"], "image_mean": torch.full((3, 32, 32), 0.5),
               "state_dict": encoder.state_dict(), "prepared_train": None, "config": recipe,
               "report": {"recipe": "random weights (bench/gpu_check.py)"}}
    torch_save(payload, path)
    return path


# -- the workers

def progress(message):
    """A line in the part's log (the scratch folder's <part>.log, kept with --keep)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Results:
    """JSON lines, one per finished measurement, flushed at once: a killed worker keeps what it measured."""

    def __init__(self, path):
        self.path = Path(path)

    def add(self, section, row):
        with open(self.path, "a") as f:
            f.write(json.dumps({"section": section, "row": row}) + "\n")


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, n):
    _sync(device)
    start = time.perf_counter()
    fn(n)
    _sync(device)
    return time.perf_counter() - start


def _release(device):
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def mode_cfg(cfg, mode):
    """cfg with the train settings of `mode`."""
    m = MODES[mode]
    train = {**cfg["train"], "adam": m.adam, "amp": m.amp, "channels_last": m.channels_last, "compile": m.compile}
    return {**cfg, "train": train}


def iteration_flops(cfg):
    """(FLOPs of one training iteration, None) or (None, why not)."""
    try:
        from stackgan import cost

        return int(cost.iteration_flops(cfg)), None
    except Exception as err:  # recorded: the timings stand without it
        return None, error_text(err)


def time_mode(cfg, mode, device, plan, until):
    """One mode's measurement of `cfg`'s training iteration."""
    import torch

    from stackgan import speed
    from stackgan.methods import build_method
    from stackgan.train import to_device

    m = MODES[mode]
    cfg = mode_cfg(cfg, mode)
    torch.manual_seed(0)
    method = build_method(cfg, device, None)
    fmt = torch.channels_last if m.channels_last else torch.contiguous_format
    if m.channels_last:
        speed.to_channels_last(method.nets)
    speed.set_tf32(cfg["train"]["tf32"])  # off, as in training: fp32 modes are fp32
    if m.compile:
        torch._dynamo.utils.counters.clear()
        speed.compile_nets(method.nets, plan.compile_backend)
    b = cfg["train"]["batch_size"]
    batch = to_device(method.example_batch(b, device), device, fmt)
    noise = {k: v.to(device) for k, v in method.draw_noise(torch.Generator().manual_seed(0), b).items()}
    step, g_steps = 0, []

    def run(n):
        nonlocal step
        for _ in range(n):
            with speed.autocast(device, m.amp):
                logs = method.train_step(batch, noise, step)
            g_steps.extend(float(v) for k, v in logs.items() if k.endswith("/steps"))  # SGAN's adaptive G steps
            step += 1

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    warmup_s = _timed(run, device, plan.warmup)
    n = iterations(_timed(run, device, 1), plan, until - time.time()) if plan.target_s else plan.min_iters
    g_steps.clear()
    total_s = _timed(run, device, n)
    row = {"iteration_s": total_s / n, "images_per_s": b * n / total_s, "iterations": n, "warmup_s": warmup_s,
           "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
           "settings": {k: cfg["train"][k] for k in ("adam", "amp", "channels_last", "compile")},
           "compile_backend": plan.compile_backend if m.compile else None}
    if g_steps:
        row["g_steps_per_iteration"] = sum(g_steps) / n
    if m.compile:
        row["dynamo"] = dynamo_summary()
    return row


def dynamo_summary():
    """What torch.compile made of the networks: graphs, frames, and why it fell back to eager
    (e.g. the recompile limit: every instance of a class shares its forward's cache)."""
    from torch._dynamo.utils import counters

    return {"unique_graphs": counters["stats"].get("unique_graphs", 0), "frames": dict(counters["frames"]),
            "fallbacks": [k.splitlines()[0] for k in {**counters["unimplemented"], **counters["graph_break"]}]}


def train_worker(spec, plan, device, results):
    import torch

    from stackgan import config as C

    params = C.load_params(REPO / "params.yaml")
    scratch = Path(spec["scratch"])
    for name in spec["experiments"]:
        base = {"experiment": name, "batch": None, "flops_per_iteration": None, "error": None}
        try:
            cfg = experiment_cfg(params, name, spec["tiny"], scratch)
        except Exception as err:
            for mode in spec["modes"]:
                results.add("train", {**base, "mode": mode, "error": f"config: {error_text(err)}",
                                      "traceback": traceback.format_exc()[-2000:]})
            continue
        flops, flops_error = iteration_flops(cfg)
        base.update(batch=cfg["train"]["batch_size"], flops_per_iteration=flops, flops_error=flops_error)
        for mode in spec["modes"]:
            row = {**base, "mode": mode}
            if time.time() > spec["until"] - 1:
                row["error"] = "skipped: the part's time was spent"
            else:
                try:
                    row.update(time_mode(cfg, mode, device, plan, spec["until"] - 1))
                except Exception as err:
                    row.update(error=error_text(err), traceback=traceback.format_exc()[-2000:])
                    if mode in COMPILE_MODES:
                        row["dynamo"] = dynamo_summary()
                finally:
                    if mode in COMPILE_MODES:
                        torch._dynamo.reset()
                    _release(device)
            progress(f"{name} {mode}: " + (row["error"] or f"{row['iteration_s'] * 1e3:.1f} ms per iteration"))
            results.add("train", row)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_worker(spec, plan, device, results):
    """A scratch project (ci profile, a small synthetic set), a short torchrun training run, a
    resumed one; then a one-rank process group of the backend the engine picks on this device."""
    import yaml

    from stackgan import config as C
    from stackgan.fetch import fetch
    from stackgan.prepare import prepare
    from stackgan.untrusted import load_torch

    root = Path(spec["scratch"]) / "project"
    root.mkdir(parents=True)
    params = C.load_params(REPO / "params.yaml")
    params["profile"] = "ci"
    params["datasets"]["synthetic"]["num_images"] = plan.synthetic_images
    if plan.torchrun_batch:  # the ci profile's pinned CPU convolutions take seconds per step at its batch
        params["profiles"]["ci"]["overrides"]["v2"]["train"]["batch_size"] = plan.torchrun_batch
    params["profiles"]["ci"]["cpu"]["threads"] = 1  # the CPU only loads data when the run is on a GPU
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    ds = C.dataset_config(params, "synthetic", "ci")
    start = time.perf_counter()
    fetch(ds, root / ds["raw_dir"])
    prepare(ds, root / ds["raw_dir"], root / ds["prepared_dir"], ds["limit"])
    progress(f"synthetic data fetched and prepared: {time.perf_counter() - start:.1f} s")
    out = {"experiment": "synthetic-v2", "profile": "ci", "nproc_per_node": 1,
           "data_s": time.perf_counter() - start, "process_group": _process_group_probe(device), "runs": []}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the parent's PYTHONPATH: this checkout's stackgan
    for stop_after in plan.torchrun_steps:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port",
               str(_free_port()), "-m", "stackgan.cli", "train", "synthetic-v2", "--stop-after", str(stop_after),
               "--device", device.type]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                                  timeout=max(1, spec["until"] - time.time()))
        except subprocess.TimeoutExpired:
            out["runs"].append({"stop_after": stop_after, "rc": None, "seconds": time.perf_counter() - start,
                                "error": "timed out: the part's time was spent"})
            break
        run = {"stop_after": stop_after, "rc": proc.returncode, "seconds": time.perf_counter() - start,
               "resumed_from": resumed_step(proc.stdout)}
        progress(f"torchrun --stop-after {stop_after}: rc {proc.returncode}, {run['seconds']:.1f} s")
        if proc.returncode:
            run["stderr_tail"] = proc.stderr[-2000:]
        out["runs"].append(run)
        if proc.returncode:
            break
    state = root / "runs/ci/synthetic-v2/checkpoint/state.pt"
    out["checkpoint_step"] = load_torch(state, "")["step"] if state.exists() else None
    first = plan.torchrun_steps[0]
    out["resumed"] = (len(out["runs"]) == 2 and out["runs"][1].get("resumed_from") == first
                      and out["checkpoint_step"] == sum(plan.torchrun_steps))
    out["ok"] = all(r["rc"] == 0 for r in out["runs"]) and out["resumed"] and out["process_group"]["error"] is None
    results.add("torchrun", out)


def _process_group_probe(device):
    """With one rank the engine starts no process group (stackgan/distributed.py), so NCCL is
    checked here: a one-rank group of the engine's backend running its parameter broadcast."""
    import torch
    import torch.distributed as dist

    from stackgan.distributed import broadcast_module

    backend = "nccl" if device.type == "cuda" else "gloo"
    out = {"backend": backend, "error": None}
    start = time.perf_counter()
    try:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1,
                                device_id=device if device.type == "cuda" else None)
        net = torch.nn.Linear(8, 8).to(device)
        broadcast_module(net)
        t = torch.ones(4, device=device)
        dist.all_reduce(t)
        dist.barrier()
        out["all_reduce_ok"] = bool(torch.equal(t.cpu(), torch.ones(4)))
        if not out["all_reduce_ok"]:
            out["error"] = "all_reduce over one rank changed the tensor"
    except Exception as err:
        out["error"] = error_text(err)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    out["seconds"] = time.perf_counter() - start
    return out


def _timed_throughput(fn, device, batch, plan, until):
    """images/s of fn(), one batch of `batch` images, after one warm-up call."""
    def run(k):
        for _ in range(k):
            fn()

    run(1)
    timing = dataclasses.replace(plan, min_iters=plan.feature_batches)
    n = iterations(_timed(run, device, 1), timing, until - time.time()) if plan.target_s else plan.feature_batches
    total = _timed(run, device, n)
    return {"batches": n, "seconds_per_batch": total / n, "images_per_s": batch * n / total}


def eval_worker(spec, plan, device, results):
    import torch

    from stackgan import config as C

    params = C.load_params(REPO / "params.yaml")
    scratch = Path(spec["scratch"])
    cfgs = {}
    for name in SAMPLING:
        row = {"experiment": name, "batch": plan.sample_batch, "error": None}
        try:
            cfgs[name] = cfg = experiment_cfg(params, name, spec["tiny"], scratch)
            with torch.no_grad():
                row.update(_time_sampling(cfg, device, plan, spec["until"]))
        except Exception as err:
            row.update(error=error_text(err), traceback=traceback.format_exc()[-2000:])
        _release(device)
        results.add("sampling", row)
    for protocol, name in FEATURES:
        row = {"protocol": protocol, "experiment": name, "batch": plan.feature_batch, "error": None}
        try:
            cfg = cfgs.get(name) or experiment_cfg(params, name, spec["tiny"], scratch)
            with torch.no_grad():
                row.update(_time_features(protocol, cfg, device, plan, spec["until"], scratch))
        except Exception as err:
            row.update(error=error_text(err), traceback=traceback.format_exc()[-2000:])
        _release(device)
        results.add("features", row)


def _time_sampling(cfg, device, plan, until):
    import torch

    from stackgan.grids import to_uint8
    from stackgan.methods import build_method, output_resolution

    b = plan.sample_batch
    method = build_method(cfg, device, None)
    g = method.eval_generator()
    if cfg["family"] == "sgan":
        labels = [i % cfg["num_classes"] for i in range(b)]

        def once():
            g.sample_images(labels, cfg["eval"]["seed"])

        measures = "SGANSampler.sample_images: per-item noise (CPU), G1 -> G0, uint8 images on the host"
    else:
        gen = torch.Generator().manual_seed(0)
        z, emb, eps = (torch.randn(b, d, generator=gen).to(device) for d in (cfg["z_dim"], cfg["text_dim"],
                                                                              cfg["ef_dim"]))

        def once():
            to_uint8(g(z, emb, eps=eps)[0][-1])

        measures = "G(z, emb, eps) on noise already on the device, last branch to uint8 on the host"
    row = _timed_throughput(once, device, b, plan, until)
    n = cfg["eval"]["num_samples"] or 30000  # null: one per test caption, ~30k on CUB (2933 x 10)
    return {**row, "side": output_resolution(cfg), "measures": measures, "eval_images": n,
            "eval_seconds": n / row["images_per_s"], "extrapolated": True}


def _write_random_weights(extractor, path):
    """Random weights of the extractor's true architecture, as the tests make them."""
    from stackgan.atomic import torch_save

    if extractor == "inception-v3-slim":  # the authors' birds model: CUB's 50 test classes and a background logit
        from stackgan.metrics.slim_inception import SlimInceptionNet

        torch_save(SlimInceptionNet(50 + 1).state_dict(), path)  # all-zero weights: the same arithmetic
        return
    sys.path.insert(0, str(REPO / "tests"))
    from inception_fixture import write_random_inception

    write_random_inception(path)


def _time_features(protocol_name, cfg, device, plan, until, scratch):
    """torch-fidelity's extractor of the protocol's ruler, read through the harness's own loader
    (stackgan.metrics.fidelity.extractor), on uint8 batches of the side it is given."""
    import torch

    import stackgan.metrics.slim_inception  # noqa: F401  (registers inception-v3-slim)
    from stackgan.metrics import fidelity
    from stackgan.metrics.protocols import get_protocol
    from stackgan.metrics.rulers import ruler_of
    from stackgan.methods import output_resolution

    protocol = get_protocol(protocol_name)
    ruler = ruler_of(protocol)
    path = scratch / "weights" / f"{ruler.key}.pth"
    if not path.exists():
        _write_random_weights(protocol.extractor, path)
    cuda = device.type == "cuda"
    net = fidelity.extractor(protocol.extractor, protocol.feature_layer, path, "bench/gpu_check.py wrote it", cuda)
    # A preprocessing outside the network (the authors' PIL resize) hands it 299 px images.
    side = 299 if ruler.preprocessing.apply is not None else protocol.resize or output_resolution(cfg)
    b = plan.feature_batch
    x = torch.randint(0, 256, (b, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    row = _timed_throughput(lambda: net(x), device, b, plan, until)
    n = protocol.num_samples
    return {**row, "extractor": protocol.extractor, "layer": protocol.feature_layer, "input_side": side,
            "protocol_images": n, "protocol_seconds": n / row["images_per_s"], "extrapolated": True,
            "measures": "the extractor's forward on uint8 batches already on the device (no image decoding; "
                        "protocols that resize outside the network do it on the CPU, not timed)"}


WORKERS = {"train": train_worker, "torchrun": torchrun_worker, "eval": eval_worker}


def worker_main(spec):
    import torch

    plan = TINY if spec["tiny"] else FULL
    device = torch.device(spec["device"])
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif spec["tiny"]:
        torch.set_num_threads(TINY_CPU_THREADS)
    WORKERS[spec["kind"]](spec, plan, device, Results(spec["result"]))


# -- the parent: parts, limits, the JSON

@dataclasses.dataclass
class Part:
    name: str
    kind: str  # a WORKERS key, or "tests"
    cap: float
    spec: dict = dataclasses.field(default_factory=dict)


def parts_of(experiments, plan):
    """The parts in their order: eager training, torchrun, eval, tests, compile."""
    compiled = [e for e in experiments if plan.compiled is None or e in plan.compiled]

    def train_parts(kind, names, modes):
        groups = [names] if plan.grouped else [[e] for e in names]
        return [Part(f"{kind}:{'+'.join(g)}", "train", plan.caps[kind], {"experiments": g, "modes": list(modes)})
                for g in groups if g]

    return [*train_parts("train", experiments, EAGER_MODES),
            *(Part(k, k, plan.caps[k]) for k in ("torchrun", "eval", "tests")),
            *train_parts("compile", compiled, COMPILE_MODES)]


GPU_MARK = re.compile(r"^\s*(@pytest\.mark\.gpu\b|pytestmark\s*=.*\bpytest\.mark\.gpu\b)", re.MULTILINE)


def gpu_test_files():
    """The test files that mark tests `gpu` (collecting every test module takes longer than they run)."""
    files = (REPO / "tests").glob("test_*.py")
    return sorted(str(p.relative_to(REPO)) for p in files if GPU_MARK.search(p.read_text()))


def run_child(cmd, timeout, log, env):
    """(exit code or None when killed at the timeout, seconds). The child leads a process group
    of its own, killed whole at the end: torchrun ranks and compile workers go with it."""
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        rc = None
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:  # also when this process is interrupted
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return rc, time.perf_counter() - start


def tests_summary(xml_path, cmd, files):
    out = {"command": " ".join(cmd), "files": files, "passed": 0, "failed": 0, "errors": 0, "skipped": 0,
           "failures": [], "error": None}
    if not files:
        out["error"] = "no test file marks tests gpu"
        return out
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        outcome = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), None)
        key = {"failure": "failed", "error": "errors", "skipped": "skipped", None: "passed"}[outcome]
        out[key] += 1
        if key in ("failed", "errors"):
            bad = next(c for c in case if c.tag == outcome)
            out["failures"].append({"test": f"{case.get('classname')}::{case.get('name')}",
                                    "message": (bad.get("message") or "")[:500]})
    return out


def device_info(device):
    import torch

    info = {"type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "tf32": "off in every mode (train.tf32: false, stackgan.speed.set_tf32)",
            "matmul_precision": torch.get_float32_matmul_precision(), "bf16_peak_tflops": None}
    if device.type == "cuda":
        info.update(name=torch.cuda.get_device_name(device), count=torch.cuda.device_count(),
                    capability=".".join(map(str, torch.cuda.get_device_capability(device))))
        try:
            from stackgan import cost

            info["bf16_peak_tflops"] = cost.bf16_peak_tflops(info["name"])
        except Exception as err:
            info["bf16_peak_error"] = error_text(err)
    else:
        info.update(name=_cpu_name(), count=1, threads=torch.get_num_threads())
    return info


def _cpu_name():
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    return "CPU " + (platform.processor() or platform.machine())


def complete_train(rows, parts_run, experiments, plan, batches, peak):
    """Every experiment x mode, in order, each with its batch and fraction of the bf16 peak; a
    missing one carries the error of the part that should have measured it."""
    got = {(r["experiment"], r["mode"]): r for r in rows}
    why = {(e, mode): f"not run: this plan compiles only {', '.join(plan.compiled)}"
           for e in experiments for mode in COMPILE_MODES if plan.compiled is not None and e not in plan.compiled}
    for part, meta in parts_run:
        if part.kind == "train":
            for e in part.spec["experiments"]:
                for mode in part.spec["modes"]:
                    why[e, mode] = meta["error"] or "the part ended without measuring it"
    out = []
    for e in experiments:
        for mode in MODES:
            r = {"iteration_s": None, "images_per_s": None, "flops_per_iteration": None, "peak_memory_bytes": None,
                 "error": why.get((e, mode), "not run yet"), **got.get((e, mode), {"experiment": e, "mode": mode})}
            r["batch"] = r.get("batch") or batches[e]
            ok = peak and r["flops_per_iteration"] and r["iteration_s"]
            r["bf16_peak_fraction"] = r["flops_per_iteration"] / r["iteration_s"] / (peak * 1e12) if ok else None
            out.append(r)
    return out


def parse_args(argv):
    from stackgan.devices import CHOICES

    p = argparse.ArgumentParser(prog="bench/gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", choices=CHOICES, help="default cuda")
    p.add_argument("--tiny", action="store_true", help="shrunk configs, 2 iterations (CI on CPU)")
    p.add_argument("--out", type=Path, help="the JSON (default results/bench/<device>.json; tiny: runs/bench/)")
    p.add_argument("--budget", type=float, help=f"seconds for the whole run (default {FULL.budget_s:.0f}, "
                                                f"tiny {TINY.budget_s:.0f})")
    p.add_argument("--experiments", nargs="+", choices=EXPERIMENTS, default=list(EXPERIMENTS))
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, the torchrun project)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        worker_main(json.loads(args.worker))
        return 0
    from stackgan.devices import resolve_device
    from stackgan.errors import UserError

    try:
        device = resolve_device(args.device)
    except UserError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2
    import torch

    if device.type == "cuda" and device.index is None:  # the workers' set_device and memory stats want one
        device = torch.device("cuda", torch.cuda.current_device())
    elif args.tiny:
        torch.set_num_threads(TINY_CPU_THREADS)  # what device_info records
    plan = TINY if args.tiny else FULL
    budget = args.budget or plan.budget_s
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.time()
    info = device_info(device)
    out = args.out or (REPO / ("runs" if args.tiny else "results") / "bench"
                       / f"{slug(info['name'])}{'-tiny' if args.tiny else ''}.json")
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    run = Run(args, plan, device, scratch)
    try:
        for i, part in enumerate(run.parts):
            left = t0 + budget - time.time()
            run.part(part, part_limit(part.cap, left, len(run.parts) - i - 1, plan.floor_s), budget)
            write_report(out, run, info, started, t0, budget, complete=False)  # kept if this run is killed
    finally:
        if args.keep:
            print(f"[gpu_check] scratch kept: {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    report = write_report(out, run, info, started, t0, budget, complete=True)
    print(summary_text(report))
    print(f"[gpu_check] {out}", file=sys.stderr)
    return 0


class Run:
    """The parts of one check and what they returned."""

    def __init__(self, args, plan, device, scratch):
        from stackgan import config as C

        self.args, self.plan, self.device, self.scratch = args, plan, device, scratch
        self.parts, self.parts_run = parts_of(args.experiments, plan), []
        self.sections = {"train": [], "sampling": [], "features": [], "torchrun": [], "tests": []}
        params = C.load_params(REPO / "params.yaml")
        self.batches = {e: (TINY_OVERRIDES[e]["train"] if args.tiny else
                            C.experiment_config(params, e, "paper")["train"])["batch_size"] for e in args.experiments}
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                    "TORCHINDUCTOR_CACHE_DIR": str(scratch / "inductor"), "TRITON_CACHE_DIR": str(scratch / "triton")}
        if args.tiny and device.type == "cpu":
            self.env["OMP_NUM_THREADS"] = str(TINY_CPU_THREADS)

    def part(self, part, timeout, budget):
        meta = {"part": part.name, "timeout_s": round(timeout, 1), "rc": None, "seconds": 0.0, "error": None}
        self.parts_run.append((part, meta))
        if timeout < 3:
            meta["error"] = f"skipped: the time budget ({budget:.0f} s) was spent"
        else:
            log = self.scratch / f"{slug(part.name)}.log"
            rc, secs = self._tests(timeout, log) if part.kind == "tests" else self._worker(part, timeout, log)
            meta.update(rc=rc, seconds=round(secs, 1))
            if rc is None:
                meta["error"] = f"timed out after {timeout:.0f} s (killed)"
            elif rc != 0 and part.kind != "tests":  # pytest's own code is in its summary
                text = log.read_text(errors="replace") if log.exists() else ""
                meta["error"] = f"exited with code {rc}: {(text.strip().splitlines() or [''])[-1][:300]}"
                meta["log_tail"] = text[-3000:]
        print(f"[gpu_check] {part.name}: {meta['seconds']:.1f} s" + (f" ({meta['error']})" if meta["error"] else ""),
              file=sys.stderr, flush=True)

    def _worker(self, part, timeout, log):
        result = self.scratch / f"{slug(part.name)}.jsonl"
        spec = {**part.spec, "kind": part.kind, "device": str(self.device), "tiny": self.args.tiny,
                "until": time.time() + timeout - 2, "result": str(result), "scratch": str(self.scratch)}
        rc, secs = run_child([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                             timeout, log, self.env)
        if result.exists():
            for line in result.read_text().splitlines():
                item = json.loads(line)
                self.sections[item["section"]].append(item["row"])
        return rc, secs

    def _tests(self, timeout, log):
        files = gpu_test_files()
        xml = self.scratch / "tests.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
        rc, secs = run_child([*cmd, f"--junitxml={xml}"], timeout, log, self.env) if files else (0, 0.0)
        try:
            summary = tests_summary(xml, cmd, files)
        except (OSError, ET.ParseError) as err:
            summary = {"command": " ".join(cmd), "files": files,
                       "error": "timed out" if rc is None else f"pytest exited with code {rc}: {error_text(err)}",
                       "output_tail": log.read_text(errors="replace")[-3000:] if log.exists() else ""}
        self.sections["tests"].append({**summary, "rc": rc, "seconds": secs})
        return rc, secs

    def error_of(self, name):
        return next((m["error"] or "the part wrote no result" for p, m in self.parts_run if p.name == name),
                    "not run yet")


def write_report(path, run, info, started, t0, budget, complete):
    from stackgan.atomic import write_json

    train = complete_train(run.sections["train"], run.parts_run, run.args.experiments, run.plan, run.batches,
                           info["bf16_peak_tflops"])
    sections = run.sections
    report = {"schema": 1, "created": started.isoformat(timespec="seconds"), "complete": complete,
              "tiny": run.args.tiny, "budget_s": budget, "wall_s": round(time.time() - t0, 1), "device": info,
              "modes": {k: v.words for k, v in MODES.items()},
              "configs": {e: {"profile": "paper", "batch": run.batches[e],
                              "tiny_overrides": TINY_OVERRIDES[e] if run.args.tiny else None}
                          for e in run.args.experiments},
              "compile_backend": run.plan.compile_backend, "train": train, "speedup": speedups(train),
              "torchrun": sections["torchrun"][0] if sections["torchrun"] else
              {"ok": False, "resumed": False, "error": run.error_of("torchrun")},
              "sampling": sections["sampling"], "features": sections["features"],
              "tests": sections["tests"][0] if sections["tests"] else {"error": run.error_of("tests")},
              "parts": [meta for _, meta in run.parts_run]}
    write_json(path, report)
    return report


def summary_text(report):
    lines = [f"{report['device']['name']} (torch {report['device']['torch']}, CUDA {report['device']['cuda']}); "
             f"{'tiny configs' if report['tiny'] else 'paper configs'}, {report['wall_s']:.0f} s",
             format_table(report["train"], report["speedup"])]
    t = report["torchrun"]
    runs, group = t.get("runs", []), t.get("process_group", {})
    resumed = runs[1].get("resumed_from") if len(runs) > 1 else None
    lines.append(f"torchrun: {'ok' if t.get('ok') else 'FAILED'} (resumed from step {resumed}, checkpoint at step "
                 f"{t.get('checkpoint_step')}; {group.get('backend')} group: {group.get('error') or 'ok'})"
                 + (f" {t['error']}" if t.get("error") else ""))
    for s in report["sampling"]:
        lines.append(f"sampling {s['experiment']}: " + (f"error: {s['error']}" if s["error"] else
                                                        f"{s['images_per_s']:.1f} img/s at batch {s['batch']}"))
    for f in report["features"]:
        lines.append(f"features {f['protocol']}: " + (f"error: {f['error']}" if f["error"] else
                                                      f"{f['images_per_s']:.1f} img/s, {f['protocol_seconds']:.0f} s "
                                                      f"for {f['protocol_images']} images (extrapolated)"))
    tests = report["tests"]
    lines.append("tests -m gpu: " + (f"error: {tests['error']}" if tests.get("error") else
                                     f"{tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
                                     f"{tests['skipped']} skipped"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
