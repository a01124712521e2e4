"""The options every RL command shares, as a dataclass parsed by `rlmem.args` (CleanRL style:
each field's `arg(default, help)` is its `--help` line)."""

from __future__ import annotations

from dataclasses import dataclass

from rlmem.args import arg


@dataclass
class AgentArgs:
    """The options every rlmem RL command shares (`rlmem ppo`, `rlmem impala`): the env, the
    agent's core and the run's bookkeeping. Each command's `Args` adds its own."""

    env: str = arg("popgym/RepeatPreviousEasy", "environment name (`rlmem envs` lists them)")
    env_opt: list[str] = arg(
        [], "env options key=value, e.g. agent_view_size=3", metavar="KEY=VALUE"
    )
    core: str = arg("hqlt-sync", "memory core (`rlmem cores` lists them)")
    core_opt: list[str] = arg(
        ["d_model=64", "n_layers=1"],
        "core options key=value, e.g. d_model=128 n_layers=3; they are added after the "
        "laptop-sized defaults, and later values win",
        metavar="KEY=VALUE",
    )
    hidden: int | None = arg(None, "encoder hidden width (default: the core's d_model)")
    seed: int = arg(1, "random seed")
    resume: str | None = arg(
        None,
        "continue the run in this directory (same step counter, "
        "optimizer, RNG and TensorBoard curves)",
        metavar="DIR",
    )
    anneal_lr: bool = arg(True, "anneal the learning rate linearly to 0")
    gamma: float = arg(0.99, "discount")
    ent_coef: float = arg(0.01, "entropy bonus")
    vf_coef: float = arg(0.5, "value loss coefficient")
    max_grad_norm: float = arg(0.5, "gradient clipping norm")
    stats_window: int = arg(100, "episodes in the reporting window (mean return, MMER)")
    max_seconds: float | None = arg(
        None,
        "stop after the update that passes this wall time "
        "(checkpoint and summary are still written)",
    )
    tensorboard: bool = arg(True, "log TensorBoard scalars to the run directory")
    progress: bool = arg(True, "show a progress bar")
