"""dvc.yaml's code deps are the stackgan files each stage's command runs: stackgan/code_graph.py
over what cli.py hands the stage's verb to, so an edit re-runs exactly the stages it can change.
A failure prints the stage's deps block to paste into dvc.yaml."""

import ast
from pathlib import Path

import pytest
import yaml

from stackgan import code_graph

REPO = Path(__file__).resolve().parents[1]
CLI = REPO / "stackgan/cli.py"

# Files a stage runs that are not its deps: no edit to them can change an output a stage writes.
NOT_DEPS = {
    "stackgan/errors.py": "error classes and OS-error wording only; a stage that fails writes no output",
}

# Package data a module reads: a dep of every stage that runs the module.
DATA = {
    "stackgan/hr/study.py": ["stackgan/hr/index.html", "stackgan/hr/rank.js"],
    "stackgan/report.py": ["stackgan/paper_numbers.csv"],
    "stackgan/sources.py": ["stackgan/checksums.json"],
}


def stages():
    """{stage: (verb, deps)} of dvc.yaml; a foreach stage by its template."""
    out = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        assert words[0] == "stackgan", f"dvc.yaml stage '{name}' runs {body['cmd']!r}, not the stackgan CLI"
        out[name] = (words[1], body.get("deps", []))
    return out


def _imported(nodes):
    names = []
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if code_graph.module_file(name)]


def verb_modules():
    """{verb: the stackgan modules `stackgan VERB` imports}: cli.py's own (module level and the
    helpers every command runs) and its handler's, the function build_parser binds to the verb."""
    tree = ast.parse(CLI.read_text())
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    shared = _imported([n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name.startswith("cmd_"))])
    out, verb = {}, None
    for stmt in funcs["build_parser"].body:
        call = getattr(stmt, "value", None)
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
            continue
        if call.func.attr == "add_parser":
            verb = call.args[0].value
        elif call.func.attr == "set_defaults":
            handler = next(k.value.id for k in call.keywords if k.arg == "fn")
            out[verb] = sorted(set(shared + _imported([funcs[handler]])))
    return out


def expected_deps(modules):
    files = set(code_graph.sources(*modules)) | {"stackgan/cli.py"}
    files |= {data for module in files for data in DATA.get(module, [])}
    return sorted(files - set(NOT_DEPS))


def expand(dep):
    """A dep's files: a folder stands for every file in it that git keeps."""
    path = REPO / dep
    if not path.is_dir():
        return [dep]
    return [p.relative_to(REPO).as_posix() for p in sorted(path.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts]


def deps_block(stage, deps):
    """The stage's `deps:` lines as dvc.yaml has them (comments kept), its stackgan ones replaced."""
    lines = (REPO / "dvc.yaml").read_text().splitlines()
    at = next(i for i in range(lines.index(f"  {stage}:"), len(lines)) if lines[i].strip() == "deps:")
    depth = len(lines[at]) - len(lines[at].lstrip())
    items = []
    for line in lines[at + 1:]:
        if not line.lstrip().startswith("- ") or len(line) - len(line.lstrip()) <= depth:
            break
        items.append(line)
    indent = items[0][:items[0].index("-")]
    raw = {line.split("- ", 1)[1].split("#")[0].strip(): line for line in items}
    kept = [line for dep, line in raw.items() if not dep.startswith("stackgan/")]
    return "\n".join([lines[at]] + kept + [raw.get(dep, f"{indent}- {dep}") for dep in deps])


STAGES = stages()


def test_every_stage_verb_is_a_cli_command():
    modules = verb_modules()
    unknown = {stage: verb for stage, (verb, _) in STAGES.items() if verb not in modules}
    assert not unknown, f"dvc.yaml stages run verbs cli.py's build_parser does not bind: {unknown}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_are_the_files_its_command_imports(stage):
    verb, deps = STAGES[stage]
    expected = expected_deps(verb_modules()[verb])
    actual = sorted({f for dep in deps if dep.startswith("stackgan/") for f in expand(dep)})
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    assert not missing and not extra, (
        f"dvc.yaml stage '{stage}' (`stackgan {verb}`): missing {missing}, extra {extra}; "
        f"replace its deps with:\n{deps_block(stage, expected)}")


def test_exclusions_and_package_data_are_current():
    ran = {f for verb, _ in STAGES.values() for f in code_graph.sources(*verb_modules()[verb])}
    assert set(NOT_DEPS) <= ran, f"NOT_DEPS names files no stage runs: {sorted(set(NOT_DEPS) - ran)}"
    data = {p.relative_to(REPO).as_posix() for p in (REPO / "stackgan").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert data == {f for files in DATA.values() for f in files}, "map every package data file to its reader in DATA"
    for module, files in DATA.items():
        source = (REPO / module).read_text()
        assert all(Path(f).name in source for f in files), f"{module} no longer reads {files}"


# -- stackgan/code_graph.py


def test_lazy_imports_submodules_and_packages_count():
    cli = code_graph.sources("stackgan.cli")
    assert "stackgan/report.py" in cli  # imported inside cmd_report only
    assert "stackgan/reproducibility.py" in cli  # `from stackgan import reproducibility`
    assert {"stackgan/__init__.py", "stackgan/metrics/__init__.py"} <= set(cli)
    assert "stackgan/data/mnist.py" in code_graph.sources("stackgan.prepare")  # importlib.import_module(f"...")
    assert cli == sorted(cli) == code_graph.sources("stackgan.cli", "stackgan.report")


def test_refstats_and_classifier_do_not_run_the_metrics_writer():
    assert "stackgan/evaluate.py" not in code_graph.sources("stackgan.metrics.refstats")
    assert "stackgan/metrics/refstats.py" not in code_graph.sources("stackgan.evaluate")
    classifier = code_graph.sources("stackgan.metrics.synthetic_classifier")
    assert "stackgan/evaluate.py" not in classifier and "stackgan/metrics/refstats.py" not in classifier


def test_relative_and_unreadable_imports(tmp_path, monkeypatch):
    pkg = tmp_path / "stackgan"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import os\n\ndef f():\n    from . import b\n    from .sub import c\n",
        "b.py": "from .sub.c import name\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import unused_name\nname = 1\n",
        "sub/d.py": "",
        "dyn.py": "import importlib\n\ndef g(x):\n    return importlib.import_module(x)\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    monkeypatch.setattr(code_graph, "ROOT", tmp_path)
    monkeypatch.setattr(code_graph, "PACKAGE", pkg)
    assert code_graph.sources("stackgan.a") == [
        "stackgan/__init__.py", "stackgan/a.py", "stackgan/b.py", "stackgan/sub/__init__.py", "stackgan/sub/c.py"]
    with pytest.raises(ValueError, match="dyn.py:4"):
        code_graph.sources("stackgan.dyn")
    with pytest.raises(ModuleNotFoundError, match="stackgan.nothing"):
        code_graph.sources("stackgan.nothing")
