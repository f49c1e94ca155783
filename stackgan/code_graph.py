"""Which stackgan source files a module runs: its imports, transitively, read from the source with
`ast` (nothing is imported). The training code fingerprint and tests/test_dvc_deps.py (dvc.yaml's
code deps) both come from here.

Every import statement counts, wherever it is (a function's lazy import runs when the function
does); `from package import name` counts the submodule `name` when there is one; importing a
module runs each package's __init__.py on the way; `importlib.import_module` counts a literal
name, and for an f-string name `f"pkg.{x}"` every module of `pkg`.
"""

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent


def module_file(name: str) -> Path | None:
    """The source file of a dotted stackgan module (a package: its __init__.py), or None."""
    parts = name.split(".")
    if parts[0] != PACKAGE.name:
        return None
    base = ROOT.joinpath(*parts)
    for path in (base.parent / f"{base.name}.py", base / "__init__.py"):
        if path.is_file():
            return path
    return None


def sources(*modules: str) -> list[str]:
    """Sorted repo-relative paths of the stackgan files that importing `modules` can run."""
    files, todo = set(), []
    for name in modules:
        if module_file(name) is None:
            raise ModuleNotFoundError(f"{name} is not a module of {PACKAGE.name}/")
        todo.append(name)
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            path = module_file(name)
            if path is not None and path not in files:
                files.add(path)
                st = path.stat()
                todo.extend(_imports(path, name, st.st_mtime_ns, st.st_size))
    return sorted(path.relative_to(ROOT).as_posix() for path in files)


@lru_cache(maxsize=None)
def _imports(path: Path, name: str, *version) -> tuple[str, ...]:
    """Dotted names a file may import (some are attributes, not modules: the caller keeps the
    ones with a file); cached per file version (mtime and size are part of the key)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found += [base] + [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and _callee(node) == "import_module":
            found += _dynamic(node, path)
    return tuple(found)


def _callee(call):
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _dynamic(call, path):
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value]
    if isinstance(arg, ast.JoinedStr) and isinstance(arg.values[0], ast.Constant) \
            and arg.values[0].value.endswith("."):
        package = arg.values[0].value[:-1]
        folder = ROOT.joinpath(*package.split("."))
        return [package] + [f"{package}.{p.stem}" for p in sorted(folder.iterdir())
                            if p.suffix == ".py" and p.stem != "__init__" or (p / "__init__.py").is_file()]
    raise ValueError(f"{path}:{call.lineno}: import_module of a name code_graph cannot read; use a literal "
                     f"or f\"package.{{name}}\"")
