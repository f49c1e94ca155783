"""`stackgan hr aggregate STUDY`: the answers as the HR column's numbers, with their protocol.

- HR of a model: the mean of its rank over all answers (each ranked caption counts once; a rater
  who quit early simply contributes fewer answers), ± the standard deviation of those ranks
  (ddof 0). The paper does not say what its ± is.
- Ties: a tied group holds the mean of its positions (answers.py), so every answer's ranks sum to
  m(m+1)/2 and the mean HR over the models is (m + 1) / 2 whatever the ties.
- Kendall's W, the raters' agreement on the order of the models: each rater (a judge) ranks the
  models by their mean rank over that rater's own answers (however many captions they ranked;
  equal means tie), and W is computed over those rankings with the tie correction
  W = 12 S / (n^2 (m^3 - m) - n sum_j T_j), T_j = sum over judge j's tie groups of t^3 - t.
  1: every rater orders the models alike; 0: their preferences cancel. None with one rater, or
  when every rater ties every model.
"""

from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from stackgan.atomic import write_json
from stackgan.errors import UserError
from stackgan.hr.answers import read_answers
from stackgan.hr.study import ANSWERS, load_study

KENDALL_KEY = "kendall-w"


def hr_key(experiment):
    return f"hr_{experiment}"


def default_out(manifest):
    return Path("results/metrics") / manifest["profile"] / f"hr-{manifest['dataset']}.json"


def aggregate(study, out=None):
    study = Path(study)
    manifest = load_study(study)
    answers = read_answers(study / ANSWERS, manifest)
    if not answers:
        raise UserError(f"{study / ANSWERS} holds no answers yet; let raters rank with `stackgan hr serve {study}`")
    record = summarize(manifest, answers)
    out = Path(out) if out else default_out(manifest)
    write_json(out, record)
    return out, record


def summarize(manifest, answers) -> dict:
    experiments = [m["experiment"] for m in manifest["models"]]
    ranks = np.array([[a["ranks"][e] for e in experiments] for a in answers], dtype=float)
    raters = sorted({a["rater"] for a in answers})
    per_rater = [ranks[[i for i, a in enumerate(answers) if a["rater"] == r]].mean(axis=0) for r in raters]
    w = kendall_w([rankdata(means) for means in per_rater])
    n_captions = len(manifest["captions"])
    counts = [sum(a["rater"] == r for a in answers) for r in raters]
    ranked = len({a["caption"] for a in answers})
    ipc = manifest["protocol"]["images_per_caption"]
    agreement = f", Kendall's W {w:.2f}" if w is not None else ""
    ruler = (f"human rank, study `{manifest['study']}`: {len(raters)} raters, {ranked} captions, "
             f"{ipc} images per caption{agreement}")
    metrics = {hr_key(e): {"value": float(ranks[:, j].mean()), "std": float(ranks[:, j].std())}
               for j, e in enumerate(experiments)}
    if w is not None:
        metrics[KENDALL_KEY] = {"value": w, "std": None}
    return {
        "profile": manifest["profile"],
        "human_study": {"study": manifest["study"], "dataset": manifest["dataset"],
                        "manifest_sha256": manifest["sha256"], "seed": manifest["seed"],
                        "raters": len(raters), "raters_who_ranked_every_caption": sum(c == n_captions for c in counts),
                        "answers": len(answers), "answers_per_rater": {"min": min(counts), "max": max(counts)},
                        "captions_ranked": ranked, "captions_in_study": n_captions,
                        "captions_per_class": manifest["protocol"]["captions_per_class"],
                        "images_per_caption": ipc, "models": len(experiments), "kendall_w": w,
                        "definitions": "HR: mean rank over answers, 1 = best, ± std of those ranks (ddof 0); ties "
                                       "share the mean of their positions; Kendall's W over raters' mean ranks, "
                                       "tie-corrected (stackgan/hr/aggregate.py)"},
        "metrics": metrics,
        "protocols": {hr_key(e): {"experiment": e, "ruler": ruler, "num_samples": len(answers),
                                  "seed": manifest["seed"]} for e in experiments},
    }


def kendall_w(rankings) -> float | None:
    """Kendall's W of judges' rankings (one row per judge, ranks 1..m with ties averaged)."""
    r = np.asarray(rankings, dtype=float)
    if r.ndim != 2 or r.shape[0] < 2 or r.shape[1] < 2:
        return None
    n, m = r.shape
    s = float(((r.sum(axis=0) - n * (m + 1) / 2) ** 2).sum())
    ties = sum(float(((t := np.unique(row, return_counts=True)[1]) ** 3 - t).sum()) for row in r)
    denominator = n ** 2 * (m ** 3 - m) - n * ties
    return 12 * s / denominator if denominator > 0 else None
