"""What makes a CPU run give the same bits on another x86-64 machine, and the pins that make it so.

Every numerical library under torch picks its kernels from the CPU it finds, and kernels of
different instruction sets sum in different orders (wider vectors, fused multiply-add), so a
GAN trained on an AVX-512 box and on an AVX2 box parts at the first step and ends far apart.
Measured on one machine by switching each library's choice (results/REPRODUCIBILITY.md):
ATen's own kernels (randn, batch norm, softmax, sigmoid, addcmul, bilinear resize) follow
ATEN_CPU_CAPABILITY; every convolution follows oneDNN's ISA; every matrix product follows
MKL's code branch; numpy's and scipy's matrix products (FID) follow OpenBLAS's core type.

The CPU profiles (params.yaml `profiles.<p>.cpu`) pin each of them to a choice that every
x86-64 machine with AVX2 makes the same way, whatever the vendor or core count: ATen at AVX2,
MKL's CNR branch COMPATIBLE (the only one Intel defines as identical on non-Intel CPUs), numpy
at AVX2, OpenBLAS at one fixed core type, and a fixed thread count (parallel sums split by
thread). Convolutions are the one choice with a price: `im2col` (oneDNN off, ATen's im2col +
MKL GEMM) is independent of the machine but about 3x slower; `onednn` keeps oneDNN at its AVX2
kernels, as fast as unpinned, but oneDNN sizes some kernels' blocking from the L1/L2 cache
sizes, so those sizes are part of the contract. The environment variables are read when the
libraries load, so `pin` runs before torch is imported (the CLI does it first).
"""

import ctypes
import os
import platform
from pathlib import Path

# Read by the libraries when they load; values every AVX2 x86-64 CPU resolves identically.
PINNED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
    "OPENBLAS_NUM_THREADS": "1",
}
_MKL_BRANCHES = {0: "unset", 1: "off (auto dispatch)", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3",
                 7: "SSE4_1", 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512",
                 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


CONVOLUTIONS = ("im2col", "onednn")


def settings(params, profile):
    """The profile's `cpu` entry: {pinned, threads, convolutions}; absent means not pinned."""
    entry = ((params.get("profiles") or {}).get(profile) or {}).get("cpu") or {}
    return {"pinned": bool(entry.get("pinned", False)), "threads": entry.get("threads"),
            "convolutions": entry.get("convolutions", "im2col")}


def pin(threads, convolutions="im2col"):
    """Set the pins for this process and its children. Must run before torch is first imported
    to take full effect; if torch is already loaded, the runtime switches still apply and
    `contract()` reports what is really in force."""
    env = dict(PINNED_ENV, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if convolutions == "onednn":
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    os.environ.update(env)
    import torch

    torch.set_num_threads(int(threads))
    torch.backends.mkldnn.enabled = convolutions == "onednn"
    torch.backends.nnpack.set_flags(False)


def _cache_sizes():
    """Per-core L1 data and L2 sizes, as oneDNN reads them to block its kernels."""
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if kind in ("Data", "Unified") and level in ("1", "2"):
            sizes[f"l{level}"] = size
    return sizes or "unknown"


def _mkl_branch():
    import torch

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        return _MKL_BRANCHES.get(lib.mkl_serv_cbwr_get(1), "unknown")
    except (OSError, AttributeError):
        return "not found"


def _library_versions():
    import numpy
    import PIL
    import scipy
    import torch

    build = torch.__config__.show()
    mkl = next((line.split("Version")[1].split("-")[0].strip() for line in build.splitlines()
                if "Math Kernel Library Version" in line), None)
    return {"torch": torch.__version__, "mkl": mkl, "numpy": numpy.__version__, "scipy": scipy.__version__,
            "pillow": PIL.__version__}


def contract():
    """What is in force in this process and decides the bits of a CPU run: equal contracts on two
    machines mean equal bits. Nothing here names the machine itself (see `machine()`)."""
    import numpy
    import torch

    npy = numpy._core._multiarray_umath.__cpu_features__
    return {
        "arch": platform.machine(),
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": _mkl_branch(),
        "convolutions": (f"oneDNN, ISA cap {os.environ.get('ONEDNN_MAX_CPU_ISA', 'none')}"
                         if torch.backends.mkldnn.enabled else "ATen im2col + MKL GEMM"),
        "onednn_cache_sizes": _cache_sizes() if torch.backends.mkldnn.enabled else None,
        "nnpack": bool(torch._C._get_nnpack_enabled()),
        "numpy_simd": "avx512" if npy.get("X86_V4") else "avx2" if npy.get("X86_V3") else "baseline",
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "auto"),
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "pinned": all(os.environ.get(k) == v for k, v in PINNED_ENV.items())
        and (not torch.backends.mkldnn.enabled or os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2"),
        **_library_versions(),
    }


def _cpuinfo():
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", set()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", "unknown"), set(fields.get("flags", "").split())


def machine():
    """The machine itself: what a contract makes irrelevant, recorded beside a baseline."""
    model, flags = _cpuinfo()
    isa = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    libc = "-".join(platform.libc_ver())
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(), "os": f"{platform.system()} {platform.release()}",
            "libc": libc or "unknown", "python": platform.python_version()}


def machine_record_path(profile):
    """Where the machine behind a profile's committed metrics is recorded (`stackgan env --record`)."""
    return Path("results/machines") / f"{profile}.json"


def differences(a, b):
    """Keys on which two contracts disagree: {key: (a, b)}."""
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def warnings_for(contract_, machine_):
    """Why this machine cannot honour the pins, if it cannot."""
    out = []
    if contract_["arch"] not in ("x86_64", "AMD64"):
        out.append(f"this is a {contract_['arch']} machine: the pins name x86-64 kernels, so its bits differ")
    elif "avx2" not in machine_["isa"] or "fma" not in machine_["isa"]:
        out.append("this CPU has no AVX2/FMA: ATen falls back to its scalar kernels, so its bits differ")
    if contract_["pinned"] and contract_["aten_capability"] != "AVX2":
        out.append(f"ATen runs its {contract_['aten_capability']} kernels, not the pinned AVX2 ones")
    if contract_["pinned"] and contract_["mkl_cbwr"] != "COMPATIBLE":
        out.append(f"MKL's code branch is {contract_['mkl_cbwr']}, not the pinned COMPATIBLE "
                   "(was torch imported before the pins were set?)")
    return out


def describe():
    """`stackgan env`: the contract in force, the machine, and whether they can reproduce."""
    c, m = contract(), machine()
    lines = ["what decides the bits of a CPU run here (equal on two machines -> equal results):"]
    lines += [f"  {k:26s} {v}" for k, v in c.items()]
    lines += ["this machine (irrelevant when the contract matches):"]
    lines += [f"  {k:26s} {', '.join(v) if isinstance(v, list) else v}" for k, v in m.items()]
    problems = warnings_for(c, m)
    lines += [f"warning: {p}" for p in problems] or ["this machine can reproduce the committed CPU results bit for bit"
                                                     if c["pinned"] else
                                                     "the pins are off (this profile is not pinned): "
                                                     "results depend on this CPU's kernels"]
    return "\n".join(lines)
