"""The `stackgan` console script: one subcommand per pipeline stage (dvc.yaml calls exactly these)."""

import argparse
import json
import sys
from pathlib import Path

from stackgan import config as C
from stackgan import devices, reproducibility
from stackgan.errors import UserError, os_error_message


def _params(args):
    return C.load_params(args.params)


def cmd_describe(args):
    from stackgan.methods import parameter_counts

    if (args.experiment is None) == (args.table is None):
        raise UserError("describe takes an experiment or --table N, exactly one of them; "
                        "e.g. `stackgan describe cub-v2 --cost` or `stackgan describe --table 5 --cost`")
    cost = args.cost or args.table is not None
    if not cost and (args.bench or args.gpus != 1):
        raise UserError("--bench and --gpus give GPU-hours, which --cost prints; add --cost")
    params = _params(args)
    bench = None
    if cost and args.bench:
        from stackgan.cost import load_bench

        bench = load_bench(args.bench)
    if args.table is not None:
        from stackgan.cost import describe_table, table_cost

        tc = table_cost(params, args.table, args.profile, bench, args.gpus)
        print(json.dumps(tc, indent=2) if args.json else "\n".join(describe_table(tc)))
        return
    cfg = C.experiment_config(params, args.experiment, args.profile)
    counts = parameter_counts(cfg)
    run = None
    if cost:
        from stackgan.cost import run_cost

        run = run_cost(cfg, params, bench, args.gpus)
    if args.json:
        out = {"config": cfg, "parameters": counts, "config_hash": C.config_hash(cfg)}
        print(json.dumps({**out, "cost": run} if run else out, indent=2))
        return
    print(f"{cfg['name']} ({cfg['family']}, dataset {cfg['data']['name']}, profile {cfg['profile']})")
    for name, n in counts.items():
        print(f"  {name:8s} {n:>13,d} parameters")
    if run:
        from stackgan.cost import describe_cost

        print("\n".join(describe_cost(run)))


