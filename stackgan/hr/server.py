"""`stackgan hr serve STUDY`: the ranking page and its small JSON API (Flask).

GET /api/next?rater=ID gives the rater's next unranked caption and its models' images as
anonymous slots; POST /api/answer takes the slots best to worst. The slot order of a
presentation is a pure function of (study, rater, caption), so it is the same after a restart
and needs no state beside answers.jsonl; each answer records it (`shown`). Only the page and the
images the manifest lists are served: never the manifest (it names the models) or the answers.
"""

import threading
from datetime import datetime, timezone
from pathlib import Path

from flask import Flask, abort, jsonify, request, send_file

from stackgan import seeding
from stackgan.hashing import sha256_json
from stackgan.hr import answers as A
from stackgan.hr.study import ANSWERS, load_study

PAGE_TYPES = {"index.html": "text/html", "rank.js": "text/javascript"}


class Study:
    def __init__(self, folder):
        self.folder = Path(folder)
        self.manifest = load_study(self.folder)
        self.experiments = [m["experiment"] for m in self.manifest["models"]]
        self.captions = {c["id"]: c for c in self.manifest["captions"]}
        self.path = self.folder / ANSWERS
        self.done = {(a["rater"], a["caption"]) for a in A.read_answers(self.path, self.manifest)}
        self.lock = threading.Lock()

    def _seed(self, *keys):
        return seeding.content_seed(sha256_json([self.manifest["sha256"], *keys]).encode())

    def presentation(self, rater, caption):
        """(presentation id, the experiments in slot order) of a rater's view of a caption."""
        order = seeding.numpy_rng(self._seed(rater, caption)).permutation(len(self.experiments))
        return sha256_json([self.manifest["sha256"], rater, caption], 16), [self.experiments[i] for i in order]

    def next_for(self, rater):
        ids = list(self.captions)
        order = seeding.numpy_rng(self._seed(rater)).permutation(len(ids))
        left = [ids[i] for i in order if (rater, ids[i]) not in self.done]
        ranked = len(ids) - len(left)
        if not left:
            return {"done": True, "ranked": ranked, "total": len(ids)}
        caption = self.captions[left[0]]
        pid, shown = self.presentation(rater, caption["id"])
        slots = [caption["images"][self.experiments.index(e)] for e in shown]
        return {"done": False, "ranked": ranked, "total": len(ids), "caption": caption["id"],
                "text": caption["text"], "presentation": pid, "slots": [["/" + f for f in s] for s in slots]}

    def record(self, body):
        """'recorded' or 'duplicate'; ValueError (the server's 400) for a malformed post."""
        if not isinstance(body, dict) or set(body) != {"rater", "caption", "presentation", "order"}:
            raise ValueError("post {rater, caption, presentation, order}")
        rater, caption = body["rater"], body["caption"]
        if not isinstance(rater, str) or not A.RATER.match(rater) or caption not in self.captions:
            raise ValueError("unknown rater id form or caption")
        pid, shown = self.presentation(rater, caption)
        if body["presentation"] != pid:
            raise ValueError("presentation does not match this rater and caption")
        groups = self._groups(body["order"], len(shown))
        answer = {"rater": rater, "caption": caption, "presentation": pid, "shown": shown,
                  "ranks": A.ranks_of([[shown[s] for s in g] for g in groups], shown),
                  "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with self.lock:
            if (rater, caption) in self.done:
                return "duplicate"
            A.append(self.path, answer)
            self.done.add((rater, caption))
        return "recorded"

    @staticmethod
    def _groups(order, m):
        """Tie groups of slots, best first: each entry of `order` a slot or a list of tied slots."""
        if not isinstance(order, list):
            raise ValueError("order must be a list")
        groups = [g if isinstance(g, list) else [g] for g in order]
        flat = [s for g in groups for s in g]
        if (not all(groups) or not all(isinstance(s, int) and not isinstance(s, bool) for s in flat)
                or sorted(flat) != list(range(m))):
            raise ValueError(f"order must hold every slot 0..{m - 1} once")
        return groups


def create_app(folder):
    study = Study(folder)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # an answer is a few hundred bytes

    @app.get("/")
    def page():
        return _send(study, "index.html")

    @app.get("/<name>")
    def page_file(name):
        return _send(study, name)

    @app.get("/images/<path:name>")
    def image(name):
        return _send(study, f"images/{name}")

    @app.get("/api/next")
    def next_caption():
        rater = request.args.get("rater", "")
        if not A.RATER.match(rater):
            return jsonify(error="rater id: 1-64 letters, digits or _.@-"), 400
        return jsonify(study.next_for(rater))

    @app.post("/api/answer")
    def answer():
        try:
            status = study.record(request.get_json(silent=True))
        except ValueError as err:
            return jsonify(error=str(err)), 400
        return jsonify(status=status, **study.next_for(request.get_json()["rater"]))

    return app


def _send(study, name):
    """A file the manifest lists (hash-checked on start), by its listed name only: anything else,
    `..` included, is a 404."""
    if name not in study.manifest["files"]:
        abort(404)
    mimetype = PAGE_TYPES.get(name, "image/png")
    return send_file(study.folder.resolve() / name, mimetype=mimetype, max_age=0)


def serve(folder, host="127.0.0.1", port=8765):
    app = create_app(folder)
    print(f"serving {folder} at http://{host}:{port}/ (Ctrl-C stops; answers go to {Path(folder) / ANSWERS})",
          flush=True)
    app.run(host=host, port=port, threaded=True)
