import os
from pathlib import Path

import pytest
import torch
import yaml

# CI and developer machines have 2 cores; oversubscribing them with intra-op threads makes
# every test slower, and a single thread keeps CPU results deterministic.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(pytest.mark.skip(reason="slow: pass --runslow"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """160 synthetic images prepared in the CUB layout with the short76 view: the data of the
    scratch projects that train a narrow synthetic-v2 (test_train_guards, test_curves)."""
    from stackgan.data import cub, synthetic

    root = tmp_path_factory.mktemp("prepared")
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw = synthetic.generate(root / "raw", num_images=160, seed=3)
    cub.prepare(raw, root / "prepared", views={"short76": params["datasets"]["synthetic"]["views"]["short76"]})
    return root / "prepared"
