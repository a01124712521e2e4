"""Recurrent PPO with any memory core, CleanRL style: `rlmem ppo --env ENV --core CORE`.

Skeleton: Args -> envs -> agent -> storage -> [rollout (core.step) -> GAE -> update (core.forward
over whole env rows from the rollout-start state, minibatches by env)] -> logs, checkpoints.

* Acting: `agent.act` under `torch.inference_mode`, one `core.step` per vector step with the
  reset flags of the observations (True where obs t starts an episode).
* Truncation bootstraps: when step t truncates env n, V(final obs) is computed at once from the
  env's state after step t (before its reset) and used in GAE; terminations stop the trace.
* Update: each env row (or, with `--bptt-chunk C`, each C-step chunk from its stored state) is
  replayed with `core.forward` under the current weights; minibatches split envs, not time.
* `rlmem ppo` with no arguments trains hqlt-sync on popgym/RepeatPreviousEasy for a few
  minutes on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from agents.args import AgentArgs
from agents.checkpoint import (
    load_checkpoint,
    read_config,
    restore_run_state,
    save_run_state,
    write_config,
)
from agents.gae import compute_gae
from agents.graphed import GraphedActor
from agents.learner import (
    SKIPPED,
    STAT_KEYS,
    LossConfig,
    PPOLearner,
    get_lr,
    make_optimizer,
    restore_optimizer,
    set_lr,
)
from agents.metrics import EpisodeStats, Logger, Throughput, explained_variance, progress_bar
from agents.policy import ActOutput, Agent
from agents.storage import RolloutStorage
from envs import get_spec, make_vector_env
from rlmem.args import arg, explicit_fields, parse_args, parse_options
from rlmem.memory import cat_states, core_options, index_state


@dataclass
class Args(AgentArgs):
    total_steps: int = arg(150_000, "total env steps")
    num_envs: int | None = arg(None, "parallel envs N (default: 16 on CPU, 512 on CUDA)")
    num_steps: int = arg(64, "rollout length T per env and update")
    env_groups: int | None = arg(
        None,
        "step the envs in this many groups, in turn: one group's envs step on the CPU while "
        "the GPU acts for the next (default: 2 on CUDA, 1 on CPU)",
    )
    num_workers: int | None = arg(
        None,
        "env processes (default: 1 = in-process for POPGym and gymnasium, up to 8 for MiniGrid)",
    )
    run_dir: str | None = arg(None, "run directory (default: runs/<env>__<core>__s<seed>__<time>)")
    device: str = arg("auto", "auto | cpu | cuda", choices=["auto", "cpu", "cuda"])
    lr: float = arg(2e-3, "Adam learning rate")
    gae_lambda: float = arg(0.95, "GAE lambda")
    num_minibatches: int = arg(4, "minibatches per epoch (split by env / sequence, not time)")
    update_epochs: int = arg(4, "epochs per update")
    norm_adv: bool = arg(True, "normalise advantages per minibatch")
    clip_coef: float = arg(0.2, "PPO ratio clip")
    clip_vloss: bool = arg(True, "clip the value loss")
    target_kl: float | None = arg(None, "stop the epochs of an update early above this KL")
    bptt_chunk: int | None = arg(
        None,
        "truncated BPTT: replay C-step chunks from the states "
        "stored at chunk starts (default: whole rows)",
    )
    checkpoint_every: int = arg(50, "write a checkpoint every K updates (and at the end)")
    cuda_graph: bool = arg(
        True,
        "on CUDA, act and take PPO steps through CUDA graphs (both are launch-bound)",
    )
    torch_threads: int = arg(1, "CPU threads for torch (small models run best on one)")


# Fields a resumed run may change; the others define the run and come from its config.json.
RESUMABLE = {
    "total_steps",
    "device",
    "num_workers",
    "env_groups",
    "checkpoint_every",
    "tensorboard",
    "progress",
    "cuda_graph",
    "torch_threads",
    "max_seconds",
    "resume",
}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    return torch.device(name)


def resolve_args(args: Args, device: torch.device) -> Args:
    """Fills the defaults that depend on the device and env, and names the run directory."""
    spec = get_spec(args.env)
    num_envs = args.num_envs or (512 if device.type == "cuda" else 16)
    num_workers = args.num_workers
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1, num_envs) if spec.family == "minigrid" else 1
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = args.run_dir or os.path.join(
        "runs", f"{args.env.replace('/', '_')}__{args.core}__s{args.seed}__{stamp}"
    )
    env_groups = args.env_groups or (2 if device.type == "cuda" else 1)
    return dataclasses.replace(
        args, num_envs=num_envs, num_workers=num_workers, env_groups=env_groups, run_dir=run_dir
    )


def make_envs(args: Args):
    return make_vector_env(
        args.env,
        args.num_envs,
        parse_options(args.env_opt, "--env-opt"),
        num_workers=args.num_workers,
        groups=args.env_groups or 1,
    )


def make_agent(args: Args, envs) -> Agent:
    return Agent(
        envs.single_observation_space,
        envs.single_action_space,
        args.core,
        parse_options(args.core_opt, "--core-opt"),
        hidden=args.hidden,
    )


def to_device(obs: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in obs.items()}


@dataclass
class Carry:
    """What the actor carries from one rollout to the next."""

    obs: dict[str, torch.Tensor]  # [N, ...] the next observation
    resets: torch.Tensor  # bool [N]: obs starts an episode
    state: object  # core state before consuming obs


@dataclass
class _EnvGroup:
    """One group of envs in the actor loop (rows `rows` of the rollout)."""

    envs: object
    rows: slice
    actor: object
    obs: dict[str, torch.Tensor]
    resets: torch.Tensor
    state: object
    out: ActOutput | None = None
    actions: torch.Tensor | None = None  # env actions on their way to the CPU
    copied: torch.cuda.Event | None = None


def collect_rollout(
    agent: Agent, envs, storage: RolloutStorage, carry: Carry, stats: EpisodeStats, actors=None
) -> Carry:
    """Fills `storage` with T steps of every env and returns the carry for the next rollout.

    `actors` (default `agent.act`) act for every env, e.g. `GraphedActor`s: one actor, or one
    per group of a `GroupedVectorEnv`. With groups, each step of group g's envs runs on the CPU
    while the GPU acts for the next group, so that acting hides behind env stepping; the
    rollout is the same as ungrouped, up to the order of random draws.
    """
    device = storage.device
    venvs, offsets = getattr(envs, "groups", [envs]), getattr(envs, "offsets", [0])
    if actors is None:
        actors = [agent.act] * len(venvs)
    elif not isinstance(actors, (list, tuple)):
        actors = [actors]
    if len(actors) != len(venvs):
        raise ValueError(f"{len(venvs)} env groups need as many actors, got {len(actors)}")
    whole = len(venvs) == 1  # keep the carried state as it is (a graph's own buffer)
    groups = []
    for venv, offset, actor in zip(venvs, offsets, actors):
        rows = slice(int(offset), int(offset) + venv.num_envs)
        groups.append(
            _EnvGroup(
                venv,
                rows,
                actor,
                {k: v[rows] for k, v in carry.obs.items()},
                carry.resets[rows],
                carry.state if whole else index_state(carry.state, rows),
            )
        )

    def act(g: _EnvGroup, t: int) -> None:
        with torch.no_grad():
            g.out = g.actor(g.obs, g.state, g.resets)
        g.state = g.out.state
        storage.insert_action(
            t, g.obs, g.resets, g.out.action, g.out.logprob, g.out.value, rows=g.rows
        )
        actions = agent.env_action(g.out.action)
        if device.type == "cuda":  # copy back without waiting; `finish` waits
            if g.actions is None:
                g.actions = torch.empty(actions.shape, dtype=actions.dtype, pin_memory=True)
            g.actions.copy_(actions, non_blocking=True)
            g.copied = g.copied or torch.cuda.Event()  # one per group, recorded every step
            g.copied.record()
        else:
            g.actions = actions

    def finish(g: _EnvGroup, t: int) -> None:
        """Steps the group's envs with its actions of step t and stores the outcome."""
        if g.copied is not None:
            g.copied.synchronize()
        obs, reward, terminated, truncated, info = g.envs.step(g.actions.numpy().copy())
        flags = torch.from_numpy(np.stack([reward, terminated, truncated]).astype(np.float32))
        reward_t, term_t, trunc_t = flags.to(device, non_blocking=True).unbind(0)
        term_t, trunc_t = term_t > 0.5, trunc_t > 0.5
        storage.insert_outcome(t, reward_t, term_t, trunc_t, rows=g.rows)
        done = info["done_index"]
        if len(done):
            stats.add(info["episode_return"], info["episode_length"])
            bootstrap = truncated[done] & ~terminated[done]
            if bootstrap.any():
                rows = torch.from_numpy(done[bootstrap]).to(device)
                final = to_device({k: v[bootstrap] for k, v in info["final_obs"].items()}, device)
                with torch.inference_mode():
                    final_value = agent.value(final, index_state(g.out.state, rows))
                storage.final_values[rows + g.rows.start, t] = final_value
        g.obs, g.resets = to_device(obs, device), term_t | trunc_t

    pending = None
    for t in range(storage.num_steps):
        if t % storage.chunk == 0:
            states = [g.state for g in groups]
            storage.store_state(t, states[0] if whole else cat_states(states))
        for g in groups:
            act(g, t)
            if whole:
                finish(g, t)
                continue
            if pending is not None:  # the group that acted before this one, on the CPU now
                finish(*pending)
            pending = (g, t)
    if pending is not None:
        finish(*pending)
    if whole:
        g = groups[0]
        return Carry(g.obs, g.resets, g.state)
    obs = {k: torch.cat([g.obs[k] for g in groups]) for k in carry.obs}
    resets = torch.cat([g.resets for g in groups])
    return Carry(obs, resets, cat_states([g.state for g in groups]))


