"""`stackgan gate`: the CI regression gate on the `ci` profile's metrics.

Compares the metrics files in the working tree with the ones committed at a git revision (the
baseline, as `dvc metrics diff` does), prints the table either way, and fails when a metric
moved past its stated tolerance, appeared or disappeared. Tolerances live in params.yaml `gate`.
"""

import json
import subprocess
from pathlib import Path

from tabulate import tabulate

from stackgan.errors import UserError


def metric_kind(key):
    return key.split("_", 1)[0].rstrip("0123456789k")


def tolerance_of(key, tolerances):
    rule = tolerances.get(metric_kind(key)) or tolerances["default"]
    return float(rule.get("abs", 0.0)), float(rule.get("rel", 0.0))


def committed(rev, path):
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def compare(metrics_dir, rev, tolerances):
    """Rows (file, metric, baseline, current, change, allowed, verdict) and whether all passed."""
    rows, ok = [], True
    files = sorted(Path(metrics_dir).glob("*.json"))
    if not files:
        raise UserError(f"no metrics in {metrics_dir}/; run the ci profile's pipeline first (dvc repro)")
    for path in files:
        base = committed(rev, path.as_posix())
        if base is None:
            rows.append((path.as_posix(), "(file)", "—", "present", "", "", "NEW: commit a baseline"))
            ok = False
            continue
        cur = json.loads(path.read_text())["metrics"]
        for key in sorted(set(base["metrics"]) | set(cur)):
            b, c = base["metrics"].get(key, {}).get("value"), cur.get(key, {}).get("value")
            if b is None or c is None:
                rows.append((path.as_posix(), key, b, c, "", "", "MISSING"))
                ok = False
                continue
            a, r = tolerance_of(key, tolerances)
            allowed = max(a, r * abs(b))
            passed = abs(c - b) <= allowed
            ok &= passed
            rows.append((path.as_posix(), key, f"{b:.4f}", f"{c:.4f}", f"{c - b:+.4f}", f"±{allowed:.4f}",
                         "ok" if passed else "MOVED"))
    return rows, ok


def run_gate(params, metrics_dir, rev="HEAD"):
    tolerances = (params.get("gate") or {}).get("tolerance")
    if not tolerances or "default" not in tolerances:
        raise UserError("params.yaml has no gate.tolerance.default; restore the gate section")
    rows, ok = compare(metrics_dir, rev, tolerances)
    print(tabulate(rows, headers=["Path", "Metric", rev, "workspace", "Change", "Allowed", "Gate"]))
    return ok
