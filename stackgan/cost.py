"""What a training run costs: its steps, images and FLOPs, and its GPU-hours from a bench file's
measured throughput (`stackgan describe EXPERIMENT --cost`, `stackgan describe --table N --cost`).

FLOPs are what torch.utils.flop_counter.FlopCounterMode counts (matrix products and convolutions,
forward and backward; element-wise work, normalisation and the optimisers' updates count nothing)
over one real training iteration: the family's own train_step on its example batch, run on the
meta device, where tensors have shapes but no data, so a paper-sized iteration costs no memory and
no arithmetic. Without a bench file the time is the FLOPs at a GPU's dense bf16 peak: a lower bound.
"""

import copy
import csv
import functools
import json
import math
import tempfile
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from stackgan.errors import UserError

META = torch.device("meta")

# Dense bf16 tensor-core peaks (datasheets, TFLOPS) keyed by a substring of
# torch.cuda.get_device_name(); the longest matching key wins ("A100" before "A10").
# None: the GPU has no bf16 tensor cores.
BF16_PEAK_TFLOPS = {
    "H200": 989.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "A100": 312.0,
    "L40S": 362.0,
    "RTX 4090": 165.2,
    "A10": 125.0,
    "V100": None,
}
# The GPU whose peak gives the lower bound when no bench file is given.
PEAK_GPU = ("H100 SXM", BF16_PEAK_TFLOPS["H100"])
PARALLEL_ASSUMPTION = "assumes data-parallel scaling over the GPUs; no multi-GPU run was measured"


def bf16_peak_tflops(device_name):
    """The dense bf16 peak of a GPU named as torch.cuda.get_device_name() names it; None when
    unknown or without bf16."""
    keys = sorted((k for k in BF16_PEAK_TFLOPS if k in device_name), key=len, reverse=True)
    return BF16_PEAK_TFLOPS[keys[0]] if keys else None


# -- FLOPs of one iteration

def iteration_flops(cfg, batch_size=None, step=0) -> int:
    """FLOPs of training iteration `step` (its phase decides its shape: SGAN's joint phase differs)
    at cfg's global batch, or at `batch_size`. SGAN's adaptive G steps are counted as one."""
    return _iteration_flops(json.dumps(cfg, sort_keys=True), batch_size or cfg["train"]["batch_size"], step)


@functools.lru_cache(maxsize=256)
def _iteration_flops(cfg_json, batch_size, step):
    cfg = counting_config(json.loads(cfg_json))
    # Initialising stand-ins on the CPU draws from torch's global generator: leave it as found.
    with tempfile.TemporaryDirectory(prefix="stackgan-cost-") as tmp, torch.random.fork_rng(devices=[]):
        method = _untrained_method(cfg, Path(tmp))
        batch = method.example_batch(batch_size, META)
        noise = {k: v.to(META) for k, v in method.draw_noise(torch.Generator(), batch_size).items()}
        return flops_of(lambda: method.train_step(batch, noise, step))


def flops_of(fn) -> int:
    """FLOPs FlopCounterMode counts while fn() runs, with gradients on (its backward passes count)."""
    with torch.enable_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def counting_config(cfg):
    """cfg as counted: no compilation (the FLOPs are the same, compiling meta networks only takes
    time) and, for SGAN, one G step per iteration (adaptive steps read D's loss, a value the meta
    device does not have)."""
    cfg = copy.deepcopy(cfg)
    cfg["train"].update(compile=False, sync_bn=False)
    if cfg["family"] == "sgan":
        cfg["adaptive_g_steps"] = False
    return cfg


def _untrained_method(cfg, folder):
    """The family's training method on the meta device. FLOPs do not depend on weights, so the
    trained files a constructor reads (SGAN's encoder.pt, a Stage-II's parent model.pt) are
    replaced by freshly initialised ones in `folder`, through the config's own settings (`encoder`,
    the parent's place beside the run). Those constructors load them onto the CPU, so such methods
    are built there and moved to meta; the others are built on meta (no initialisation arithmetic)."""
    from stackgan.methods import build_method

    if cfg["family"] == "sgan":
        cfg = {**cfg, "encoder": str(_stand_in_encoder(cfg, folder))}
    elif cfg["family"] == "v1" and cfg["stage"] == 2:
        cfg = _with_stand_in_parent(cfg, folder)
    else:
        with torch.device(META):
            return build_method(cfg, META)
    return build_method(cfg, META)