def loss_config(args: Args) -> LossConfig:
    return LossConfig(
        clip_coef=args.clip_coef,
        clip_vloss=args.clip_vloss,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        norm_adv=args.norm_adv,
        max_grad_norm=args.max_grad_norm,
    )


def ppo_update(learner: PPOLearner, batch: dict, args: Args, update: int) -> dict[str, float]:
    """Runs the PPO epochs on `batch` (see `RolloutStorage.sequences`); returns the mean loss
    stats. Raises FloatingPointError if any minibatch had non-finite gradients (the learner
    skipped those optimizer steps, so the weights are still finite)."""
    S = batch["resets"].shape[0]
    mb_size = max(1, S // args.num_minibatches)
    device = batch["resets"].device
    learner.load(batch)
    sums = torch.zeros(len(STAT_KEYS) + 1, device=device)
    count = 0
    starts = range(0, S - mb_size + 1, mb_size)
    for _ in range(args.update_epochs):
        epoch_sums = torch.zeros_like(sums)
        perm = torch.randperm(S, device=device)
        for start in starts:
            epoch_sums += learner.step(perm[start : start + mb_size])
        sums += epoch_sums
        count += len(starts)
        kl = epoch_sums[STAT_KEYS.index("approx_kl")] / len(starts)
        if args.target_kl is not None and kl.item() > args.target_kl:  # stop early
            break
    means = (sums / max(count, 1)).tolist()
    skipped = round(means[SKIPPED] * count)
    if skipped:
        raise FloatingPointError(
            f"non-finite PPO loss or gradients in {skipped} of {count} minibatches at update "
            f"{update} (those optimizer steps were skipped; nothing was trained on them): "
            f"mean policy loss {means[0]:.4g}, value loss {means[1]:.4g}, entropy "
            f"{means[2]:.4g}. Lower --lr, or check the env's rewards / observations for NaN or inf"
        )
    return dict(zip(STAT_KEYS, means[:SKIPPED]))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(args: Args, resume_state: dict | None = None) -> dict:
    """Trains (or continues) one run; returns the summary printed at the end."""
    device = resolve_device(args.device)
    spec = get_spec(args.env)
    if resume_state is None:
        args = resolve_args(args, device)
        write_config(args.run_dir, dataclasses.asdict(args))
    _seed_everything(args.seed)
    torch.set_num_threads(args.torch_threads)
    N, T = args.num_envs, args.num_steps
    batch_steps = N * T
    num_updates = math.ceil(args.total_steps / batch_steps)

    envs = make_envs(args)
    agent = make_agent(args, envs).to(device)
    graphs = args.cuda_graph and device.type == "cuda"
    optimizer = make_optimizer(agent, args.lr, graph=graphs)
    stats = EpisodeStats(args.stats_window, success=spec.score == "success")
    start_update, global_step = 0, 0
    if resume_state is not None:
        start_update, global_step = restore_run_state(
            resume_state, agent, optimizer, stats, restore_optimizer
        )

    action_head = agent.actor
    storage = RolloutStorage(
        envs.single_observation_space,
        action_head.action_shape,
        action_head.action_dtype,
        N,
        T,
        device,
        args.bptt_chunk,
    )
    logger = Logger(
        args.run_dir, args.tensorboard, start_step=global_step if resume_state is not None else None
    )
    if resume_state is None:
        logger.text(
            "config", "\n".join(f"    {k}: {v}" for k, v in dataclasses.asdict(args).items())
        )
    n_params = sum(p.numel() for p in agent.parameters())

    # Resuming restarts episodes cleanly (see agents.checkpoint); envs reseed per start update.
    obs = envs.reset(seed=args.seed + 104_729 * start_update)
    carry = Carry(
        to_device(obs, device),
        torch.ones(N, dtype=torch.bool, device=device),
        agent.initial_state(N, device),
    )

    bar = progress_bar(
        num_updates * batch_steps,
        global_step,
        desc=f"{args.env} {args.core}",
        enabled=args.progress,
    )
    clock = Throughput(global_step)
    losses: dict[str, float] = {}

    def checkpoint(update: int) -> None:
        save_run_state(
            args.run_dir, agent, optimizer, stats, update, global_step, dataclasses.asdict(args)
        )

    actors = [GraphedActor(agent, enabled=graphs) for _ in getattr(envs, "groups", [envs])]
    learner = PPOLearner(agent, optimizer, loss_config(args), graph=graphs)
    try:
        for update in range(start_update, num_updates):
            if args.anneal_lr:
                set_lr(optimizer, args.lr * (1.0 - update / num_updates))
            agent.eval()
            clock.phase("other")  # logging, checkpoints
            carry = collect_rollout(agent, envs, storage, carry, stats, actors)
            global_step += batch_steps
            with torch.inference_mode():
                next_value = agent.value(carry.obs, carry.state, carry.resets)
            advantages, returns = compute_gae(
                storage.rewards,
                storage.values,
                storage.terminated,
                storage.truncated,
                storage.final_values,
                next_value.clone(),
                args.gamma,
                args.gae_lambda,
            )
            agent.train()
            clock.phase("rollout")
            losses = ppo_update(
                learner, storage.sequences(advantages=advantages, returns=returns), args, update
            )
            clock.phase("update")
            clock.update_done(global_step)
            losses["explained_variance"] = explained_variance(
                storage.values.cpu().numpy().ravel(), returns.cpu().numpy().ravel()
            )
            sps = clock.sps()
            stats.update_mmer()
            episode = stats.summary()
            if spec.score != "popgym":
                episode.pop("mmer_normalised")
            logger.scalars({f"charts/{k}": v for k, v in episode.items()}, global_step)
            logger.scalars({f"losses/{k}": v for k, v in losses.items()}, global_step)
            logger.scalars(
                {"charts/SPS": sps, "charts/learning_rate": get_lr(optimizer)},
                global_step,
            )
            logger.scalars({f"perf/{k}": v for k, v in clock.summary().items()}, global_step)
            bar.update(batch_steps)
            bar.set_postfix_str(
                f"sps={sps:,.0f} return={episode['episodic_return']:.3f} "
                f"mmer={episode['mmer']:.3f}",
                refresh=False,
            )
            out_of_time = args.max_seconds is not None and clock.seconds() >= args.max_seconds
            if (
                (update + 1) % args.checkpoint_every == 0
                or update + 1 == num_updates
                or (out_of_time)
            ):
                checkpoint(update + 1)
            if out_of_time:
                break
    finally:
        bar.close()
        logger.close()
        envs.close()

    summary = {
        "env": args.env,
        "core": args.core,
        "params": n_params,
        "steps": global_step,
        "updates": global_step // batch_steps,
        "seconds": round(clock.seconds(), 1),
        **clock.summary(),
        "device": str(device),
        "num_envs": N,
        "run_dir": args.run_dir,
        **stats.summary(),
        "episodes": stats.episodes,
    }
    if spec.score != "popgym":
        summary.pop("mmer_normalised")
    with open(os.path.join(args.run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def check_names(args: Args) -> None:
    """Raises a ValueError listing the valid names for a bad env, core or core option."""
    get_spec(args.env)
    valid = core_options(args.core)
    unknown = sorted(set(parse_options(args.core_opt, "--core-opt")) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for core {args.core!r}; valid options: {sorted(valid)}"
        )
    parse_options(args.env_opt, "--env-opt")


def print_summary(summary: dict) -> None:
    print("\nrun summary")
    for key, value in summary.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:18s} {text}")
    if summary.get("run_dir"):
        print(f"curves: rlmem plot {summary['run_dir']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(
        Args, argv, prog="rlmem ppo", description="Train a memory agent with recurrent PPO."
    )
    given = explicit_fields(Args, argv)
    resume_state = None
    if args.resume:
        config = read_config(args.resume)
        if config.get("algorithm", "ppo") != "ppo":
            print(
                f"rlmem ppo: {args.resume} is an {config['algorithm']} run; resume it with "
                f"`rlmem {config['algorithm']} --resume`",
                file=sys.stderr,
            )
            return 2
        fixed = sorted(given - RESUMABLE)
        if fixed:
            print(
                f"rlmem ppo: cannot change {', '.join('--' + f.replace('_', '-') for f in fixed)}"
                f" when resuming; resumable: "
                f"{', '.join('--' + f.replace('_', '-') for f in sorted(RESUMABLE))}",
                file=sys.stderr,
            )
            return 2
        config.update({k: getattr(args, k) for k in given})
        config["run_dir"] = args.resume
        args = Args(
            **{f.name: config[f.name] for f in dataclasses.fields(Args) if f.name in config}
        )
        resume_state = load_checkpoint(args.resume)
        if given & {"total_steps"}:
            write_config(args.run_dir, dataclasses.asdict(args))
    try:
        check_names(args)
    except ValueError as err:
        print(f"rlmem ppo: {err}", file=sys.stderr)
        return 2
    try:
        summary = train(args, resume_state)
    except FloatingPointError as err:
        print(f"rlmem ppo: {err}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
