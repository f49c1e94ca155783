"""Which ops' results follow which library's kernel choice: the evidence behind the CPU pins.

    python bench/kernel_choices.py        # a Markdown table, as in results/REPRODUCIBILITY.md

Each column runs every op in a fresh process with one library told to dispatch differently, as
a CPU of another instruction set would make it; a cell says whether the op's bytes changed
against the machine's own choice. Inputs come from numpy's generator, whose bits no CPU
choice changes, except the `randn` row, which is torch's own sampler.
"""

import hashlib
import json
import os
import subprocess
import sys

CHOICES = {
    "ATen kernels (ATEN_CPU_CAPABILITY=default)": {"ATEN_CPU_CAPABILITY": "default"},
    "oneDNN ISA (ONEDNN_MAX_CPU_ISA=SSE41)": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "MKL branch (MKL_CBWR=COMPATIBLE)": {"MKL_CBWR": "COMPATIBLE"},
    "OpenBLAS core (OPENBLAS_CORETYPE=Prescott)": {"OPENBLAS_CORETYPE": "Prescott"},
    "numpy SIMD (NPY_DISABLE_CPU_FEATURES=X86_V3)": {"NPY_DISABLE_CPU_FEATURES": "X86_V3"},
}


def digest(array):
    return hashlib.sha256(array.tobytes()).hexdigest()[:12]


def run_ops():
    import numpy as np
    import scipy.linalg
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)

    def normal(*shape):
        return torch.from_numpy(rng.standard_normal(shape).astype(np.float32))

    x, w, a, b = normal(16, 32, 16, 16).requires_grad_(), normal(64, 32, 4, 4).requires_grad_(), normal(257, 513), \
        normal(513, 129)
    torch.manual_seed(0)
    out = {"randn": torch.randn(1000)}
    y = F.conv2d(x, w, stride=2, padding=1)
    out["conv2d"] = y
    out["conv2d backward (weight)"] = torch.autograd.grad(y.square().sum(), w)[0]
    out["conv_transpose2d"] = F.conv_transpose2d(x.detach(), normal(32, 16, 4, 4), stride=2, padding=1)
    out["matmul"] = a @ b
    out["batch_norm"] = F.batch_norm(x.detach(), None, None, training=True)
    out["sum"] = a.sum(1)
    out["softmax"] = F.softmax(a, 1)
    out["sigmoid"] = a.sigmoid()
    out["exp"] = a.exp()
    out["addcmul"] = torch.addcmul(a, a, a, value=0.3)
    out["bilinear resize"] = F.interpolate(x.detach(), size=(23, 23), mode="bilinear", align_corners=False)
    p = torch.nn.Parameter(normal(1000))
    opt = torch.optim.Adam([p], lr=1e-3)
    for _ in range(3):
        p.grad = normal(1000)
        opt.step()
    out["adam step"] = p
    digests = {k: digest(v.detach().contiguous().numpy()) for k, v in out.items()}
    a64 = a.numpy().astype(np.float64)
    digests["numpy matmul (float64)"] = digest(a64 @ a64.T)
    digests["scipy sqrtm (FID)"] = digest(np.ascontiguousarray(scipy.linalg.sqrtm(a64[:64] @ a64[:64].T).real))
    return digests


def in_fresh_process(env):
    full = dict(os.environ, OMP_NUM_THREADS="1", **env)
    proc = subprocess.run([sys.executable, __file__, "--ops"], env=full, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main():
    native = in_fresh_process({})
    columns = {name: in_fresh_process(env) for name, env in CHOICES.items()}
    print("| op | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for op, value in native.items():
        print(f"| {op} | " + " | ".join("**differs**" if col[op] != value else "same" for col in columns.values()) + " |")


if __name__ == "__main__":
    if sys.argv[1:] == ["--ops"]:
        print(json.dumps(run_ops()))
    else:
        main()
