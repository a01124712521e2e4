"""`rlmem eval DIR --episodes K`: load a run's config and checkpoint, play K episodes, report
the mean return (and, for POPGym, the normalised score; for MiniGrid, the success rate).

Episodes are spread evenly over the envs (env i plays its own quota), so short episodes are
not over-represented. Envs are seeded apart from training (seed + 10**6).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

import numpy as np
import torch

from agents.checkpoint import load_checkpoint, read_config
from agents.ppo import Args, Carry, make_agent, make_envs, resolve_device, to_device
from envs import get_spec


@torch.inference_mode()
def evaluate(
    run_dir: str,
    episodes: int,
    num_envs: int = 16,
    device: str = "auto",
    greedy: bool = False,
    seed: int | None = None,
) -> dict:
    """Plays `episodes` episodes with the run's latest checkpoint; returns the statistics."""
    config = read_config(run_dir)
    args = Args(**{f.name: config[f.name] for f in dataclasses.fields(Args) if f.name in config})
    num_envs = max(1, min(num_envs, episodes))
    args = dataclasses.replace(
        args, num_envs=num_envs, num_workers=min(args.num_workers or 1, num_envs)
    )
    dev = resolve_device(device)
    checkpoint = load_checkpoint(run_dir, map_location=dev)
    envs = make_envs(args)
    agent = make_agent(args, envs).to(dev)
    agent.load_state_dict(checkpoint["model"])
    agent.eval()

    quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
    played = np.zeros(num_envs, dtype=np.int64)
    returns, lengths = [], []
    obs = envs.reset(seed=(args.seed if seed is None else seed) + 10**6)
    carry = Carry(
        to_device(obs, dev),
        torch.ones(num_envs, dtype=torch.bool, device=dev),
        agent.initial_state(num_envs, dev),
    )
    try:
        while (played < quota).any():
            out = agent.act(carry.obs, carry.state, carry.resets, greedy=greedy)
            obs, _, terminated, truncated, info = envs.step(
                agent.env_action(out.action).cpu().numpy()
            )
            for i, ret, length in zip(
                info["done_index"], info["episode_return"], info["episode_length"]
            ):
                if played[i] < quota[i]:
                    played[i] += 1
                    returns.append(float(ret))
                    lengths.append(int(length))
            resets = torch.from_numpy(terminated | truncated).to(dev)
            carry = Carry(to_device(obs, dev), resets, out.state)
    finally:
        envs.close()

    spec = get_spec(args.env)
    result = {
        "run_dir": run_dir,
        "env": args.env,
        "core": args.core,
        "trained_steps": checkpoint["global_step"],
        "episodes": len(returns),
        "greedy": greedy,
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
    }
    if spec.score == "popgym":
        result["normalised_return"] = 0.5 * result["mean_return"] + 0.5
    elif spec.score == "success":
        result["success_rate"] = float(np.mean(np.asarray(returns) > 0))
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="rlmem eval",
        description="Evaluate a trained agent's run directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "run_dir", metavar="DIR", help="run directory written by `rlmem ppo` or `rlmem impala`"
    )
    parser.add_argument("--episodes", type=int, default=100, help="episodes to play")
    parser.add_argument("--num-envs", type=int, default=16, help="parallel envs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--greedy", action="store_true", help="take the most likely action instead of sampling"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="env seed (default: the run's seed; 10**6 is added)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    try:
        result = evaluate(
            args.run_dir, args.episodes, args.num_envs, args.device, args.greedy, args.seed
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"rlmem eval: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    for key, value in result.items():
        text = f"{value:.4f}" if isinstance(value, float) and not math.isnan(value) else value
        print(f"{key:18s} {text}")
    return 0