def _stand_in_encoder(cfg, folder):
    """An encoder.pt of a fresh E at the experiment's `width`. The trained E has its own width
    (params.yaml encoders.<dataset>.width): the same, 1, for every paper run; synthetic-sgan's is
    0.5 against 0.25, so its count of E's work is low."""
    from stackgan.encoder import build_encoder

    k, arch = cfg["num_classes"], cfg["arch"]
    encoder = build_encoder(arch, k, cfg["width"])
    path = folder / "encoder.pt"
    torch.save({"arch": arch, "width": cfg["width"], "num_classes": k, "class_ids": list(range(k)),
                "view": cfg["view"], "image_mean": None if arch == "mnist" else torch.zeros(3, 32, 32),
                "state_dict": encoder.state_dict()}, path)
    return path


def _with_stand_in_parent(cfg, folder):
    """cfg run from `folder`, beside a model.pt of a fresh Stage-I generator named as its parent."""
    from stackgan.methods.v1 import V1Config, V1Method

    parent = {**cfg, "name": cfg["parent"], "stage": 1, "parent": None, "out_size": cfg["stage1_size"]}
    generator = V1Method.sampling_generator(V1Config.of(parent))
    (folder / cfg["parent"]).mkdir()
    torch.save({"family": "v1", "config": parent, "config_hash": "stand-in", "trained_on": {}, "step": 0,
                "generator": generator.state_dict()}, folder / cfg["parent"] / "model.pt")
    return {**cfg, "paths": {**cfg["paths"], "run": str(folder / cfg["name"])}}


# -- the run's length

def train_items(cfg):
    """(number of training items, where it comes from): the prepared manifest's count, else
    params.yaml's expected_counts; (None, None) when neither is known."""
    from stackgan.data.prepared import read_manifest

    data = cfg["data"]
    prepared = Path(data["prepared_dir"])
    if (prepared / "manifest.json").is_file():
        return int(read_manifest(prepared)["splits"]["train"]["count"]), f"prepared in {prepared}"
    expected = (data.get("expected_counts") or {}).get("train")
    if expected is not None:
        return int(expected), "params.yaml expected_counts"
    return None, None


def run_length(cfg) -> dict:
    """steps, global batch, images (steps x batch), and the training items the length follows from."""
    from stackgan.train import total_steps

    t = cfg["train"]
    items, source = train_items(cfg)
    by_epochs = t["max_steps"] is None and "max_epoch" in t
    if by_epochs and items is None:
        ds = cfg["data"]["name"]
        raise UserError(f"{cfg['name']} trains {t['max_epoch']} epochs over {ds}'s training split, whose size "
                        f"is unknown until it is prepared; run `stackgan fetch {ds}` and `stackgan prepare {ds}`")
    steps = total_steps(cfg, items)
    if t["max_steps"] is not None:
        how = "train.max_steps"
    elif by_epochs:
        how = f"{t['max_epoch']} epochs x {items // t['batch_size']:,} iterations"
    else:
        how = f"{t['independent_steps']:,} independent + {t['joint_steps']:,} joint steps"
    return {"steps": steps, "batch_size": t["batch_size"], "images": steps * t["batch_size"],
            "train_items": items, "train_items_from": source, "steps_from": how}


def phases(cfg, steps):
    """(first step, steps) of each stretch of the run with one iteration shape: SGAN's independent
    then joint training; the whole run for the other families."""
    first = min(cfg["train"].get("independent_steps") or 0, steps)
    if cfg["family"] != "sgan" or cfg["variant"] != "sgan" or first in (0, steps):
        return [(0, steps)]
    return [(0, first), (first, steps - first)]


# -- bench files (written by bench/gpu_check.sh)

def load_bench(path) -> dict:
    """A bench JSON (schema 1), checked for what the cost reads: its device and train entries."""
    path = Path(path)
    remedy = "pass a results/bench/<file>.json written by bench/gpu_check.sh"
    try:
        with path.open() as f:
            bench = json.load(f)
    except OSError as err:
        raise UserError(f"cannot read bench file {path} ({err.strerror or err}); {remedy}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not JSON ({str(err).splitlines()[0]}); {remedy}") from None
    problem = _bench_problem(bench)
    if problem:
        raise UserError(f"{path} is not a bench file of schema 1 ({problem}); {remedy}")
    return {**bench, "path": str(path)}


