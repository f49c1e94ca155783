"""A study's answers.jsonl: one JSON object per ranked caption, appended by the server and read
by it on start and by aggregate. Both read through `read_answers`, which refuses a malformed line
(naming it) rather than skipping it: a skipped answer would silently change the HR.

An answer: {"rater", "caption" (a manifest caption id), "presentation", "shown" (experiments in
the order the page showed them), "ranks" ({experiment: rank}, 1 = best; tied models share the
mean of their positions, so ranks always sum to m(m+1)/2), "time" (UTC)}.
"""

import json
import os
import re
from pathlib import Path

from stackgan.errors import UserError

RATER = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
FIELDS = ("rater", "caption", "presentation", "shown", "ranks", "time")


def problem(answer, manifest) -> str | None:
    """What is wrong with one answer, or None."""
    if not isinstance(answer, dict) or set(answer) != set(FIELDS):
        return f"needs exactly the fields {', '.join(FIELDS)}"
    experiments = {m["experiment"] for m in manifest["models"]}
    if not isinstance(answer["rater"], str) or not RATER.match(answer["rater"]):
        return "rater must be 1-64 letters, digits or _.@-"
    if answer["caption"] not in {c["id"] for c in manifest["captions"]}:
        return f"caption {answer['caption']!r} is not in the study"
    if not all(isinstance(answer[k], str) for k in ("presentation", "time")):
        return "presentation and time must be strings"
    if not isinstance(answer["shown"], list) or sorted(map(str, answer["shown"])) != sorted(experiments):
        return "shown must list every model of the study once"
    ranks = answer["ranks"]
    m = len(experiments)
    if (not isinstance(ranks, dict) or set(ranks) != experiments
            or not all(isinstance(r, (int, float)) and not isinstance(r, bool) and 1 <= r <= m for r in ranks.values())
            or abs(sum(ranks.values()) - m * (m + 1) / 2) > 1e-9):
        return f"ranks must give each model of the study a rank in 1..{m} (ties: the mean of their positions)"
    return None


def read_answers(path, manifest) -> list[dict]:
    """Every answer of the file in order, each checked; later duplicates of a (rater, caption) are
    refused too, since the server never writes them."""
    path = Path(path)
    if not path.is_file():
        return []
    answers, seen = [], set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            answer = json.loads(line)
        except ValueError:
            answer, why = None, "is not JSON"
        else:
            why = problem(answer, manifest)
        if why is None and (answer["rater"], answer["caption"]) in seen:
            why = f"repeats rater {answer['rater']!r}'s answer for {answer['caption']}"
        if why is not None:
            raise UserError(f"{path} line {n}: {why}; fix or delete that line (the server only appends valid lines)")
        seen.add((answer["rater"], answer["caption"]))
        answers.append(answer)
    return answers


def ranks_of(groups, experiments) -> dict:
    """{experiment: rank} of tie groups best to worst (lists of experiments): a group at
    positions p..q gets (p + q) / 2, the mean of its positions."""
    ranks, position = {}, 1
    for group in groups:
        for e in group:
            ranks[experiments[e] if isinstance(e, int) else e] = position + (len(group) - 1) / 2
        position += len(group)
    return {k: int(v) if float(v).is_integer() else v for k, v in ranks.items()}


def append(path, answer):
    """Append one line and fsync it before the server says "recorded". An append, not an atomic
    rewrite: a rewrite per answer grows with the study (COCO: 4k captions x 30 raters). One
    os.write of one line to an O_APPEND file; a crash can leave at most a torn last line, which
    read_answers names."""
    data = (json.dumps(answer, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
