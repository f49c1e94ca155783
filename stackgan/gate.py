"""`stackgan gate` and the reproduction verdict: this working tree's metrics against a commit's.

Compares the metrics files in the working tree with the ones committed at a git revision (the
baseline, as `dvc metrics diff` does), prints the table either way, and fails when a metric
moved past its tolerance, appeared or disappeared. Tolerances live in params.yaml `gate`: a run
under the baseline's reproducibility contract (stackgan/reproducibility.py) must give the same
bits, so `tolerance` applies; a run under another contract (another CPU class, other library
versions) can only be compared statistically, with `cross_contract_tolerance`, the spread
measured across kernel choices (results/REPRODUCIBILITY.md).
"""

import json
import subprocess
from pathlib import Path

from tabulate import tabulate

from stackgan import metric_names
from stackgan.errors import UserError
from stackgan.reproducibility import differences, machine_record_path


def tolerance_of(key, tolerances):
    rule = tolerances.get(metric_names.family(key)) or tolerances["default"]
    return float(rule.get("abs", 0.0)), float(rule.get("rel", 0.0))


def committed(rev, path):
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def contract_changes(base, cur):
    """{'train.key' | 'evaluate.key': (baseline, current)} where the two files' contracts differ."""
    b, c = base.get("reproducibility") or {}, cur.get("reproducibility") or {}
    out = {}
    for part in ("train", "evaluate"):
        for key, pair in differences(b.get(part) or {}, c.get(part) or {}).items():
            out[f"{part}.{key}"] = pair
    return out


def compare(metrics_dir, rev, tolerances, cross_tolerances=None):
    """Rows (file, metric, baseline, current, change, allowed, verdict), whether all passed, and
    the contract changes per file (empty where the run is under the baseline's contract)."""
    rows, ok, changes = [], True, {}
    files = sorted(Path(metrics_dir).glob("*.json"))
    if not files:
        raise UserError(f"no metrics in {metrics_dir}/; run the ci profile's pipeline first (dvc repro)")
    for path in files:
        base = committed(rev, path.as_posix())
        if base is None:
            rows.append((path.as_posix(), "(file)", "—", "present", "", "", "NEW: commit a baseline"))
            ok = False
            continue
        current = json.loads(path.read_text())
        changed = contract_changes(base, current)
        if changed:
            changes[path.as_posix()] = changed
        rules = cross_tolerances if changed and cross_tolerances else tolerances
        cur = current["metrics"]
        for key in sorted(set(base["metrics"]) | set(cur)):
            b, c = base["metrics"].get(key, {}).get("value"), cur.get(key, {}).get("value")
            if b is None or c is None:
                rows.append((path.as_posix(), key, b, c, "", "", "MISSING"))
                ok = False
                continue
            a, r = tolerance_of(key, rules)
            allowed = max(a, r * abs(b))
            passed = abs(c - b) <= allowed
            ok &= passed
            rows.append((path.as_posix(), key, f"{b:.4f}", f"{c:.4f}", f"{c - b:+.4f}", f"±{allowed:.4f}",
                         "ok" if passed else "MOVED"))
    return rows, ok, changes


def baseline_machine(rev, metrics_dir):
    record = committed(rev, machine_record_path(Path(metrics_dir).name).as_posix())
    return (record or {}).get("machine", {}).get("cpu")


def describe_changes(changes):
    """One line per distinct contract change, e.g. 'evaluate.aten_capability: AVX2 (baseline) -> DEFAULT (here)'."""
    seen = {}
    for changed in changes.values():
        for key, (b, c) in changed.items():
            seen.setdefault(key, (b, c))
    if all(b is None for b, _ in seen.values()):
        return ["the committed metrics record no contract (made before the CPU pins existed)"]
    return [f"{key}: {b} (baseline) -> {c} (here)" for key, (b, c) in sorted(seen.items())]


def run_gate(params, metrics_dir, rev="HEAD"):
    gate = params.get("gate") or {}
    tolerances = gate.get("tolerance")
    if not tolerances or "default" not in tolerances:
        raise UserError("params.yaml has no gate.tolerance.default; restore the gate section")
    rows, ok, changes = compare(metrics_dir, rev, tolerances, gate.get("cross_contract_tolerance"))
    print(tabulate(rows, headers=["Path", "Metric", rev, "workspace", "Change", "Allowed", "Gate"]))
    machine = baseline_machine(rev, metrics_dir)
    if changes:
        print(f"\nThis run is not under the baseline's reproducibility contract (baseline made on "
              f"{machine or 'an unrecorded machine'}), so its bits cannot match; compared with "
              f"gate.cross_contract_tolerance instead. Differences:")
        print("\n".join(f"  {line}" for line in describe_changes(changes)))
    return ok


def verdict(metrics_dir, rev="HEAD"):
    """Did this run reproduce the committed metrics? One paragraph for a newcomer: the gate's
    comparison at zero tolerance, over the files that have a committed counterpart."""
    if not any(Path(metrics_dir).glob("*.json")):
        return f"no metrics in {metrics_dir}/ to compare with {rev}"
    rows, _, changes = compare(metrics_dir, rev, {"default": {"abs": 0.0}})
    rows = [r for r in rows if r[1] != "(file)"]
    if not rows:
        return f"no committed metrics in {metrics_dir}/ at {rev} to compare with"
    moved = [f"{Path(r[0]).stem} {r[1]}: {r[2]} committed, {r[3]} here" for r in rows if r[-1] != "ok"]
    machine = baseline_machine(rev, metrics_dir) or "an unrecorded machine"
    if not moved:
        return (f"REPRODUCED: all {len(rows)} metrics in {metrics_dir}/ are bit-identical to the committed ones "
                f"(made on {machine}).")
    lines = [f"NOT REPRODUCED: {len(moved)} of {len(rows)} metrics in {metrics_dir}/ differ from the committed ones "
             f"(made on {machine}):"] + [f"  {m}" for m in moved]
    if changes:
        lines.append("  the reproducibility contract differs, which explains it:")
        lines += [f"    {line}" for line in describe_changes(changes)]
    else:
        lines.append("  under the same contract: please report this with `stackgan env` output")
    lines.append("  `git diff results/` shows your run against the committed one; `git checkout results dvc.lock` "
                 "restores the committed files.")
    return "\n".join(lines)
