"""rlmem: memory in sequence models, for RL agents and language models."""

from rlmem.memory import CORES, make_core

__version__ = "0.1.0"
__all__ = ["CORES", "make_core", "__version__"]
