"""IMPALA with V-trace and any memory core: `rlmem impala --env ENV --core CORE`.

Skeleton: Args -> shared buffers and weights -> actor processes (`agents.actors`) -> [take B
unrolls -> replay them with `core.forward` from their start states -> V-trace -> one gradient
step -> publish the weights] -> logs, checkpoints.

* Acting: each of A actor processes steps its own N envs with a CPU copy of the policy
  (`agent.act`, one `core.step` per step, reset flags of the observations) and writes unrolls
  of T steps plus the core state at the unroll start into shared memory.
* Learning: a batch is B unrolls (B N env rows); each row is replayed with `core.forward` over
  its T + 1 observations from the stored start state under the current weights (on the GPU
  when there is one), so the learner's log-probs and values are those of the target policy;
  the value at step T is the bootstrap value. V-trace (`agents.vtrace`) clips the importance
  weights at rho-bar and c-bar, bootstraps a truncation from the value of the final
  observation (computed by the actor that saw it) and stops the trace at a termination.
* Losses are means over the B N T steps: policy gradient with the V-trace advantages,
  `vf_coef` x the squared error to the V-trace targets, minus `ent_coef` x the entropy.
* Weights go to the actors after every update without blocking them (`SharedWeights`); the
  policy lag of each unroll (learner updates since the weights it was played with) is logged.
* Multi-GPU / multi-node: launch with `torchrun --nproc-per-node G -m rlmem.cli impala ...`.
  Each rank has its own actors and learner batch; gradients are averaged with one all-reduce
  per update; rank 0 logs (its own actors' episodes), checkpoints and shows the progress bar.
* Resuming keeps weights, optimizer, counters, RNG and episode statistics; the actors restart
  their episodes cleanly (as `rlmem ppo` does). `rlmem eval DIR` evaluates a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from agents.actors import ActorConfig, ActorFailure, ActorPool, SharedWeights, UnrollBuffers
from agents.args import AgentArgs
from agents.checkpoint import (
    load_checkpoint,
    read_config,
    restore_run_state,
    save_run_state,
    write_config,
)
from agents.metrics import EpisodeStats, Logger, explained_variance, progress_bar
from agents.policy import Agent
from agents.ppo import check_names, print_summary, resolve_device
from agents.vtrace import vtrace
from envs import get_spec
from rlmem.args import arg, explicit_fields, parse_args, parse_options


@dataclass
class Args(AgentArgs):
    total_steps: int = arg(150_000, "total env steps learned from (all ranks)")
    num_actors: int | None = arg(
        None, "actor processes A per rank (default: one per spare CPU core)"
    )
    envs_per_actor: int | None = arg(
        None, "envs N stepped by each actor (default: 8 with a CPU learner, 32 with a GPU learner)"
    )
    unroll_length: int = arg(64, "unroll length T")
    batch_size: int | None = arg(
        None,
        "unrolls B per learner update, B N env rows of T steps "
        "(default: 1 with a CPU learner, 4 with a GPU learner)",
    )
    slots_per_actor: int | None = arg(
        None, "shared unroll buffers per actor (default: enough for one batch, at least 2)"
    )
    run_dir: str | None = arg(
        None, "run directory (default: runs/<env>__<core>__impala__s<seed>__<time>)"
    )
    device: str = arg("auto", "learner device: auto | cpu | cuda", choices=["auto", "cpu", "cuda"])
    optimizer: str = arg(
        "adam", "adam | rmsprop (TorchBeast's: alpha 0.99, eps 0.01)", choices=["adam", "rmsprop"]
    )
    lr: float = arg(2e-3, "learning rate")
    rho_bar: float = arg(
        1.0, "V-trace clip of the importance weights in the targets and the policy gradient"
    )
    c_bar: float = arg(1.0, "V-trace clip of the trace coefficients")
    vtrace_lambda: float = arg(1.0, "V-trace lambda (multiplies the trace coefficients)")
    norm_adv: bool = arg(
        True,
        "normalise the V-trace policy-gradient advantages per batch "
        "(as Sample Factory's APPO and rlmem's PPO do)",
    )
    update_epochs: int = arg(
        1,
        "optimizer steps per batch (1: IMPALA; more reuses each batch, V-trace correcting "
        "for the policy moving in between, as in APPO)",
    )
    checkpoint_every: int = arg(200, "write a checkpoint every K updates (and at the end)")
    log_every: int = arg(10, "log TensorBoard scalars every K updates (averaged over them)")
    max_actor_failures: int = arg(
        3, "give up when one actor dies this many times in a row without delivering an unroll"
    )
    torch_threads: int = arg(1, "CPU threads for the learner's torch")


# Fields a resumed run may change; the others define the run and come from its config.json.
RESUMABLE = {
    "total_steps",
    "device",
    "num_actors",
    "slots_per_actor",
    "checkpoint_every",
    "log_every",
    "max_actor_failures",
    "tensorboard",
    "progress",
    "torch_threads",
    "max_seconds",
    "resume",
}


@dataclass
class Dist:
    """This process's place in a `torchrun` launch (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Dist, torch.device]:
    """Joins the `torchrun` process group when WORLD_SIZE > 1 (NCCL on CUDA, else Gloo) and
    picks this rank's device (cuda:LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    info = Dist(
        int(os.environ["RANK"]),
        world,
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def resolve_args(args: Args, dist: Dist, device: torch.device) -> Args:
    """Fills the defaults that depend on the machine and names the run directory."""
    gpu = device.type == "cuda"
    num_actors = args.num_actors or max(1, (os.cpu_count() or 2) // dist.local_world - 1)
    batch_size = args.batch_size or (4 if gpu else 1)
    envs_per_actor = args.envs_per_actor or (32 if gpu else 8)
    slots = args.slots_per_actor or max(2, math.ceil(batch_size / num_actors) + 1)
    run_dir = args.run_dir or os.path.join(
        "runs",
        f"{args.env.replace('/', '_')}__{args.core}__impala__s{args.seed}__"
        f"{time.strftime('%Y%m%d-%H%M%S')}",
    )
    return dataclasses.replace(
        args,
        num_actors=num_actors,
        slots_per_actor=slots,
        batch_size=batch_size,
        envs_per_actor=envs_per_actor,
        run_dir=run_dir,
    )


def check_args(args: Args) -> None:
    """Raises a ValueError naming the bad argument."""
    check_names(args)
    for name in (
        "envs_per_actor",
        "unroll_length",
        "batch_size",
        "total_steps",
        "log_every",
        "checkpoint_every",
        "update_epochs",
        "num_actors",
        "slots_per_actor",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    resolved = resolve_args(
        dataclasses.replace(args, run_dir=args.run_dir or "-"),
        Dist(local_world=local_world),
        resolve_device(args.device),
    )
    if resolved.num_actors * resolved.slots_per_actor <= resolved.batch_size:
        raise ValueError(
            f"--num-actors {resolved.num_actors} x --slots-per-actor {resolved.slots_per_actor} "
            f"unroll buffers cannot fill a batch of {resolved.batch_size} unrolls while an "
            f"actor writes the next one: need more than {resolved.batch_size} in all"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_agent(args: Args) -> tuple[Agent, Any]:
    """The policy (built from a one-env copy of the run's env, for its spaces) and the
    single-env observation space."""
    config = dataclasses.replace(actor_config(args), num_envs=1)
    envs = config.make_envs()
    try:
        return config.make_agent(envs), envs.single_observation_space
    finally:
        envs.close()


def actor_config(args: Args, seed: int | None = None) -> ActorConfig:
    return ActorConfig(
        env=args.env,
        env_options=parse_options(args.env_opt, "--env-opt"),
        core=args.core,
        core_options=parse_options(args.core_opt, "--core-opt"),
        hidden=args.hidden,
        num_envs=args.envs_per_actor,
        unroll_length=args.unroll_length,
        seed=args.seed if seed is None else seed,
    )


def replay(
    agent: Agent, batch: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replays every row of a batch (see `UnrollBuffers.gather`) with `core.forward` over its
    T + 1 observations from its stored start state, honouring its reset flags.

    Returns:
        log pi(a_t | x_t) [R, T], entropy [R, T], V(x_t) [R, T] and the bootstrap value
        V(x_T) [R], all under the agent's current weights.
    """
    actions = batch["actions"]  # [R, T, ...]
    T = actions.shape[1]
    # Step T only gives the bootstrap value; its action is a placeholder and is not scored.
    actions = torch.cat([actions, actions[:, -1:]], dim=1)
    logp, entropy, values, _ = agent.evaluate(
        batch["obs"], batch["state"], batch["resets"], actions
    )
    return logp[:, :T], entropy[:, :T], values[:, :T], values[:, T]


def impala_loss(
    agent: Agent, batch: dict[str, Any], args: Args
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The IMPALA loss of a batch and its parts (0-dim tensors, plus the values and V-trace
    targets [R, T] for the explained variance)."""
    logp, entropy, values, bootstrap = replay(agent, batch)
    vt = vtrace(
        batch["logprobs"],
        logp.detach(),
        batch["rewards"],
        values.detach(),
        batch["terminated"],
        batch["truncated"],
        batch["final_values"],
        bootstrap.detach(),
        gamma=args.gamma,
        rho_bar=args.rho_bar,
        c_bar=args.c_bar,
        lam=args.vtrace_lambda,
    )
    adv = vt.pg_advantages
    if args.norm_adv:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pg_loss = -(adv * logp).mean()
    v_loss = 0.5 * (vt.vs - values).pow(2).mean()
    ent = entropy.mean()
    loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * ent
    with torch.no_grad():
        parts = {
            "policy_loss": pg_loss.detach(),
            "value_loss": v_loss.detach(),
            "entropy": ent.detach(),
            "rho_mean": vt.rhos.mean(),
            "rho_clipfrac": (vt.rhos > args.rho_bar).float().mean(),
            "vs_mean": vt.vs.mean(),
            "values": values.detach(),
            "targets": vt.vs,
        }
    return loss, parts


def all_reduce_gradients(
    params: list[torch.nn.Parameter], extras: torch.Tensor, world: int
) -> torch.Tensor:
    """Averages the gradients over ranks in one all-reduce, together with `extras` [K] (the
    loss and a stop flag, so that every rank sees the same values and stops together);
    returns the averaged extras."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [extras.float()])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(g).to(g.dtype)
        offset += n
    return flat[offset:]


def gradient_step(
    agent: Agent,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    batch: dict[str, Any],
    args: Args,
    world: int,
    out_of_time: bool,
    update: int,
) -> tuple[dict[str, float], bool, torch.Tensor, torch.Tensor]:
    """One optimizer step on the batch (gradients averaged over ranks when world > 1).

    Returns the loss statistics, whether any rank ran out of time, and the values and V-trace
    targets [R, T] (for the explained variance).
    """
    loss, parts = impala_loss(agent, batch, args)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    extras = torch.stack([loss.detach().float(), loss.new_tensor(float(out_of_time))])
    if world > 1:
        extras = all_reduce_gradients(params, extras, world)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
    values, targets = parts.pop("values"), parts.pop("targets")
    scalars = torch.stack([extras[0], grad_norm, *parts.values(), extras[1]]).tolist()
    stats = dict(zip(["loss", "grad_norm", *parts], scalars))
    if not (math.isfinite(stats["loss"]) and math.isfinite(stats["grad_norm"])):
        raise FloatingPointError(
            f"non-finite IMPALA loss or gradient at update {update}: loss {stats['loss']:.4g}, "
            f"gradient norm {stats['grad_norm']:.4g}, policy {stats['policy_loss']:.4g}, "
            f"value {stats['value_loss']:.4g}, entropy {stats['entropy']:.4g}; not training on "
            "it (lower --lr, check the env's rewards / observations for NaN or inf)"
        )
    optimizer.step()
    return stats, scalars[-1] > 0, values, targets


def train(args: Args, resume_state: dict | None = None, on_update: Any = None) -> dict:
    """Trains (or continues) one run; returns the summary printed at the end.

    `on_update(update, pool)` is called after every update (tests use it to kill actors).
    """
    device = resolve_device(args.device)
    dist, device = init_distributed(device)
    spec = get_spec(args.env)
    if resume_state is None:
        args = resolve_args(args, dist, device)
        if dist.world > 1:
            import torch.distributed as tdist

            names = [args.run_dir]
            tdist.broadcast_object_list(names, src=0)
            args = dataclasses.replace(args, run_dir=names[0])
        if dist.main:
            write_config(args.run_dir, {**dataclasses.asdict(args), "algorithm": "impala"})
    else:
        args = resolve_args(args, dist, device)
    _seed_everything(args.seed)
    torch.set_num_threads(args.torch_threads)
    A, N, T, B = args.num_actors, args.envs_per_actor, args.unroll_length, args.batch_size
    steps_per_update = B * N * T * dist.world
    num_updates = math.ceil(args.total_steps / steps_per_update)

    agent, obs_space = make_agent(args)
    agent = agent.to(device)
    if args.optimizer == "adam":
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.lr, eps=1e-5)
    else:
        optimizer = torch.optim.RMSprop(agent.parameters(), lr=args.lr, alpha=0.99, eps=0.01)
    stats = EpisodeStats(args.stats_window, success=spec.score == "success")
    start_update, global_step = 0, 0
    if resume_state is not None:
        start_update, global_step = restore_run_state(resume_state, agent, optimizer, stats)
    if dist.world > 1:
        import torch.distributed as tdist

        for tensor in agent.state_dict().values():
            tdist.broadcast(tensor, src=0)
    params = [p for p in agent.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)

    # Actors of different ranks (and of a resumed run) play different episodes.
    actor_seed = args.seed + 1_000_003 * dist.rank + 104_729 * start_update
    head = agent.actor
    buffers = UnrollBuffers(
        obs_space,
        head.action_shape,
        head.action_dtype,
        agent.initial_state(N),
        A * args.slots_per_actor,
        N,
        T,
    )
    weights = SharedWeights(agent.state_dict(), version=start_update)
    pool = ActorPool(
        actor_config(args, actor_seed),
        buffers,
        weights,
        A,
        args.slots_per_actor,
        max_failures=args.max_actor_failures,
        report=_report,
    )

    logger = Logger(
        args.run_dir,
        args.tensorboard and dist.main,
        start_step=global_step if resume_state is not None else None,
    )
    if resume_state is None:
        logger.text(
            "config", "\n".join(f"    {k}: {v}" for k, v in dataclasses.asdict(args).items())
        )
    bar = progress_bar(
        num_updates * steps_per_update,
        global_step,
        desc=f"{args.env} {args.core} impala",
        enabled=args.progress and dist.main,
    )
    losses: dict[str, float] = {}
    lags: list[int] = []
    sums: dict[str, float] = {}
    window_updates, wait_time, window_start = 0, 0.0, time.time()
    lag_total, lag_count, wait_total, done_updates = 0, 0, 0.0, 0

    def checkpoint(update: int) -> None:
        if dist.main:
            save_run_state(
                args.run_dir,
                agent,
                optimizer,
                stats,
                update,
                global_step,
                dataclasses.asdict(args),
                algorithm="impala",
            )

    pool.start()
    # SPS counts from the first batch's arrival, after the actors' start-up (imports, envs).
    launch_time = time.time()
    start_time, start_step = launch_time, global_step
    try:
        for update in range(start_update, num_updates):
            if args.anneal_lr:
                optimizer.param_groups[0]["lr"] = args.lr * (1.0 - update / num_updates)
            t0 = time.time()
            unrolls = pool.get(B)
            if update == start_update:
                start_time, start_step = time.time(), global_step + steps_per_update
                window_start = start_time
            else:
                wait_time += time.time() - t0
                wait_total += time.time() - t0
            slots = [u.slot for u in unrolls]
            batch = buffers.gather(slots, device)
            pool.release(slots)
            for u in unrolls:
                stats.add(u.info["returns"], u.info["lengths"])
                lags.append(update - u.info["version"])
            lag_total, lag_count = lag_total + sum(lags[-B:]), lag_count + B

            agent.train()
            out_of_time = args.max_seconds is not None and (
                time.time() - launch_time >= args.max_seconds
            )
            for _ in range(args.update_epochs):
                step, stop, values, targets = gradient_step(
                    agent, optimizer, params, batch, args, dist.world, out_of_time, update
                )
                for key, value in step.items():
                    sums[key] = sums.get(key, 0.0) + value / args.update_epochs
            weights.publish(agent.state_dict(), update + 1)
            global_step += steps_per_update
            window_updates += 1
            stats.update_mmer()
            if on_update is not None:
                on_update(update, pool)

            done_updates = update + 1 - start_update
            last = update + 1 == num_updates or stop
            if dist.main and ((update + 1) % args.log_every == 0 or last):
                now = time.time()
                losses = {k: v / window_updates for k, v in sums.items()}
                losses["explained_variance"] = explained_variance(
                    values.float().cpu().numpy().ravel(), targets.cpu().numpy().ravel()
                )
                sps = (global_step - start_step) / max(now - start_time, 1e-9)
                episode = stats.summary()
                if spec.score != "popgym":
                    episode.pop("mmer_normalised")
                logger.scalars({f"charts/{k}": v for k, v in episode.items()}, global_step)
                logger.scalars({f"losses/{k}": v for k, v in losses.items()}, global_step)
                logger.scalars(
                    {
                        "charts/SPS": sps,
                        "charts/learning_rate": optimizer.param_groups[0]["lr"],
                        "impala/policy_lag_mean": float(np.mean(lags)),
                        "impala/policy_lag_max": float(np.max(lags)),
                        "impala/learner_idle_fraction": wait_time / max(now - window_start, 1e-9),
                        "impala/actor_restarts": pool.restarts,
                    },
                    global_step,
                )
                bar.update(steps_per_update * window_updates)
                bar.set_postfix_str(
                    f"sps={sps:,.0f} return={episode['episodic_return']:.3f} "
                    f"mmer={episode['mmer']:.3f} lag={np.mean(lags):.1f}",
                    refresh=False,
                )
            if (update + 1) % args.log_every == 0 or last:
                lags, sums, window_updates, wait_time = [], {}, 0, 0.0
                window_start = time.time()
            if (update + 1) % args.checkpoint_every == 0 or last:
                checkpoint(update + 1)
            if stop:
                break
        end_time = time.time()
    finally:
        pool.close()
        bar.close()
        logger.close()

    now = end_time
    summary = {
        "env": args.env,
        "core": args.core,
        "algorithm": "impala",
        "params": n_params,
        "steps": global_step,
        "updates": start_update + done_updates,
        "seconds": round(now - launch_time, 1),
        "startup_seconds": round(start_time - launch_time, 1),
        "sps": round((global_step - start_step) / max(now - start_time, 1e-9)),
        "device": str(device),
        "world_size": dist.world,
        "num_actors": A,
        "envs_per_actor": N,
        "actor_restarts": pool.restarts,
        "policy_lag_mean": lag_total / max(lag_count, 1),
        "learner_idle": wait_total / max(now - start_time, 1e-9),
        "run_dir": args.run_dir,
        **stats.summary(),
        "episodes": stats.episodes,
    }
    if spec.score != "popgym":
        summary.pop("mmer_normalised")
    if dist.main:
        with open(os.path.join(args.run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _report(text: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:
        print(text, file=sys.stderr, flush=True)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(
        Args,
        argv,
        prog="rlmem impala",
        description="Train a memory agent with IMPALA (V-trace): actor "
        "processes and a learner on the GPU when there is one.",
    )
    given = explicit_fields(Args, argv)
    resume_state = None
    if args.resume:
        try:
            config = read_config(args.resume)
            resume_state = load_checkpoint(args.resume)
        except FileNotFoundError as err:
            print(f"rlmem impala: {err}", file=sys.stderr)
            return 2
        fixed = sorted(given - RESUMABLE)
        if fixed:
            flags = lambda names: ", ".join("--" + f.replace("_", "-") for f in sorted(names))
            print(
                f"rlmem impala: cannot change {flags(fixed)} when resuming; resumable: "
                f"{flags(RESUMABLE)}",
                file=sys.stderr,
            )
            return 2
        if config.get("algorithm", "impala") != "impala" or "unroll_length" not in config:
            print(
                f"rlmem impala: {args.resume} is not an IMPALA run (resume it with the "
                "command that made it)",
                file=sys.stderr,
            )
            return 2
        config.update({k: getattr(args, k) for k in given})
        config["run_dir"] = args.resume
        args = Args(
            **{f.name: config[f.name] for f in dataclasses.fields(Args) if f.name in config}
        )
        if given - {"resume"} and int(os.environ.get("RANK", "0")) == 0:
            write_config(args.run_dir, {**dataclasses.asdict(args), "algorithm": "impala"})
    try:
        check_args(args)
    except ValueError as err:
        print(f"rlmem impala: {err}", file=sys.stderr)
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # `kill` / `timeout` stop the run cleanly: actors closed, logs flushed
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        summary = train(args, resume_state)
    except (FloatingPointError, ActorFailure) as err:
        print(f"rlmem impala: {err}", file=sys.stderr)
        return 1
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