def _bench_problem(bench):
    if not isinstance(bench, dict) or bench.get("schema") != 1:
        return "no \"schema\": 1"
    if not isinstance(bench.get("device"), dict) or not isinstance(bench["device"].get("name"), str):
        return "no device name"
    if not isinstance(bench.get("train"), list):
        return "no train list"
    for i, entry in enumerate(bench["train"]):
        ok = (isinstance(entry, dict) and isinstance(entry.get("experiment"), str)
              and isinstance(entry.get("mode"), str) and _positive(entry.get("batch"), int)
              and (entry.get("error") is not None or _positive(entry.get("images_per_s"), (int, float))))
        if not ok:
            return f"train[{i}] lacks experiment, mode, a positive batch or images_per_s"
    return None


def _positive(value, kinds):
    return isinstance(value, kinds) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


def _shape_key(cfg):
    from stackgan.methods import output_resolution

    return cfg["family"], cfg.get("stage"), output_resolution(cfg)


def bench_reference(bench, cfg, params):
    """(experiment, its measured modes) whose throughput stands for cfg's: cfg's own, else the
    first benched experiment of the same family, stage and output resolution, else of the same
    family and stage, else of the same family; (None, {}) when the bench has none of the family."""
    from stackgan.config import experiment_config

    modes = {}
    for entry in bench["train"]:
        if entry.get("error") is None:
            modes.setdefault(entry["experiment"], {}).setdefault(entry["mode"], entry)
    if cfg["name"] in modes:
        return cfg["name"], modes[cfg["name"]]
    want = _shape_key(cfg)
    keys = {name: _shape_key(experiment_config(params, name, cfg["profile"]))
            for name in modes if name in params["experiments"]}
    for width in (3, 2, 1):
        for name, key in keys.items():
            if key[:width] == want[:width]:
                return name, modes[name]
    return None, {}


# -- one experiment

def run_cost(cfg, params, bench=None, gpus=1) -> dict:
    """Steps, images, FLOPs and GPU-hours of one run of cfg (on `gpus` GPUs: hours / gpus)."""
    from stackgan.methods import output_resolution

    length = run_length(cfg)
    stretches = [(first, n, iteration_flops(cfg, step=first)) for first, n in phases(cfg, length["steps"])]
    cost = {"experiment": cfg["name"], "family": cfg["family"], "stage": cfg.get("stage"),
            "resolution": output_resolution(cfg), **length,
            "flops_per_iteration": stretches[0][2], "flops": sum(n * f for _, n, f in stretches),
            "phases": [{"first_step": first, "steps": n, "flops_per_iteration": f} for first, n, f in stretches],
            "gpus": gpus, "notes": _notes(cfg)}
    cost["gpu_hours"] = _measured_hours(cost, stretches, cfg, params, bench) if bench else _peak_hours(cost)
    return cost


def _notes(cfg):
    notes = []
    if cfg["family"] == "v1" and cfg["stage"] == 2:
        notes.append(f"Stage-II only: its Stage-I parent {cfg['parent']} is an experiment of its own "
                     f"(`stackgan describe {cfg['parent']} --cost`)")
    if cfg["family"] == "sgan" and cfg["adaptive_g_steps"]:
        notes.append("adaptive G steps (1, 3, 5 or 7 per iteration, from D's loss) counted as one: "
                     "FLOPs are a lower bound")
    return notes


def _peak_hours(cost):
    gpu, tflops = PEAK_GPU
    hours = cost["flops"] / (tflops * 1e12) / 3600
    return {"kind": "lower bound", "gpu": gpu, "bf16_peak_tflops": tflops,
            "modes": {"peak": {"hours": hours, "hours_on_gpus": hours / cost["gpus"]}}}


