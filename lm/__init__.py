"""Language models and synthetic tasks from rlmem's memory cores.

lm.model       LM (embedding -> core -> head), LMConfig, generation
lm.tokenizer   byte-level and locally trained BPE tokenizers
lm.data        corpora (default: the Python standard library's source), memmap shards
lm.train       pretraining (AdamW, cosine, bf16, accumulation, checkpoints, DDP)
lm.generate    sampling from a run; lm.evaluate: validation perplexity of a run
lm.tasks       parity, modular arithmetic (with/without brackets), MQAR
lm.train_task  training and normalised test accuracy on a task
lm.cli         `rlmem lm train | generate | eval | task | prepare`
"""

from lm.model import LM, LMConfig

__all__ = ["LM", "LMConfig"]