def cmd_fetch(args):
    import difflib

    from stackgan import sources
    from stackgan.fetch import fetch, fetch_weights

    if args.name in sources.WEIGHTS:  # weights need no params.yaml: they fetch anywhere
        print(fetch_weights(args.name, Path(args.out or Path(sources.WEIGHTS_DIR) / args.name)))
        return
    params = _params(args)
    if args.name not in params["datasets"]:
        known = [*params["datasets"], *sources.WEIGHTS]
        close = difflib.get_close_matches(args.name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
        raise UserError(f"unknown dataset or weights '{args.name}'; {hint}")
    ds = C.dataset_config(params, args.name, args.profile)
    print(fetch(ds, Path(args.out or ds["raw_dir"])))


def cmd_convert_inception(args):
    from stackgan.metrics.convert_inception import convert

    s = convert(args.checkpoint, Path(args.out))
    print(f"{s['out']}: {s['num_classes']} classes (+ background), {s['variables_read']} EMA tensors from "
          f"{s['source']}, sha256 {s['sha256']}")


def cmd_prepare(args):
    from stackgan.prepare import prepare

    params = _params(args)
    ds = C.dataset_config(params, args.dataset, args.profile)
    limit = args.limit if args.limit is not None else ds["limit"]
    out = prepare(ds, Path(args.raw or ds["raw_dir"]), Path(args.out or ds["prepared_dir"]), limit)
    print(out)


def cmd_train(args):
    from stackgan.train import train

    cfg = C.experiment_config(_params(args), args.experiment, args.profile)
    if args.dry_run:
        print(json.dumps(cfg, indent=2))
        return
    train(cfg, device_pref=args.device, stop_after=args.stop_after, verify=args.verify)


def cmd_check_data(args):
    from stackgan.data.prepared import verify_prepared
    from stackgan.data.shards import damaged

    ds = C.dataset_config(_params(args), args.dataset, args.profile)
    folder = Path(args.dir or ds["prepared_dir"])
    report = verify_prepared(folder, hashes=True)
    for problem in report["problems"]:
        print(problem)
    if report["problems"]:
        raise damaged(f"{folder}: {len(report['problems'])} problem(s), listed above", report["dataset"])
    print(f"{folder}: {report['files']} files, {report['bytes']} bytes; sizes and sha256 match the manifest")


def cmd_sample(args):
    from stackgan.sample import sample

    cfg = C.experiment_config(_params(args), args.experiment, args.profile)
    print(sample(cfg, device=args.device))


def cmd_classifier(args):
    from stackgan.metrics.finetune import finetune_inception
    from stackgan.metrics.synthetic_classifier import train_synthetic_classifier

    params = _params(args)
    ds = C.dataset_config(params, args.dataset, args.profile)
    clf = (params.get("classifiers") or {}).get(args.dataset)
    if clf is None:
        raise UserError(f"params.yaml has no classifiers.{args.dataset} entry; IS scoring networks are defined for "
                        f"{', '.join(params.get('classifiers') or {})}")
    if args.dataset == "synthetic":
        report = train_synthetic_classifier(ds, clf, args.out)
    else:
        report = finetune_inception(ds, clf, args.out, device=args.device)
    print(json.dumps({k: v for k, v in report.items() if k in ("heldout_accuracy", "heldout_top1", "weights_sha256",
                                                              "num_images")}, indent=2))


def cmd_refstats(args):
    from stackgan.metrics.refstats import compute_refstats_for

    params = _params(args)
    profile = C.resolve_profile(params, args.profile)
    C.dataset_config(params, args.dataset, profile)
    out = args.out or f"runs/{profile}/refstats/{args.dataset}"
    written = compute_refstats_for(params, args.dataset, profile, out, device=args.device)
    print(json.dumps({k: str(v.get("file", v)) if isinstance(v, dict) else str(v) for k, v in written.items()},
                     indent=2))


def cmd_encoder(args):
    from stackgan.encoder import encoder_config, train_encoder

    cfg = encoder_config(_params(args), args.dataset, args.profile)
    report = train_encoder(cfg, cfg["prepared_dir"], args.out or cfg["out_dir"], device=args.device)
    print(json.dumps({k: v for k, v in report.items() if k != "recipe"}, indent=2, default=str))


def cmd_evaluate(args):
    from stackgan.evaluate import evaluate

    cfg = C.experiment_config(_params(args), args.experiment, args.profile)
    out = evaluate(cfg, device=args.device)
    for key, m in out["metrics"].items():
        std = f" ± {m['std']:.4f}" if m["std"] is not None else ""
        print(f"{key}: {m['value']:.4f}{std}")


def cmd_curves(args):
    from stackgan.curves import curves

    cfg = C.experiment_config(_params(args), args.experiment, args.profile)
    record = curves(cfg, device=args.device)
    for point in record["points"]:
        values = ", ".join(f"{k} {m['value']:.4f}" for k, m in point["metrics"].items())
        print(f"step {point['step']}: {values or 'no IS/FID protocol'}")


def cmd_evaluate_real(args):
    from stackgan.evaluate import evaluate_real

    params = _params(args)
    out = evaluate_real(params, args.dataset, C.resolve_profile(params, args.profile), device=args.device)
    for key, m in out["metrics"].items():
        std = f" ± {m['std']:.4f}" if m["std"] is not None else ""
        print(f"{args.dataset} real images, {key}: {m['value']:.4f}{std}")


def cmd_figures(args):
    from stackgan.figures.stage import run_figures

    index = run_figures(_params(args), args.experiment, args.profile, device=args.device, num_samples=args.num_samples)
    out = f"results/figures/{index['profile']}/{index['experiment']}"
    for fig, entry in index["figures"].items():
        print(f"{out}/{entry['file']}: {entry['paper']} ({fig})")
    for fig, why in index["skipped"].items():
        print(f"{fig} skipped: {why}")


def cmd_score(args):
    from stackgan.metrics.compute import score_folder

    result = score_folder(args.images, args.protocol, reference_dir=args.reference,
                          extractor_weights=args.extractor_weights, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        std = f" ± {result['std']:.4f}" if result["std"] is not None else ""
        print(f"{result['protocol']}: {result['value']:.4f}{std}")


def cmd_gate(args):
    from stackgan.gate import run_gate

    params = _params(args)
    profile = C.resolve_profile(params, args.profile)
    if not run_gate(params, Path("results/metrics") / profile, args.rev):
        raise UserError(f"regression gate failed: a {profile}-profile metric moved past its tolerance (table above); "
                        f"if the change is intended, commit the new results/metrics/{profile}/ as the baseline")


def cmd_report(args):
    from stackgan.report import write_tables
    from stackgan.report_page import write_report

    for path in write_tables(Path(args.metrics), Path(args.out)):
        print(path)
    for path in write_report(Path(args.results), Path(args.out)):
        print(path)


def cmd_summary(args):
    """Where the active profile's outputs are, and its metrics at a glance."""
    params = _params(args)
    profile = C.resolve_profile(params, args.profile)
    print(f"profile: {profile}")
    print("tables:  results/tables/ (" + ", ".join(sorted(p.name for p in Path("results/tables").glob("*.md"))) + ")")
    print("report:  results/report.md, results/report.html (tables, figures and curves together)")
    run = params.get("run", {})
    names = list(run.get("evaluate", [])) or list(run.get("train", []))
    for name in names:
        cfg = C.experiment_config(params, name, profile)
        grids = sorted(Path(cfg["paths"]["grids"]).glob("*.png"))
        sample_grid = Path(cfg["paths"]["sample_grid"])
        print(f"{name}:")
        print(f"  training grids: {grids[-1] if grids else '(not trained)'}")
        print(f"  sample grid:    {sample_grid if sample_grid.exists() else '(not sampled)'}")
        curves_plot = Path(cfg["paths"]["curves_plot"])
        print(f"  curves:         {curves_plot if curves_plot.exists() else '(not drawn)'}")
        metrics = Path(cfg["paths"]["metrics"])
        if metrics.exists():
            for key, m in json.loads(metrics.read_text())["metrics"].items():
                std = f" ± {m['std']:.3f}" if m.get("std") is not None else ""
                print(f"  {key}: {m['value']:.4f}{std}")
    from stackgan.gate import verdict

    print(verdict(Path("results/metrics") / profile))


def cmd_hr(args):
    if args.hr_command == "serve":
        from stackgan.hr.server import serve

        serve(args.study, args.host, args.port)
        return
    if args.hr_command == "aggregate":
        from stackgan.hr.aggregate import aggregate

        out, record = aggregate(args.study, args.out)
        for key, m in record["metrics"].items():
            print(f"{key}: {m['value']:.2f}" + (f" ± {m['std']:.2f}" if m["std"] is not None else ""))
        print(out)
        return
    from stackgan.devices import resolve_device
    from stackgan.hr.study import build

    params = _params(args)
    profile = C.resolve_profile(params, args.profile)
    cfgs = [C.experiment_config(params, name, profile) for name in args.experiments]
    name = args.name or f"{cfgs[0]['data']['name']}-seed{args.seed}"
    out, manifest = build(cfgs, args.dataset, args.out or Path("runs") / profile / "hr" / name, args.captions_per_class,
                          args.captions, args.images_per_caption, args.seed, resolve_device(args.device))
    print(f"{out}: {len(manifest['captions'])} captions x {len(cfgs)} models x {args.images_per_caption} images; "
          f"rank with `stackgan hr serve {out}`")


def cmd_env(args):
    if args.record:
        from stackgan.atomic import write_json

        path = reproducibility.machine_record_path(C.resolve_profile(_params(args), args.profile))
        write_json(path, {"contract": reproducibility.contract(), "machine": reproducibility.machine()})
        print(f"{path}: the machine and contract behind this profile's metrics (commit it with the baseline)")
    elif args.json:
        print(json.dumps({"contract": reproducibility.contract(), "machine": reproducibility.machine()}, indent=2))
    else:
        print(reproducibility.describe())


# The subcommands that compute (and `env`, which reports what computing would run under).
PINNED_COMMANDS = {"fetch", "prepare", "classifier", "refstats", "encoder", "train", "sample", "evaluate",
                   "evaluate-real", "score", "env", "hr", "figures"}


def pin_cpu(args):
    """Apply the active profile's CPU pins before any stage imports torch."""
    if not Path(args.params).exists():
        return  # `score` and `env` work outside the repository; nothing to pin there
    params = C.load_params(args.params)
    cpu = reproducibility.settings(params, C.resolve_profile(params, args.profile))
    if cpu["pinned"]:
        threads = cpu["threads"]
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise UserError(f"params.yaml profiles.<profile>.cpu.threads is {threads!r}; a pinned profile needs a "
                            "positive whole number of threads (results depend on it)")
        if cpu["convolutions"] not in reproducibility.CONVOLUTIONS:
            raise UserError(f"params.yaml profiles.<profile>.cpu.convolutions is {cpu['convolutions']!r}; use one of "
                            f"{', '.join(reproducibility.CONVOLUTIONS)}")
        reproducibility.pin(threads, cpu["convolutions"])


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line like every other user error (argparse prints the whole usage first)
        self.exit(2, f"stackgan: error: {message}; see `{self.prog} --help`\n")


def add_device_flag(parser):
    parser.add_argument("--device", default="auto", choices=devices.CHOICES,
                        help="auto: CUDA when this machine has it, else CPU")


def build_parser():
    p = _Parser(prog="stackgan", description=__doc__)
    p.add_argument("--params", default=str(C.DEFAULT_PARAMS), help="params file (default: params.yaml)")
    p.add_argument("--profile", default=None, help=f"override params.yaml's profile ({', '.join(C.PROFILES)})")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("describe", help="print an experiment's resolved config and parameter counts; with --cost, "
                                        "what a run of it (or of a paper table's experiments) costs")
    s.add_argument("experiment", nargs="?", help="an experiment of params.yaml (or give --table)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--cost", action="store_true",
                   help="steps, images, FLOPs and GPU-hours of one run (stackgan/cost.py)")
    s.add_argument("--table", help="instead of an experiment: every experiment of a paper table (2, 3, 4, 5, text, "
                                   "sgan; Stage-II parents included), each costed and summed (implies --cost)")
    s.add_argument("--bench", help="results/bench/<file>.json (bench/gpu_check.sh): GPU-hours from its measured "
                                   "images/s instead of a lower bound at a GPU's peak")
    s.add_argument("--gpus", type=positive_int, default=1,
                   help="GPU-hours divided over N GPUs (assumes data-parallel scaling)")
    s.set_defaults(fn=cmd_describe)

    s = sub.add_parser("fetch", help="download (or, for `synthetic`, generate) a dataset's raw files, or a "
                                     "scoring network's weights")
    s.add_argument("name", help="a dataset of params.yaml or a weights name of stackgan/sources.py WEIGHTS")
    s.add_argument("--out", help="folder (default data/raw/<dataset> or data/weights/<weights name>)")
    s.set_defaults(fn=cmd_fetch)

    s = sub.add_parser("convert-inception",
                       help="convert the authors' TF Inception checkpoint into inception-v3-slim weights (needs [tf])")
    s.add_argument("checkpoint", help="checkpoint prefix (e.g. .../model.ckpt-5000) or its folder")
    s.add_argument("--out", required=True, help="weights file to write (e.g. data/weights/cub-inc.pth)")
    s.set_defaults(fn=cmd_convert_inception)

    s = sub.add_parser("prepare", help="split, crop and shard a raw dataset")
    s.add_argument("dataset")
    s.add_argument("--raw", help="raw folder (default data/raw/<dataset>)")
    s.add_argument("--out", help="prepared folder (default data/prepared/<profile>/<dataset>)")
    s.add_argument("--limit", type=positive_int, help="keep N images per split (small subsets for CI and smoke runs)")
    s.set_defaults(fn=cmd_prepare)

    s = sub.add_parser("check-data", help="verify a prepared dataset's files against its manifest (sizes, sha256)")
    s.add_argument("dataset")
    s.add_argument("--dir", help="prepared folder (default data/prepared/<profile>/<dataset>)")
    s.set_defaults(fn=cmd_check_data)

    s = sub.add_parser("train", help="train an experiment (resumes from its checkpoint); works under torchrun")
    s.add_argument("experiment")
    add_device_flag(s)
    s.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    s.add_argument("--verify", action="store_true", help="check every prepared file's sha256 before training")
    s.add_argument("--stop-after", type=positive_int, help=argparse.SUPPRESS)
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("sample", help="write the evaluation samples of a trained experiment")
    s.add_argument("experiment")
    add_device_flag(s)
    s.set_defaults(fn=cmd_sample)

    s = sub.add_parser("classifier", help="train the scoring classifier of a dataset (IS/FID feature extractor)")
    s.add_argument("dataset")
    s.add_argument("--out", required=True, help="output folder")
    add_device_flag(s)
    s.set_defaults(fn=cmd_classifier)

    s = sub.add_parser("refstats", help="FID reference statistics of a dataset for the run's evaluated experiments")
    s.add_argument("dataset")
    s.add_argument("--out", help="output folder (default runs/<profile>/refstats/<dataset>)")
    add_device_flag(s)
    s.set_defaults(fn=cmd_refstats)

    s = sub.add_parser("encoder", help="train SGAN's pre-trained encoder E of a labelled dataset")
    s.add_argument("dataset")
    s.add_argument("--out", help="output folder (default runs/<profile>/encoders/<dataset>)")
    add_device_flag(s)
    s.set_defaults(fn=cmd_encoder)

    s = sub.add_parser("evaluate", help="score an experiment's samples; writes results/metrics/<profile>/<exp>.json")
    s.add_argument("experiment")
    add_device_flag(s)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("curves", help="IS/FID of the run's eval_every snapshots and its losses as DVC plots "
                                      "(results/curves/<profile>/)")
    s.add_argument("experiment")
    add_device_flag(s)
    s.set_defaults(fn=cmd_curves)

    s = sub.add_parser("evaluate-real", help="score a dataset's real images (params.yaml `real`)")
    s.add_argument("dataset")
    add_device_flag(s)
    s.set_defaults(fn=cmd_evaluate_real)

    s = sub.add_parser("figures", help="the StackGAN++ paper's figures (t-SNE map, stages, CA diversity, nearest "
                                       "neighbours, interpolation, baselines) for an experiment; writes "
                                       "results/figures/<profile>/<exp>/")
    s.add_argument("experiment")
    s.add_argument("--num-samples", type=positive_int, help="samples in the t-SNE map (default: params.yaml figures)")
    add_device_flag(s)
    s.set_defaults(fn=cmd_figures)

    s = sub.add_parser("score", help="score any folder of images under a named protocol")
    s.add_argument("images")
    s.add_argument("--protocol", required=True, help="e.g. is30k_imagenet, fid30k_test, is2k_synthetic-clf")
    s.add_argument("--reference", help="folder of real images (FID protocols)")
    s.add_argument("--extractor-weights", help="weights file replacing the protocol's (its sha256 is recorded)")
    add_device_flag(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_score)

    s = sub.add_parser("summary", help="print where the tables, grids and metrics of the active profile are")
    s.set_defaults(fn=cmd_summary)

    s = sub.add_parser("env", help="print what decides whether CPU results reproduce bit for bit on this machine")
    s.add_argument("--json", action="store_true")
    s.add_argument("--record", action="store_true",
                   help="write results/machines/<profile>.json (with a baseline you are about to commit)")
    s.set_defaults(fn=cmd_env)

    s = sub.add_parser("gate", help="fail when the profile's metrics moved past params.yaml gate tolerances vs git REV")
    s.add_argument("--rev", default="HEAD", help="baseline revision (default HEAD)")
    s.set_defaults(fn=cmd_gate)

    s = sub.add_parser("hr", help="human rank (HR): build a ranking study, serve it to raters, aggregate the ranks")
    hr = s.add_subparsers(dest="hr_command", required=True, parser_class=_Parser)
    b = hr.add_parser("build", help="sample a study folder (images, manifest, page) from trained experiments")
    b.add_argument("--experiments", nargs="+", required=True, help="two or more text-to-image experiments, one dataset")
    b.add_argument("--dataset", required=True, help="the experiments' dataset (a check)")
    b.add_argument("--captions-per-class", type=positive_int, default=50, help="random test captions per class")
    b.add_argument("--captions", type=positive_int, help="instead: random test captions in all (COCO: 4000)")
    b.add_argument("--images-per-caption", type=positive_int, default=5)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--name", help="study name (default <dataset>-seed<seed>)")
    b.add_argument("--out", help="study folder (default runs/<profile>/hr/<name>)")
    add_device_flag(b)
    b = hr.add_parser("serve", help="serve a study's ranking page; answers go to STUDY/answers.jsonl")
    b.add_argument("study")
    b.add_argument("--host", default="127.0.0.1")
    b.add_argument("--port", type=int, default=8765)
    b = hr.add_parser("aggregate", help="average rank ± std per model and Kendall's W, as a metrics file")
    b.add_argument("study")
    b.add_argument("--out", help="metrics file (default results/metrics/<profile>/hr-<dataset>.json)")
    s.set_defaults(fn=cmd_hr)

    s = sub.add_parser("report", help="write results/tables/*.md from results/metrics, and results/report.md "
                                      "(+ .html) with the tables, figures and curves of every profile")
    s.add_argument("--metrics", default="results/metrics")
    s.add_argument("--out", default="results/tables")
    s.add_argument("--results", default="results", help="where report.md goes and figures/, curves/ are read")
    s.set_defaults(fn=cmd_report)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command in PINNED_COMMANDS:
            pin_cpu(args)
        args.fn(args)
    except UserError as e:
        print(f"stackgan: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        message = os_error_message(e)
        if message is None:
            raise
        print(f"stackgan: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stackgan: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
