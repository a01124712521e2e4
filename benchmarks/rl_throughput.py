"""RL throughput: env steps per second of the env alone, of acting (env + policy step) and of
PPO end to end (acting + learning).

    python benchmarks/rl_throughput.py --env popgym/RepeatPreviousMedium --core hqlt-sync \
        --core-opt n_layers=3 d_model=128 --num-envs 512 --device cuda

Prints one line per measurement; `--json` prints them as JSON lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from agents import ppo  # noqa: E402
from agents.metrics import EpisodeStats  # noqa: E402
from agents.storage import RolloutStorage  # noqa: E402


def env_sps(args: ppo.Args, steps: int) -> float:
    """Random actions (sampled up front) through the vector env only."""
    envs = ppo.make_envs(args)
    envs.reset(seed=0)
    space = envs.single_action_space
    actions = [np.stack([space.sample() for _ in range(args.num_envs)]) for _ in range(16)]
    n = max(1, steps // args.num_envs)
    envs.step(actions[0])
    start = time.perf_counter()
    for i in range(n):
        envs.step(actions[i % 16])
    elapsed = time.perf_counter() - start
    envs.close()
    return n * args.num_envs / elapsed


def acting_sps(args: ppo.Args, steps: int, device: torch.device) -> float:
    """Rollouts (env + `agent.act` + storage), no learning."""
    envs = ppo.make_envs(args)
    agent = ppo.make_agent(args, envs).to(device).eval()
    storage = RolloutStorage(
        envs.single_observation_space,
        agent.actor.action_shape,
        agent.actor.action_dtype,
        args.num_envs,
        args.num_steps,
        device,
    )
    obs = envs.reset(seed=0)
    carry = ppo.Carry(
        ppo.to_device(obs, device),
        torch.ones(args.num_envs, dtype=torch.bool, device=device),
        agent.initial_state(args.num_envs, device),
    )
    stats = EpisodeStats()
    carry = ppo.collect_rollout(agent, envs, storage, carry, stats)  # warm-up
    rollouts = max(1, steps // (args.num_envs * args.num_steps))
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(rollouts):
        carry = ppo.collect_rollout(agent, envs, storage, carry, stats)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    envs.close()
    return rollouts * args.num_envs * args.num_steps / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="popgym/RepeatPreviousMedium")
    parser.add_argument("--core", default="hqlt-sync")
    parser.add_argument("--core-opt", nargs="*", default=[])
    parser.add_argument("--env-opt", nargs="*", default=[])
    parser.add_argument("--num-envs", type=int, default=None)
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=200_000, help="env steps per measurement")
    parser.add_argument(
        "--only", nargs="*", default=["env", "act", "train"], choices=["env", "act", "train"]
    )
    parser.add_argument("--json", action="store_true")
    a = parser.parse_args(argv)
    device = ppo.resolve_device(a.device)
    with tempfile.TemporaryDirectory() as tmp:
        args = ppo.resolve_args(
            ppo.Args(
                env=a.env,
                core=a.core,
                core_opt=a.core_opt,
                env_opt=a.env_opt,
                num_envs=a.num_envs,
                num_steps=a.num_steps,
                num_workers=a.num_workers,
                device=str(device),
                total_steps=a.steps,
                run_dir=tmp,
                progress=False,
                tensorboard=False,
                checkpoint_every=10**9,
            ),
            device,
        )
        torch.set_num_threads(args.torch_threads)
        rows = []
        if "env" in a.only:
            rows.append(("env only", env_sps(args, a.steps)))
        if "act" in a.only:
            rows.append(("env + acting", acting_sps(args, a.steps, device)))
        if "train" in a.only:
            rows.append(("PPO end to end", ppo.train(dataclasses.replace(args))["sps"]))
    for what, sps in rows:
        record = {
            "what": what,
            "env": a.env,
            "core": a.core,
            "core_opt": a.core_opt,
            "num_envs": args.num_envs,
            "num_workers": args.num_workers,
            "device": str(device),
            "sps": round(sps),
        }
        if a.json:
            print(json.dumps(record))
        else:
            print(
                f"{what:16s} {a.env:30s} {a.core:10s} N={args.num_envs:<5d} "
                f"workers={args.num_workers:<3d} {device.type:5s} {sps:>12,.0f} steps/s"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
