"""Where an RL agent's time goes: one acting step vs one PPO minibatch (forward + backward).

    python benchmarks/rl_profile.py --cores hqlt-sync gru --num-envs 512 --device cuda

Acting: `Agent.act` for every env (the core's `step`). Learning: `Agent.evaluate` over
[num_envs / minibatches, T] rows plus backward. Medians after warm-up (compilation excluded).
Set RLMEM_IMPL=torch|triton to force the kernel path.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

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
    args = p.parse_args()
    device = torch.device(args.device)
    venv = make_vector_env(args.env, num_envs=args.num_envs)
    obs_space, action_space = venv.single_observation_space, venv.single_action_space
    impl = os.environ.get("RLMEM_IMPL", "auto")
    print(f"{args.env} N={args.num_envs} T={args.num_steps} impl={impl}")
    print(f"{'core':12s} {'act step ms':>12s} {'act SPS':>10s} {'minibatch f+b ms':>17s}")
    for core in args.cores:
        t_act, t_learn = profile_core(core, obs_space, action_space, args, device)
        print(
            f"{core:12s} {t_act * 1e3:12.2f} {args.num_envs / t_act:10,.0f} {t_learn * 1e3:17.2f}"
        )


def profile_core(core, obs_space, action_space, args, device):
    """Median seconds of one acting step and of one PPO minibatch forward + backward."""
    options = {"n_layers": 3, "d_model": 128}
    agent = Agent(obs_space, action_space, core=core, core_options=options).to(device)
    N, T = args.num_envs, args.num_steps
    obs = {k: torch.zeros(N, *s.shape, device=device) for k, s in obs_space.spaces.items()}
    resets = torch.zeros(N, dtype=torch.bool, device=device)
    state = agent.initial_state(N)

    def act():
        with torch.inference_mode():
            agent.act(obs, state, resets)

    M = N // args.minibatches
    seq = {k: torch.randn(M, T, *s.shape, device=device) for k, s in obs_space.spaces.items()}
    seq_resets = torch.rand(M, T, device=device) < 0.01
    actions = torch.zeros(M, T, dtype=torch.long, device=device)
    start_state = agent.initial_state(M)

    def learn():
        logp, ent, value, _ = agent.evaluate(seq, start_state, seq_resets, actions)
        (logp.sum() + ent.sum() + value.sum()).backward()

    for fn in (act, learn):
        fn(), fn(), fn()  # compile / warm up
    return timed(act, device, args.repeats), timed(learn, device, args.repeats)


if __name__ == "__main__":
    main()
