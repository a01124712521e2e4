"""IMPALA actors: processes that step their own envs with a CPU copy of the policy and hand
unrolls to the learner through shared memory.

Data path (no tensor is pickled per unroll):

    UnrollBuffers   S slots in shared memory, each one unroll of N envs x T steps; actor a owns
                    slots [a K, (a + 1) K) (K = slots per actor, 2 = double buffering)
    actor  --("unroll", slot, info)-->  learner     over the actor's own Pipe
    learner --("free", slot)-->  actor              once the learner has copied the slot out
    SharedWeights   the learner's state dict in shared memory behind a seqlock version counter

An unroll in slot s holds, for each of the actor's N envs (row n):

    obs[s, n, 0..T]      T + 1 observations: the last one is the next unroll's first, so the
                         learner can compute the bootstrap value V(x_T) with its own weights
    resets[s, n, 0..T]   True where obs t starts an episode (the core resets before it)
    state[s, n]          the actor's core state before consuming obs 0 (the unroll start)
    actions, logprobs    [s, n, 0..T-1] what the behaviour policy did and log mu(a_t | x_t)
    rewards, terminated, truncated, final_values   [s, n, 0..T-1] what step t returned; for a
                         truncated step, V(final observation) under the actor's weights

Weights are published without blocking anyone (a seqlock): the learner makes the version odd,
copies the tensors, then makes it even; an actor syncs at the start of an unroll when the
version moved, copies, and loads the copy only if the version did not change meanwhile (else it
retries, and after a while keeps its weights for one more unroll). Versions count learner
updates, so the policy lag of an unroll is the learner's update count minus the version the
actor acted with.

A dead actor (an exception, which it reports with its traceback, or a signal) is detected by
the pool through its process sentinel and replaced by a new process that takes over its slots;
unrolls it finished before dying are still used. An actor that dies again and again before
delivering a single unroll is an error, not something to retry forever.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.multiprocessing as tmp
from gymnasium import spaces

from agents.policy import Agent
from envs import make_vector_env
from rlmem.memory import State, index_state, tree_map


@dataclass(frozen=True)
class ActorConfig:
    """Everything an actor process needs to build its envs and policy (picklable).

    Attributes:
        env, env_options: env name and constructor options (see `envs.make_vector_env`).
        core, core_options, hidden: the policy (see `agents.policy.Agent`).
        num_envs: envs per actor N (stepped in the actor's process).
        unroll_length: T.
        seed: base seed; actor a's incarnation i seeds with `seed + 1000 a + 7919 i`.
    """

    env: str
    env_options: dict[str, Any]
    core: str
    core_options: dict[str, Any]
    hidden: int | None
    num_envs: int
    unroll_length: int
    seed: int = 1

    def actor_seed(self, actor: int, incarnation: int) -> int:
        return self.seed + 1000 * actor + 7919 * incarnation

    def make_envs(self):
        # Actors are the env processes: their envs always run in-process.
        return make_vector_env(self.env, self.num_envs, self.env_options, num_workers=1)

    def make_agent(self, envs) -> Agent:
        return Agent(
            envs.single_observation_space,
            envs.single_action_space,
            self.core,
            self.core_options,
            hidden=self.hidden,
        )


def _obs_dtype(space: spaces.Box) -> torch.dtype:
    return torch.uint8 if space.dtype == np.uint8 else torch.float32


class UnrollBuffers:
    """Shared-memory slots for unrolls (see the module docstring for the layout).

    Args:
        obs_space: the single-env observation Dict space.
        action_shape, action_dtype: one env's action tensor (from the agent's head).
        state: a core state of batch N (its leaves give the state buffers' shapes).
        num_slots: S.
        num_envs, unroll_length: N and T.
    """

    def __init__(
        self,
        obs_space: spaces.Dict,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        state: State,
        num_slots: int,
        num_envs: int,
        unroll_length: int,
    ):
        S, N, T = num_slots, num_envs, unroll_length
        self.num_slots, self.num_envs, self.unroll_length = S, N, T
        shared = lambda shape, dtype=torch.float32: torch.zeros(shape, dtype=dtype).share_memory_()
        self.obs = {
            key: shared((S, N, T + 1, *space.shape), _obs_dtype(space))
            for key, space in obs_space.spaces.items()
        }
        self.resets = shared((S, N, T + 1), torch.bool)
        self.actions = shared((S, N, T, *action_shape), action_dtype)
        self.logprobs = shared((S, N, T))
        self.rewards = shared((S, N, T))
        self.terminated = shared((S, N, T), torch.bool)
        self.truncated = shared((S, N, T), torch.bool)
        self.final_values = shared((S, N, T))
        self.state = tree_map(lambda x: shared((S, *x.shape), x.dtype), state)

    def write_state(self, slot: int, state: State) -> None:
        """Stores the core state (batch N) at the start of the unroll in `slot`."""
        tree_map(lambda buf, x: buf[slot].copy_(x), self.state, state)

    def read_state(self, slot: int) -> State:
        return tree_map(lambda buf: buf[slot].clone(), self.state)

    def gather(self, slots: list[int], device: torch.device | str = "cpu") -> dict[str, Any]:
        """Copies the unrolls in `slots` out (the slots may be reused at once) as one batch of
        R = len(slots) * N rows on `device`: "obs" (dict of [R, T + 1, ...]), "resets"
        [R, T + 1], "actions" [R, T, ...], "logprobs", "rewards", "terminated", "truncated",
        "final_values" [R, T] and "state" (batch R)."""
        idx = torch.as_tensor(slots, dtype=torch.long)
        pin = torch.device(device).type == "cuda"

        def take(x: torch.Tensor) -> torch.Tensor:
            rows = x.index_select(0, idx).flatten(0, 1)
            if pin:
                rows = rows.pin_memory()
            return rows.to(device, non_blocking=True)

        batch = {
            key: take(getattr(self, key))
            for key in (
                "resets",
                "actions",
                "logprobs",
                "rewards",
                "terminated",
                "truncated",
                "final_values",
            )
        }
        batch["obs"] = {key: take(x) for key, x in self.obs.items()}
        batch["state"] = tree_map(take, self.state)
        return batch


class SharedWeights:
    """A state dict in shared memory, published by the learner and read by the actors without
    locks or waiting (a seqlock: the version is odd while a copy is in progress)."""

    def __init__(self, state_dict: dict[str, torch.Tensor], version: int = 0):
        self.tensors = {
            k: v.detach().to("cpu", copy=True).share_memory_() for k, v in state_dict.items()
        }
        self._seq = torch.full((1,), 2 * version, dtype=torch.int64).share_memory_()

    @property
    def version(self) -> int:
        """The number of learner updates behind the published weights."""
        return int(self._seq[0]) // 2

    def publish(self, state_dict: dict[str, torch.Tensor], version: int) -> None:
        """Copies `state_dict` in (any device) as `version`; the learner is the only writer."""
        self._seq[0] = 2 * version - 1
        for key, value in state_dict.items():
            self.tensors[key].copy_(value.detach())
        self._seq[0] = 2 * version

    def read_into(self, module: torch.nn.Module, retries: int = 100) -> int | None:
        """Loads a consistent copy of the weights into `module` and returns their version;
        leaves `module` untouched and returns None if every try overlapped a publication."""
        for _ in range(retries):
            seq = int(self._seq[0])
            if seq % 2 == 0:
                staged = {key: value.clone() for key, value in self.tensors.items()}
                if int(self._seq[0]) == seq:
                    module.load_state_dict(staged)
                    return seq // 2
            time.sleep(1e-4)
        return None


class Actor:
    """Steps N envs with a CPU copy of the policy and writes unrolls into `buffers`.

    Usable in-process (tests) or inside an actor process (`run_actor`). The actor carries the
    next observation, its reset flag and the core state before consuming it from one unroll to
    the next, so consecutive unrolls join without a gap.
    """

    def __init__(
        self,
        config: ActorConfig,
        buffers: UnrollBuffers,
        weights: SharedWeights | None = None,
        seed: int | None = None,
        agent: Agent | None = None,
    ):
        self.config, self.buffers, self.weights = config, buffers, weights
        seed = config.seed if seed is None else seed
        torch.manual_seed(seed)
        self.envs = config.make_envs()
        self.agent = agent if agent is not None else config.make_agent(self.envs)
        self.agent.eval()
        self.version = 0
        if weights is not None:
            self.version = weights.read_into(self.agent, retries=10_000)
            if self.version is None:
                raise RuntimeError("could not read a consistent copy of the shared weights")
        N = config.num_envs
        self.obs = {k: torch.from_numpy(v) for k, v in self.envs.reset(seed=seed).items()}
        self.resets = torch.ones(N, dtype=torch.bool)
        self.state = self.agent.initial_state(N)

    def sync_weights(self) -> None:
        """Takes the latest published weights (if they could not be read consistently, the
        current ones stay for one more unroll)."""
        if self.weights is not None and self.weights.version != self.version:
            version = self.weights.read_into(self.agent)
            if version is not None:
                self.version = version

    @torch.inference_mode()
    def unroll(self, slot: int) -> dict[str, Any]:
        """Plays T steps of every env into `slot`; returns the weights' version and the
        returns / lengths of the episodes that ended."""
        self.sync_weights()
        buf, T, agent = self.buffers, self.config.unroll_length, self.agent
        buf.write_state(slot, self.state)
        returns, lengths = [], []
        obs, resets, state = self.obs, self.resets, self.state
        for t in range(T):
            for key, x in obs.items():
                buf.obs[key][slot, :, t] = x
            buf.resets[slot, :, t] = resets
            out = agent.act(obs, state, resets)
            buf.actions[slot, :, t] = out.action
            buf.logprobs[slot, :, t] = out.logprob
            next_obs, reward, terminated, truncated, info = self.envs.step(
                agent.env_action(out.action).numpy()
            )
            buf.rewards[slot, :, t] = torch.from_numpy(reward)
            buf.terminated[slot, :, t] = torch.from_numpy(terminated)
            buf.truncated[slot, :, t] = torch.from_numpy(truncated)
            buf.final_values[slot, :, t] = 0.0
            done = info["done_index"]
            if len(done):
                returns.append(info["episode_return"])
                lengths.append(info["episode_length"])
                bootstrap = truncated[done] & ~terminated[done]
                if bootstrap.any():
                    rows = torch.from_numpy(done[bootstrap])
                    final = {
                        k: torch.from_numpy(v[bootstrap]) for k, v in info["final_obs"].items()
                    }
                    buf.final_values[slot, rows, t] = agent.value(
                        final, index_state(out.state, rows)
                    )
            obs = {k: torch.from_numpy(v) for k, v in next_obs.items()}
            resets = torch.from_numpy(terminated | truncated)
            state = out.state
        for key, x in obs.items():
            buf.obs[key][slot, :, T] = x
        buf.resets[slot, :, T] = resets
        self.obs, self.resets, self.state = obs, resets, state
        return {
            "version": self.version,
            "returns": np.concatenate(returns) if returns else np.zeros(0),
            "lengths": np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64),
        }

    def close(self) -> None:
        self.envs.close()


def run_actor(
    actor_id: int,
    incarnation: int,
    conn: Connection,
    config: ActorConfig,
    buffers: UnrollBuffers,
    weights: SharedWeights,
    free_slots: list[int],
) -> None:
    """The actor loop: take a free slot (wait for the learner to free one if needed), fill it,
    send it; stop on ("stop",) or when the learner has gone."""
    actor = Actor(config, buffers, weights, seed=config.actor_seed(actor_id, incarnation))
    free = deque(free_slots)
    try:
        while True:
            while not free or conn.poll():
                message = conn.recv()
                if message[0] == "stop":
                    return
                free.append(message[1])
            slot = free.popleft()
            conn.send(("unroll", slot, actor.unroll(slot)))
    finally:
        actor.close()


def _actor_process(
    target: Callable[..., None], actor_id: int, incarnation: int, conn: Connection, *args: Any
) -> None:
    """Process entry: runs `target` with one torch thread; an exception is sent to the learner
    with its traceback before the process exits with status 1."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the learner, which stops us
    try:
        target(actor_id, incarnation, conn, *args)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the learner went away
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", traceback.format_exc()))
        sys.exit(1)


class Unroll(NamedTuple):
    slot: int
    actor: int
    info: dict[str, Any]


class ActorFailure(RuntimeError):
    """An actor died repeatedly without delivering an unroll."""


@dataclass
class _Handle:
    process: Any
    conn: Connection
    incarnation: int
    delivered: int = 0  # unrolls delivered by this incarnation
    error: str | None = None


class ActorPool:
    """Starts `num_actors` actor processes (spawn) and hands their unrolls to the learner.

    Args:
        config: what every actor builds.
        buffers: shared slots; actor a owns slots [a K, (a + 1) K).
        weights: the shared weights the actors read.
        slots_per_actor: K.
        target: the actor loop (`run_actor`; tests substitute a faulty one).
        max_failures: consecutive deaths of one actor without an unroll before giving up.
        report: where death reports go (default: stderr).
    """

    def __init__(
        self,
        config: ActorConfig,
        buffers: UnrollBuffers,
        weights: SharedWeights,
        num_actors: int,
        slots_per_actor: int,
        target: Callable[..., None] = run_actor,
        max_failures: int = 3,
        report: Callable[[str], None] | None = None,
    ):
        if num_actors * slots_per_actor > buffers.num_slots:
            raise ValueError(
                f"{num_actors} actors x {slots_per_actor} slots need "
                f"{num_actors * slots_per_actor} buffer slots, have "
                f"{buffers.num_slots}"
            )
        self.config, self.buffers, self.weights = config, buffers, weights
        self.num_actors, self.slots_per_actor = num_actors, slots_per_actor
        self.target, self.max_failures = target, max_failures
        self.report = report or (lambda text: print(text, file=sys.stderr, flush=True))
        self.ctx = tmp.get_context("spawn")
        self.handles: list[_Handle | None] = [None] * num_actors
        self.ready: deque[Unroll] = deque()
        self.held: set[int] = set()  # slots handed to the learner and not yet released
        self.restarts = 0
        self.failures = [0] * num_actors

    def slots_of(self, actor: int) -> list[int]:
        K = self.slots_per_actor
        return list(range(actor * K, (actor + 1) * K))

    def start(self) -> None:
        for a in range(self.num_actors):
            self._spawn(a, 0, self.slots_of(a))

    def _spawn(self, actor: int, incarnation: int, free: list[int]) -> None:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_actor_process,
            name=f"rlmem-actor-{actor}",
            daemon=True,
            args=(
                self.target,
                actor,
                incarnation,
                child,
                self.config,
                self.buffers,
                self.weights,
                free,
            ),
        )
        process.start()
        child.close()
        self.handles[actor] = _Handle(process, parent, incarnation)

    def pids(self) -> list[int]:
        return [h.process.pid for h in self.handles if h is not None]

    def get(self, count: int) -> list[Unroll]:
        """Blocks until `count` unrolls have arrived; replaces actors that died meanwhile."""
        self._poll(timeout=0.0)  # notice deaths even when enough unrolls are waiting
        while len(self.ready) < count:
            self._poll(timeout=60.0)
        out = [self.ready.popleft() for _ in range(count)]
        self.held.update(u.slot for u in out)
        return out

    def _poll(self, timeout: float) -> None:
        """Waits up to `timeout` seconds for messages or deaths and handles them."""
        waitables = {}
        for a, h in enumerate(self.handles):
            waitables[h.conn] = a
            waitables[h.process.sentinel] = a
        replaced = set()
        for obj in wait(list(waitables), timeout=timeout):
            a = waitables[obj]
            if a in replaced:  # its other waitable belonged to the process just replaced
                continue
            if not self._drain(a) or not self.handles[a].process.is_alive():
                self._replace(a)
                replaced.add(a)

    def _drain(self, actor: int) -> bool:
        """Reads every pending message of `actor`; False when its pipe is closed."""
        h = self.handles[actor]
        try:
            while h.conn.poll():
                message = h.conn.recv()
                if message[0] == "unroll":
                    self.ready.append(Unroll(message[1], actor, message[2]))
                    h.delivered += 1
                    self.failures[actor] = 0
                elif message[0] == "error":
                    h.error = message[1]
        except (EOFError, OSError):
            return False
        return True

    def _replace(self, actor: int) -> None:
        """Reports a dead actor and starts a new process on the slots the learner does not hold."""
        h = self.handles[actor]
        h.process.join(timeout=5)
        if h.process.is_alive():  # its pipe broke but it still runs: end it
            h.process.kill()
            h.process.join()
        code = h.process.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            how = f"signal {signal.Signals(-code).name}"
        text = f"rlmem impala: actor {actor} (pid {h.process.pid}) died ({how})"
        text += f"; its traceback:\n{h.error}" if h.error else " without a Python traceback"
        h.conn.close()
        if h.delivered == 0:
            self.failures[actor] += 1
            if self.failures[actor] >= self.max_failures:
                raise ActorFailure(
                    f"{text}\nactor {actor} died {self.failures[actor]} times in a "
                    "row without delivering an unroll; giving up"
                )
        self.report(text + "\nrlmem impala: starting a replacement")
        pending = {u.slot for u in self.ready}
        free = [s for s in self.slots_of(actor) if s not in self.held and s not in pending]
        self.restarts += 1
        self._spawn(actor, h.incarnation + 1, free)

    def release(self, slots: list[int]) -> None:
        """Gives slots back to their actors once the learner has copied them out."""
        for slot in slots:
            self.held.discard(slot)
            h = self.handles[slot // self.slots_per_actor]
            # If that actor is dead, its replacement gets the slot when it starts.
            with contextlib.suppress(OSError):
                h.conn.send(("free", slot))

    def close(self) -> None:
        for h in self.handles:
            if h is None:
                continue
            with contextlib.suppress(OSError):
                h.conn.send(("stop",))
        for h in self.handles:
            if h is None:
                continue
            h.process.join(timeout=10)
            if h.process.is_alive():
                h.process.kill()
                h.process.join()
            h.conn.close()


__all__ = [
    "Actor",
    "ActorConfig",
    "ActorFailure",
    "ActorPool",
    "SharedWeights",
    "Unroll",
    "UnrollBuffers",
    "run_actor",
]
