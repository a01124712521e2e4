import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


def _create_triton_kernels_for_the_interpreter() -> None:
    """On CPU, tests/test_triton_kernels.py needs Triton and every @triton.jit kernel created
    under TRITON_INTERPRET=1, and rlmem imports triton indirectly (torch.compiler.disable
    loads dynamo, which loads triton) in whichever test module comes first: so create them
    here, before any test module. The variable is restored at once, so that other tests'
    impl="auto" keeps choosing the PyTorch path."""
    if torch.cuda.is_available() or "triton" in sys.modules:
        return
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import rlmem.kernels.delta_rule.triton_chunk  # noqa: F401
        import rlmem.kernels.delta_rule.triton_step  # noqa: F401
        import rlmem.kernels.sliding_window.triton  # noqa: F401
    except ImportError:  # no triton: its tests skip themselves
        pass
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


_create_triton_kernels_for_the_interpreter()


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