def _measured_hours(cost, stretches, cfg, params, bench):
    """Per measured mode: each stretch's images over the reference's images/s, scaled by FLOPs
    per image (cfg's first stretch when cfg itself was benched: the bench times the first steps)."""
    name, modes = bench_reference(bench, cfg, params)
    out = {"kind": "measured", "bench": bench["path"], "device": bench["device"]["name"],
           "tiny": bool(bench.get("tiny")), "from_experiment": name, "scaled": name != cfg["name"], "modes": {}}
    if name is None:
        cost["notes"].append(f"{bench['path']} measured no {cfg['family']} experiment: no GPU-hours")
        return out
    if out["scaled"]:
        cost["notes"].append(f"GPU-hours scaled from {name} by FLOPs per image")
    own = stretches[0][2] / cost["batch_size"]
    reference = modes.get("reference")
    for mode, entry in modes.items():
        measured = own if not out["scaled"] else (entry.get("flops_per_iteration") or 0) / entry["batch"]
        if measured <= 0:
            continue  # an entry without its FLOPs cannot be scaled to another configuration
        seconds = sum(n * cost["batch_size"] / entry["images_per_s"] * (f / cost["batch_size"] / measured)
                      for _, n, f in stretches)
        out["modes"][mode] = {"images_per_s": entry["images_per_s"], "batch": entry["batch"], "hours": seconds / 3600,
                              "hours_on_gpus": seconds / 3600 / cost["gpus"],
                              "speedup_vs_reference": (entry["images_per_s"] / reference["images_per_s"]
                                                       if reference else None)}
    return out


# -- a paper table

def paper_tables():
    """{table id: [(source, table) of paper_numbers.csv]}: report.py's output files, `table5.md` as "5"."""
    from stackgan.report import PAPER_FILES

    return {name.removesuffix(".md").removeprefix("table"): [(source, table) for _, source, table, _ in sections]
            for name, _, sections in PAPER_FILES}


def table_experiments(params, table, profile=None):
    """The experiments of a paper table, in paper_numbers.csv order, then each Stage-II's Stage-I
    parent not already among them (once): [(name, why)] with why None or "parent of <name>"."""
    from stackgan.config import experiment_config
    from stackgan.report import PAPER_NUMBERS

    tables = paper_tables()
    if table not in tables:
        raise UserError(f"unknown paper table '{table}'; known: {', '.join(tables)}")
    wanted = set(tables[table])
    with PAPER_NUMBERS.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r["source"], r["table"]) in wanted]
    # Rows without an experiment, or naming a pseudo-experiment (real images), cost no training.
    names = list(dict.fromkeys(r["experiment"] for r in rows if r["experiment"] in params["experiments"]))
    chosen = [(name, None) for name in names]
    for name in names:
        parent = experiment_config(params, name, profile).get("parent")
        if parent and parent not in dict(chosen):
            chosen.append((parent, f"parent of {name}"))
    return chosen


def table_cost(params, table, profile=None, bench=None, gpus=1) -> dict:
    """Every experiment's run_cost and their sums (hours per mode where every experiment has it)."""
    from stackgan.config import experiment_config, resolve_profile

    rows = []
    for name, why in table_experiments(params, table, profile):
        cost = run_cost(experiment_config(params, name, profile), params, bench, gpus)
        rows.append({**cost, "included_as": why})
    modes = [m for m in dict.fromkeys(m for r in rows for m in r["gpu_hours"]["modes"])
             if all(m in r["gpu_hours"]["modes"] for r in rows)]
    hours = {m: sum(r["gpu_hours"]["modes"][m]["hours"] for r in rows) for m in modes}
    total = {k: sum(r[k] for r in rows) for k in ("steps", "images", "flops")}
    total["gpu_hours"] = {m: {"hours": h, "hours_on_gpus": h / gpus} for m, h in hours.items()}
    return {"table": table, "profile": resolve_profile(params, profile), "gpus": gpus, "experiments": rows,
            "total": total}


# -- text

def _hours(h):
    if h >= 0.1:
        return f"{h:,.1f} h" if h >= 10 else f"{h:.2f} h"
    return f"{h * 60:.1f} min" if h * 60 >= 1 else f"{h * 3600:.2g} s"


