"""rlmem's Triton kernel modules, loaded so that on CPU they run under the Triton interpreter.

Triton itself and every @triton.jit kernel must be created while TRITON_INTERPRET=1, and rlmem
imports triton indirectly (torch.compiler.disable loads dynamo, which loads triton): conftest.py
therefore calls `load_kernels` before any test module is imported. The variable is set only
for these imports, so that other tests' impl="auto" keeps choosing the PyTorch path.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import types

import torch

KERNEL_MODULES = (
    "rlmem.kernels.delta_rule.triton_chunk",
    "rlmem.kernels.delta_rule.triton_step",
    "rlmem.kernels.sliding_window.triton",
    "rlmem.kernels.mix_norm.triton",
)


def load_kernels() -> tuple[list[types.ModuleType] | None, str]:
    """(the kernel modules, "") or (None, why they cannot run here). Compiled on CUDA,
    interpreted on CPU; safe to call again."""
    if torch.cuda.is_available():
        try:
            return [importlib.import_module(n) for n in KERNEL_MODULES], ""
        except ImportError as err:
            return None, f"triton unavailable: {err}"
    already = "triton" in sys.modules
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        try:
            from triton.language import standard
            from triton.runtime.interpreter import InterpretedFunction
        except ImportError as err:
            return None, f"triton unavailable: {err}"
        if already and not isinstance(standard.sum, InterpretedFunction):
            return None, (
                "triton was imported before TRITON_INTERPRET=1 was set; run these tests with "
                "TRITON_INTERPRET=1 in the environment"
            )
        with contextlib.suppress(ImportError):
            importlib.import_module("triton.experimental.gluon")  # imported lazily at launch
        _repair_interpreter_scalar_index()
        return [importlib.import_module(n) for n in KERNEL_MODULES], ""
    finally:
        if saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = saved


def _repair_interpreter_scalar_index() -> None:
    """Triton <= 3.6's interpreter turns a scalar into an index with int() of a 1-element
    array, which NumPy >= 2.4 rejects (it breaks `range(n)` over a kernel argument)."""
    from triton.runtime import interpreter

    if getattr(interpreter, "_rlmem_index_repaired", False):
        return
    original = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interpreter._patch_lang_tensor = patched
    interpreter._rlmem_index_repaired = True
