"""Where an RL agent's time goes: one acting step vs one PPO minibatch step, eager and through
the CUDA graphs that `rlmem ppo` uses on a GPU.

    python benchmarks/rl_profile.py --cores hqlt-sync gru --num-envs 512 --device cuda

Acting: `Agent.act` for every env (the core's `step`). Learning: one `PPOLearner` step (loss
over [num_envs / minibatches, T] rows, backward, clipping, Adam). Medians after warm-up
(compilation and capture excluded). Set RLMEM_IMPL=torch|triton to force the kernel path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from agents.graphed import GraphedActor
from agents.learner import LossConfig, PPOLearner, make_optimizer
from agents.policy import Agent
from envs import make_vector_env


def timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="popgym/RepeatPreviousMedium")
    p.add_argument("--cores", nargs="+", default=["hqlt-sync", "gru"])
    p.add_argument("--num-envs", type=int, default=512)
    p.add_argument("--num-steps", type=int, default=64)
    p.add_argument("--minibatches", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument(
        "--rollout",
        action="store_true",
        help="instead: cProfile of whole PPO rollouts (env + acting + storage), top functions",
    )
    args = p.parse_args()
    if args.rollout:
        for core in args.cores:
            profile_rollout(core, args)
        return
    device = torch.device(args.device)
    venv = make_vector_env(args.env, num_envs=args.num_envs)
    obs_space, action_space = venv.single_observation_space, venv.single_action_space
    impl = os.environ.get("RLMEM_IMPL", "auto")
    print(f"{args.env} N={args.num_envs} T={args.num_steps} impl={impl}, medians in ms")
    modes = ["eager", "graph"] if device.type == "cuda" else ["eager"]
    print("| core | mode | act step | act SPS | PPO minibatch step | update (ms) |")
    print("|---|---|---|---|---|---|")
    for core in args.cores:
        for mode in modes:
            t_act, t_learn = profile_core(core, obs_space, action_space, args, device, mode)
            per_update = 4 * args.minibatches * t_learn  # 4 epochs
            print(
                f"| {core} | {mode} | {t_act * 1e3:.2f} | {args.num_envs / t_act:,.0f} | "
                f"{t_learn * 1e3:.2f} | {per_update * 1e3:.0f} |",
                flush=True,
            )


def profile_core(core, obs_space, action_space, args, device, mode):
    """Median seconds of one acting step and of one PPO minibatch step (loss, backward, clip,
    Adam), eagerly or through the CUDA graphs PPO uses."""
    graph = mode == "graph"
    torch.manual_seed(0)
    options = {"n_layers": 3, "d_model": 128}
    agent = Agent(obs_space, action_space, core=core, core_options=options).to(device)
    N, T = args.num_envs, args.num_steps
    obs = {k: torch.zeros(N, *s.shape, device=device) for k, s in obs_space.spaces.items()}
    resets = torch.zeros(N, dtype=torch.bool, device=device)
    actor = GraphedActor(agent, enabled=graph)
    state = [agent.initial_state(N, device)]

    def act():
        with torch.no_grad():
            state[0] = actor(obs, state[0], resets).state

    batch = {
        "obs": {k: torch.randn(N, T, *s.shape, device=device) for k, s in obs_space.spaces.items()},
        "resets": torch.rand(N, T, device=device) < 0.01,
        "actions": torch.zeros(N, T, dtype=torch.long, device=device),
        "logprobs": torch.full((N, T), -1.4, device=device),
        "values": torch.zeros(N, T, device=device),
        "advantages": torch.randn(N, T, device=device),
        "returns": torch.randn(N, T, device=device),
        "state": agent.initial_state(N, device),
    }
    optimizer = make_optimizer(agent, 1e-4, graph=graph)
    learner = PPOLearner(agent, optimizer, LossConfig(), graph=graph)
    learner.load(batch)
    M = N // args.minibatches

    def learn():
        learner.step(torch.randperm(N, device=device)[:M])

    for fn in (act, learn):
        fn(), fn(), fn()  # compile / warm up / capture
    return timed(act, device, args.repeats), timed(learn, device, args.repeats)


def profile_rollout(core: str, args) -> None:
    """cProfile of `ppo.collect_rollout` as `rlmem ppo` runs it (on CUDA: two env groups, each
    acting through its CUDA graph), after two warm-up rollouts."""
    import cProfile
    import pstats

    from agents import ppo
    from agents.metrics import EpisodeStats
    from agents.storage import RolloutStorage

    run = ppo.Args(
        env=args.env,
        core=core,
        core_opt=["n_layers=3", "d_model=128"],
        num_envs=args.num_envs,
        num_steps=args.num_steps,
        num_workers=1,
        env_groups=2 if args.device == "cuda" else 1,
        device=args.device,
    )
    device = torch.device(args.device)
    envs = ppo.make_envs(run)
    agent = ppo.make_agent(run, envs).to(device).eval()
    head = agent.actor
    storage = RolloutStorage(
        envs.single_observation_space,
        head.action_shape,
        head.action_dtype,
        run.num_envs,
        run.num_steps,
        device,
    )
    N = run.num_envs
    carry = ppo.Carry(
        ppo.to_device(envs.reset(seed=0), device),
        torch.ones(N, dtype=torch.bool, device=device),
        agent.initial_state(N, device),
    )
    groups = getattr(envs, "groups", [envs])
    actors = [GraphedActor(agent, enabled=device.type == "cuda") for _ in groups]
    stats = EpisodeStats()
    for _ in range(2):
        carry = ppo.collect_rollout(agent, envs, storage, carry, stats, actors)
    profiler, start = cProfile.Profile(), time.perf_counter()
    profiler.enable()
    for _ in range(3):
        carry = ppo.collect_rollout(agent, envs, storage, carry, stats, actors)
    profiler.disable()
    seconds = (time.perf_counter() - start) / 3
    print(f"\n== {core}: {seconds:.3f} s per rollout of {N} x {run.num_steps} steps (profiled)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(22)
    envs.close()


if __name__ == "__main__":
    main()
