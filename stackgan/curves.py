"""`stackgan curves EXPERIMENT`: training over time, as DVC plots.

Two kinds of series, one TSV per series (`step` and the value), under
`results/curves/<profile>/{losses,scores}/<experiment>/` (the two folders dvc.yaml's top-level
`plots:` name, so `dvc plots show` / `dvc plots diff` render them):
- losses: DVCLive's rows of the run, copied at their true steps. They live in git here, so
  `dvc plots diff REV` needs no DVC cache for the old revision.
- scores: IS/FID of the generator snapshots the run wrote every `train.eval_every` steps
  (runs/<profile>/<exp>/snapshots/) and of model.pt, on `train.eval_samples` evaluation samples:
  each protocol's small variant (`is2k_synthetic-clf` -> `is1k_synthetic-clf`), scored against the
  refstats stage's reference statistics. Only the first IS and the first FID protocol of
  `eval.protocols` are followed (their count is what changes; the ruler and reference do not).
Beside them: `<experiment>.json` (each point's values and the protocols' details) and
`<experiment>.png` (the curves drawn by matplotlib, for the report).
"""

import shutil
from pathlib import Path

import numpy as np

from stackgan import checkpoint, metric_names
from stackgan.atomic import atomic_path, write_bytes, write_json
from stackgan.devices import resolve_device
from stackgan.errors import UserError
from stackgan.evaluate import measurable
from stackgan.methods import family, load_generator
from stackgan.metrics.compute import compute
from stackgan.metrics.protocols import get_protocol
from stackgan.metrics.reference import classifier_dir, fid_reference_split, reference_set, refstats_dir

SAMPLE_BATCH = 100


def curve_protocols(cfg):
    """{full protocol: its small variant} for the first IS and the first FID protocol."""
    chosen = {}
    for name in cfg["eval"]["protocols"]:
        metric = get_protocol(name).metric
        if metric in ("is", "fid") and metric not in chosen:
            chosen[metric] = name
    n = cfg["train"]["eval_samples"]
    try:
        return {name: metric_names.with_count(name, n) for name in chosen.values()}
    except ValueError as err:
        raise UserError(f"{cfg['name']}: train.eval_samples {n}: {err}") from None


def snapshot_points(cfg):
    """[(step, file)] of the snapshots and model.pt, by step."""
    model = Path(cfg["paths"]["model"])
    if not model.is_file():
        raise UserError(f"{model} not found; run `stackgan train {cfg['name']}` first")
    points = []
    for path in sorted(Path(cfg["paths"]["snapshots"]).glob("step*.pt")):
        digits = path.stem[len("step"):]
        if digits.isdigit():
            points.append((int(digits), path))
    return points + [(None, model)]  # model.pt's step is read from it


def snapshot_images(cfg, path, count, device):
    """(step, the first `count` evaluation samples of the generator in `path`, uint8 NHWC)."""
    remedy = f"re-run `stackgan train {cfg['name']}` to write it again"
    payload = checkpoint.load_model(path, remedy)
    generator = load_generator(payload, device)
    small = {**cfg, "eval": {**cfg["eval"], "num_samples": count}}
    chunks, total = [], 0
    for images, _, _ in family(payload["family"]).sample_batches(small, payload, generator, SAMPLE_BATCH):
        chunks.append(images)
        total += len(images)
        if total >= count:
            break
    return int(payload["step"]), np.concatenate(chunks)[:count]


def copy_losses(cfg, out):
    """DVCLive's train/*.tsv of the run into `out`; the names of the series."""
    live = Path(cfg["paths"]["live"]) / "plots" / "metrics" / "train"
    names = []
    for tsv in sorted(live.glob("*.tsv")):
        if tsv.is_symlink() or not tsv.is_file():
            continue  # a pulled runs/ folder is not trusted to point elsewhere
        write_bytes(out / tsv.name, tsv.read_bytes())
        names.append(tsv.stem)
    return names


def curves(cfg, device="auto"):
    device = resolve_device(device)
    protocols = curve_protocols(cfg)
    profile, dataset = cfg["profile"], cfg["data"]["name"]
    small_names, skipped = measurable(list(protocols.values()), classifier_dir(profile, dataset))
    points = snapshot_points(cfg)
    reference = reference_key = None
    split_name = fid_reference_split(cfg)
    rows = []
    for _, path in points:
        step, images = snapshot_images(cfg, path, cfg["train"]["eval_samples"], device)
        if reference is None and split_name and any(get_protocol(n).metric == "fid" for n in small_names):
            reference, reference_key = reference_set(cfg["data"]["prepared_dir"], split_name, cfg["view"],
                                                     images.shape[1])
        result = compute(small_names, images, reference=reference, device=device,
                         classifier_dir=classifier_dir(profile, dataset),
                         reference_stats_dir=refstats_dir(profile, dataset), reference_key=reference_key)
        rows.append({"step": step, "file": path.name, "metrics": result["metrics"]})
        details = result["protocols"]
    rows.sort(key=lambda r: r["step"])

    losses_dir, scores_dir = (Path(cfg["paths"]["curves"][part]) for part in ("losses", "scores"))
    staged = {d: _fresh(d.with_name(d.name + ".partial")) for d in (losses_dir, scores_dir)}
    loss_names = copy_losses(cfg, staged[losses_dir])
    for name in small_names:
        lines = [f"step\t{name}\n"] + [f"{r['step']}\t{r['metrics'][name]['value']!r}\n" for r in rows]
        write_bytes(staged[scores_dir] / f"{name}.tsv", "".join(lines).encode())
    record = {"experiment": cfg["name"], "profile": profile, "eval_every": cfg["train"]["eval_every"],
              "num_samples": cfg["train"]["eval_samples"], "seed": cfg["eval"]["seed"],
              "protocols": {name: {**details[name], "variant_of": full}
                            for full, name in protocols.items() if name in small_names},
              "skipped": skipped, "points": rows, "losses": loss_names}
    for final, tmp in staged.items():
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    write_json(cfg["paths"]["curves_record"], record)
    draw(record, losses_dir, cfg["paths"]["curves_plot"])
    return record


def _fresh(folder):
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def draw(record, losses_dir, out):
    """Losses (left) and the snapshots' scores (right) against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for name in record["losses"]:
        table = np.loadtxt(losses_dir / f"{name}.tsv", skiprows=1, ndmin=2)
        if table.size:
            left.plot(table[:, 0], table[:, 1], label=name, linewidth=1)
    left.set(title=f"{record['experiment']}: training losses (DVCLive)", xlabel="step")
    if record["losses"]:
        left.legend(fontsize=7)
    steps = [p["step"] for p in record["points"]]
    for name in record["protocols"]:
        values = [p["metrics"][name]["value"] for p in record["points"]]
        stds = [p["metrics"][name]["std"] or 0.0 for p in record["points"]]
        axis = right if name.startswith("is") else right.twinx()
        axis.errorbar(steps, values, yerr=stds, marker="o", capsize=3, label=name,
                      color="tab:blue" if name.startswith("is") else "tab:red")
        axis.set_ylabel(name)
    right.set(title=f"snapshots, {record['num_samples']} samples each", xlabel="step")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
