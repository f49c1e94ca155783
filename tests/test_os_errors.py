"""Read-only and full output folders end as one line with a remedy, exit 2, and leave nothing behind.

Each case runs the CLI in a user namespace with a tmpfs of a few hundred KB mounted as its output
folder, so the disk really is full (or read-only) and no monkeypatching stands in for the kernel.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stackgan.data import synthetic

REPO = Path(__file__).resolve().parents[1]


def _namespaces_work():
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = [pytest.mark.subprocess,
              pytest.mark.skipif(not _namespaces_work(), reason="needs user namespaces (unshare -rm) for a tmpfs")]


def run_on_tmpfs(mount: Path, options: str, *args):
    """`stackgan ARGS` with a fresh tmpfs (mount options `options`) at `mount`."""
    mount.mkdir(parents=True, exist_ok=True)
    cli = " ".join([sys.executable, "-m", "stackgan.cli", *args])
    script = f"mount -t tmpfs -o {options} tmpfs {mount} && {cli}; rc=$?; ls -A {mount}; exit $rc"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, capture_output=True, text=True)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stackgan: error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "synthetic"
    synthetic.generate(out, num_images=24, seed=0)
    return out


def test_fetch_into_a_full_disk(tmp_path):
    proc = run_on_tmpfs(tmp_path / "disk", "size=256k", "fetch", "synthetic", "--out", str(tmp_path / "disk/raw"))
    line = one_line_error(proc)
    assert "No space left on device" in line and "free space" in line
    assert proc.stdout.strip() == ""  # `ls -A` of the tmpfs: no staging folder, no half-written file


def test_fetch_into_a_read_only_folder(tmp_path):
    proc = run_on_tmpfs(tmp_path / "disk", "size=1m,ro", "fetch", "synthetic", "--out", str(tmp_path / "disk/raw"))
    line = one_line_error(proc)
    assert "read-only" in line and str(tmp_path / "disk") in line
    assert proc.stdout.strip() == ""


@pytest.mark.parametrize("options,expect", [("size=64k", "free space"), ("size=1m,ro", "read-only")])
def test_prepare_into_a_full_or_read_only_disk(tmp_path, raw, options, expect):
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    proc = run_on_tmpfs(tmp_path / "disk", options, "--profile", "ci", "prepare", "synthetic", "--raw", str(raw),
                        "--out", str(tmp_path / "disk/prepared"))
    assert expect in one_line_error(proc)
    assert proc.stdout.strip() == ""
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == before


def test_an_atomic_write_on_a_full_disk_names_its_file_and_leaves_no_temporary(tmp_path):
    mount = tmp_path / "disk"
    proc = subprocess.run(["unshare", "-rm", "sh", "-c",
                           f"mkdir -p {mount} && mount -t tmpfs -o size=4k tmpfs {mount} && "
                           f"{sys.executable} -m stackgan.cli report --out {mount}/tables; rc=$?; "
                           f"find {mount} -name '*.tmp'; exit $rc"], cwd=REPO, capture_output=True, text=True)
    line = one_line_error(proc)
    assert line.startswith(f"stackgan: error: cannot use {mount}/tables/") and "No space left on device" in line
    assert proc.stdout.strip() == ""  # no temporary file survived the failed write
