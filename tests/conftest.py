import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from triton_interpreter import load_kernels  # noqa: E402

# Before any test module imports triton: see tests/triton_interpreter.py.
load_kernels()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