def describe_cost(cost) -> list[str]:
    """The lines `stackgan describe EXPERIMENT --cost` prints."""
    items = (f"; {cost['train_items']:,} training items, {cost['train_items_from']}"
             if cost["train_items"] is not None else "")
    lines = [f"cost of one run (global batch {cost['batch_size']}):",
             f"  steps   {cost['steps']:>16,}  ({cost['steps_from']}{items})",
             f"  images  {cost['images']:>16,}",
             f"  FLOPs   {cost['flops']:>16.3e}  ({cost['flops_per_iteration']:.3e} per iteration, forward + "
             "backward, FlopCounterMode on the meta device)"]
    if len(cost["phases"]) > 1:
        lines += [f"          phase from step {p['first_step']:,}: {p['steps']:,} steps of "
                  f"{p['flops_per_iteration']:.3e} FLOPs" for p in cost["phases"]]
    lines += _hours_lines(cost["gpu_hours"], cost["gpus"])
    lines += [f"  note: {n}" for n in cost["notes"]]
    return lines


def _hours_lines(gh, gpus):
    if gh["kind"] == "lower bound":
        h = gh["modes"]["peak"]["hours"]
        lines = [f"  time    >= {_hours(h)} at 100% of one {gh['gpu']}'s dense bf16 peak ({gh['bf16_peak_tflops']:g} "
                 "TFLOPS): a lower bound from the FLOPs, not a measurement"]
        if gpus > 1:
            lines.append(f"          >= {_hours(h / gpus)} on {gpus} GPUs ({PARALLEL_ASSUMPTION})")
        return lines
    if gh["from_experiment"] is None:
        return []
    tiny = ", tiny: not the paper configuration" if gh["tiny"] else ""
    lines = [f"  GPU-hours on one {gh['device']} (from {gh['bench']}, measured on {gh['from_experiment']}{tiny}):"]
    for mode, m in gh["modes"].items():
        speed = f"  {m['speedup_vs_reference']:.2f}x the reference" if m["speedup_vs_reference"] else ""
        parallel = f"  ({_hours(m['hours_on_gpus'])} on {gpus} GPUs)" if gpus > 1 else ""
        lines.append(f"    {mode:16s} {_hours(m['hours']):>10s}  at {m['images_per_s']:,.1f} images/s, batch "
                     f"{m['batch']}{speed}{parallel}")
    if gpus > 1:
        lines.append(f"    on {gpus} GPUs: {PARALLEL_ASSUMPTION}")
    return lines


def describe_table(tc) -> list[str]:
    """The lines `stackgan describe --table N --cost` prints: one row per run, hours per measured
    mode (or the lower bound at PEAK_GPU's peak), and the totals."""
    rows, gpus = tc["experiments"], tc["gpus"]
    modes = list(dict.fromkeys(m for r in rows for m in r["gpu_hours"]["modes"]))
    measured = any(r["gpu_hours"]["kind"] == "measured" for r in rows)
    gpu, tflops = PEAK_GPU
    heads = modes if measured else ["hours >="]
    lines = [f"paper table {tc['table']}, profile {tc['profile']}: {len(rows)} runs"
             + ("" if measured else f"; hours at 100% of one {gpu}'s dense bf16 peak ({tflops:g} TFLOPS): "
                                    "a lower bound from the FLOPs, not a measurement"),
             f"  {'experiment':28s} {'steps':>11s} {'images':>13s} {'FLOPs':>10s}  "
             + "  ".join(f"{h:>10s}" for h in heads)]

    def row(name, r, hours):
        cells = "  ".join(f"{_hours(hours[m]['hours']) if m in hours else '-':>10s}" for m in modes)
        return f"  {name:28s} {r['steps']:>11,} {r['images']:>13,} {r['flops']:>10.3e}  {cells}"

    lines += [row(r["experiment"], r, r["gpu_hours"]["modes"]) for r in rows]
    lines.append(row("total", tc["total"], tc["total"]["gpu_hours"]))
    if gpus > 1 and tc["total"]["gpu_hours"]:
        each = ", ".join(f"{m if measured else 'lower bound'} {_hours(v['hours_on_gpus'])}"
                         for m, v in tc["total"]["gpu_hours"].items())
        lines.append(f"  on {gpus} GPUs: {each} ({PARALLEL_ASSUMPTION})")
    if measured:
        lines.append(f"  measured on one {rows[0]['gpu_hours']['device']} ({rows[0]['gpu_hours']['bench']}); a total "
                     "is given for the modes every run has")
    for r in rows:
        notes = ([r["included_as"]] if r["included_as"] else []) + r["notes"]
        lines += [f"  {r['experiment']}: {n}" for n in notes]
    return lines
