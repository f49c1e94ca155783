"""StackGAN-v2 speed on this machine: one training iteration and evaluation sampling.

Run with `pytest bench/` (pytest-benchmark); not part of CI's pass/fail.
"""

from pathlib import Path

import pytest
import torch

from stackgan import config as C
from stackgan.methods.v2 import V2Config, V2Method, build_generator

# synthetic-v2 as the embedded profile trains it
EMBEDDED = C.experiment_config(C.load_params(Path(__file__).resolve().parents[1] / "params.yaml"), "synthetic-v2",
                               "embedded")


def fake_batch(cfg, b):
    sizes = cfg["branch_sizes"]
    return {"imgs": [torch.rand(b, 3, s, s) * 2 - 1 for s in sizes],
            "wrong_imgs": [torch.rand(b, 3, s, s) * 2 - 1 for s in sizes],
            "emb": torch.randn(b, 1024)}


@pytest.mark.parametrize("batch", [24])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "im2col-gemm"])
def test_train_step_embedded(benchmark, batch, onednn):
    """im2col-gemm: convolutions as the pinned CPU profiles run them (stackgan/reproducibility.py);
    the rest of the pins (MKL's COMPATIBLE branch) only take effect before torch loads."""
    method = V2Method(EMBEDDED, torch.device("cpu"))
    data = fake_batch(EMBEDDED, batch)
    gen = torch.Generator().manual_seed(0)
    with torch.backends.mkldnn.flags(enabled=onednn):
        benchmark(lambda: method.train_step(data, method.draw_noise(gen, batch), 0))


@pytest.mark.parametrize("batch", [100])
def test_sampling_embedded(benchmark, batch):
    g = build_generator(V2Config.of(EMBEDDED)).eval()
    z, emb = torch.randn(batch, 100), torch.randn(batch, 1024)

    @torch.no_grad()
    def run():
        return g(z, emb)

    benchmark(run)


def test_train_step_paper_width_cub(benchmark):
    """One CUB-width iteration (GF=DF=64, 64/128/256) at batch 2: the cost per image of the real model."""
    cfg = {**EMBEDDED, "gf_dim": 64, "df_dim": 64, "branch_sizes": [64, 128, 256]}
    method = V2Method(cfg, torch.device("cpu"))
    data = fake_batch(cfg, 2)
    gen = torch.Generator().manual_seed(0)
    benchmark.pedantic(lambda: method.train_step(data, method.draw_noise(gen, 2), 0), rounds=2, iterations=1)
