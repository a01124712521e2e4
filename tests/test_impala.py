"""IMPALA: unrolls carry the actor's core state, the learner's replay honours resets, shared
weights, a CPU smoke run (train, resume, eval) with 2 actors, and dead actors.

Actor processes are spawned (a few seconds each on a 2-core machine), so the process tests keep
the runs tiny: a 1-layer GRU of width 16 and a few thousand env steps.
"""

import dataclasses
import json
import os
import signal
import time

import pytest
import torch

from agents.actors import (
    Actor,
    ActorConfig,
    ActorFailure,
    ActorPool,
    SharedWeights,
    UnrollBuffers,
    run_actor,
)
from agents.evaluate import evaluate
from agents.impala import Args, all_reduce_gradients, main, replay, train
from rlmem.memory import CORES, clone_state, core_options, tree_leaves

T, N = 40, 4


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a small CPU: torch's thread pool costs more than it gives (as in actors).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_options(core):
    valid = core_options(core)
    options = {"d_model": 16, "n_layers": 1, "n_heads": 2}
    # A short window / chunk, so the KV memory wraps inside an unroll.
    options.update({k: 8 for k in ("window", "chunk") if k in valid})
    return options


def make_actor(core, slots=2, seed=3):
    # CartPole under a random policy ends episodes after ~10-40 steps at different times in
    # different rows, so every unroll of 40 steps has resets inside it.
    config = ActorConfig("CartPole-v1", {}, core, small_options(core), None, N, T, seed=seed)
    envs = config.make_envs()
    agent = config.make_agent(envs)
    head = agent.actor
    buffers = UnrollBuffers(
        envs.single_observation_space,
        head.action_shape,
        head.action_dtype,
        agent.initial_state(N),
        slots,
        N,
        T,
    )
    envs.close()
    return Actor(config, buffers, agent=agent), buffers


def states_equal(a, b):
    la, lb = tree_leaves(a), tree_leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb))


@pytest.mark.parametrize("core", list(CORES))
def test_unroll_sends_the_actor_state_at_its_first_step_and_replay_honours_resets(core):
    actor, buffers = make_actor(core)
    before = [clone_state(actor.state)]
    actor.unroll(0)
    before.append(clone_state(actor.state))
    actor.unroll(1)

    # The state stored with each unroll is the actor's core state before its first step.
    assert states_equal(buffers.read_state(0), before[0])
    assert states_equal(buffers.read_state(1), before[1])
    # Consecutive unrolls join: the last observation of one is the first of the next.
    for key in buffers.obs:
        assert torch.equal(buffers.obs[key][0, :, T], buffers.obs[key][1, :, 0])
    assert torch.equal(buffers.resets[0, :, T], buffers.resets[1, :, 0])
    resets = buffers.resets[:, :, 1:T]
    assert resets.any(), "the test needs episode starts inside the unrolls"

    # The learner's replay (core.forward from the stored state, same weights) reproduces the
    # actor's log-probs at every step, before and after the resets inside the unroll.
    batch = buffers.gather([0, 1])
    with torch.no_grad():
        logp, _, _, bootstrap = replay(actor.agent, batch)
        torch.testing.assert_close(logp, batch["logprobs"], rtol=1e-4, atol=1e-4)
        # ... and its bootstrap value is the actor's value of the next observation.
        next_obs = {k: v[1, :, T] for k, v in buffers.obs.items()}
        want = actor.agent.value(next_obs, actor.state, buffers.resets[1, :, T])
        torch.testing.assert_close(bootstrap[N:], want, rtol=1e-4, atol=1e-4)

        if core != "mlp":  # a memory core must see the resets: without them it diverges
            blind = dict(batch, resets=torch.zeros_like(batch["resets"]))
            blind["resets"][:, 0] = batch["resets"][:, 0]
            logp_blind, _, _, _ = replay(actor.agent, blind)
            after_reset = batch["resets"][:, :T].cumsum(1) > batch["resets"][:, :1].long()
            assert after_reset.any()
            assert not torch.allclose(
                logp_blind[after_reset], batch["logprobs"][after_reset], atol=1e-4
            )
    actor.close()


def test_truncated_steps_carry_the_value_of_the_final_observation():
    config = ActorConfig(
        "CartPole-v1", {"max_episode_steps": 5}, "gru", small_options("gru"), None, 2, 12
    )
    envs = config.make_envs()
    agent = config.make_agent(envs)
    buffers = UnrollBuffers(
        envs.single_observation_space,
        agent.actor.action_shape,
        agent.actor.action_dtype,
        agent.initial_state(2),
        1,
        2,
        12,
    )
    envs.close()
    actor = Actor(config, buffers, agent=agent)
    actor.unroll(0)
    trunc = buffers.truncated[0] & ~buffers.terminated[0]
    assert trunc.any()
    assert (buffers.final_values[0][trunc] != 0).all()
    assert (buffers.final_values[0][~trunc] == 0).all()
    actor.close()


def test_shared_weights_publish_and_consistent_read():
    module = torch.nn.Linear(3, 2)
    weights = SharedWeights(module.state_dict(), version=4)
    assert weights.version == 4
    newer = torch.nn.Linear(3, 2)
    weights.publish(newer.state_dict(), 5)
    assert weights.version == 5
    assert weights.read_into(module) == 5
    assert torch.equal(module.weight, newer.weight)
    weights._seq[0] = 11  # a copy in progress (odd): readers wait, then keep what they have
    weights.tensors["weight"].zero_()
    assert weights.read_into(module, retries=3) is None
    assert torch.equal(module.weight, newer.weight)


def tiny_args(tmp_path, **overrides):
    args = Args(
        env="popgym/RepeatPreviousEasy",
        core="gru",
        core_opt=["d_model=16", "n_layers=1"],
        total_steps=3000,
        num_actors=2,
        envs_per_actor=4,
        unroll_length=32,
        batch_size=2,
        run_dir=str(tmp_path / "run"),
        device="cpu",
        progress=False,
        log_every=2,
        checkpoint_every=5,
    )
    return dataclasses.replace(args, **overrides)


def test_cpu_smoke_run_with_two_actors_resumes_and_evaluates(tmp_path):
    run_dir = str(tmp_path / "run")
    argv = ["--env", "popgym/RepeatPreviousEasy", "--core", "gru", "--run-dir", run_dir]
    argv += ["--core-opt", "d_model=16", "n_layers=1", "--num-actors", "2"]
    argv += ["--envs-per-actor", "4", "--unroll-length", "32", "--batch-size", "2"]
    argv += ["--total-steps", "3000", "--device", "cpu", "--no-progress", "--log-every", "2"]
    assert main(argv) == 0
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    assert checkpoint["global_step"] == 12 * 256 and checkpoint["update"] == 12
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["algorithm"] == "impala"
    assert any(name.startswith("events.out") for name in os.listdir(run_dir))
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    assert summary["steps"] == 12 * 256 and summary["policy_lag_mean"] >= 0

    # Resuming continues the step counter; run-defining options cannot change.
    assert main(["--resume", run_dir, "--lr", "1.0"]) == 2
    assert main(["--resume", run_dir, "--total-steps", "4000", "--no-progress"]) == 0
    checkpoint = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    assert checkpoint["global_step"] == 16 * 256 and checkpoint["update"] == 16

    result = evaluate(run_dir, episodes=2, num_envs=2, device="cpu")
    assert result["episodes"] == 2 and -1.0 <= result["mean_return"] <= 1.0


def test_bad_arguments_are_named(capsys):
    assert main(["--num-actors", "1", "--slots-per-actor", "1", "--batch-size", "1"]) == 2
    assert "--slots-per-actor" in capsys.readouterr().err
    assert main(["--core", "nope"]) == 2
    assert "valid cores" in capsys.readouterr().err


def test_killed_actor_is_reported_and_replaced_while_learning_continues(tmp_path, capsys):
    killed = []

    def kill_one(update, pool):
        if update == 2:
            pid = pool.pids()[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = train(tiny_args(tmp_path, total_steps=4096, update_epochs=2), on_update=kill_one)
    assert killed and summary["actor_restarts"] == 1
    assert summary["steps"] == 4096
    err = capsys.readouterr().err
    assert f"actor 0 (pid {killed[0]}) died (signal SIGKILL)" in err


def crash_after_one_unroll(actor_id, incarnation, conn, *args):
    """Incarnation 0 of actor 0 delivers one unroll and then raises; the rest behave."""
    if actor_id == 0 and incarnation == 0:
        config, buffers, weights, free = args
        actor = Actor(config, buffers, weights)
        conn.send(("unroll", free[0], actor.unroll(free[0])))
        raise RuntimeError("boom in the env")
    run_actor(actor_id, incarnation, conn, *args)


def always_crash(actor_id, incarnation, conn, *args):
    raise RuntimeError("broken env constructor")


def make_pool(target, reports, actors=2):
    config = ActorConfig("popgym/RepeatPreviousEasy", {}, "gru", small_options("gru"), None, 2, 8)
    envs = config.make_envs()
    agent = config.make_agent(envs)
    buffers = UnrollBuffers(
        envs.single_observation_space,
        agent.actor.action_shape,
        agent.actor.action_dtype,
        agent.initial_state(2),
        2 * actors,
        2,
        8,
    )
    envs.close()
    weights = SharedWeights(agent.state_dict())
    return ActorPool(config, buffers, weights, actors, 2, target=target, report=reports.append)


def test_actor_exception_is_reported_with_its_traceback_and_the_actor_replaced():
    reports = []
    pool = make_pool(crash_after_one_unroll, reports)
    pool.start()
    try:
        deadline = time.time() + 60
        while pool.restarts == 0:
            got = pool.get(1)
            pool.release([u.slot for u in got])
            assert time.time() < deadline
        delivered_by = []
        while 0 not in delivered_by:  # the replacement of actor 0 delivers unrolls
            got = pool.get(1)
            pool.release([u.slot for u in got])
            delivered_by += [u.actor for u in got]
            assert time.time() < deadline
    finally:
        pool.close()
    assert pool.restarts == 1
    assert "actor 0" in reports[0] and "exit code 1" in reports[0]
    assert "Traceback" in reports[0] and "RuntimeError: boom in the env" in reports[0]


def test_actor_that_keeps_dying_before_any_unroll_stops_the_learner():
    reports = []
    pool = make_pool(always_crash, reports, actors=1)
    pool.start()
    try:
        with pytest.raises(ActorFailure, match="(?s)broken env constructor.*3 times in a row"):
            pool.get(1)
    finally:
        pool.close()
    assert len(reports) == 2  # two replacements, then it gave up


def test_gradient_all_reduce_round_trip_in_a_one_process_group(tmp_path):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        layer = torch.nn.Linear(3, 2)
        layer(torch.randn(4, 3)).sum().backward()
        grads = [p.grad.clone() for p in layer.parameters()]
        extras = all_reduce_gradients(list(layer.parameters()), torch.tensor([0.5, 1.0]), 1)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(extras, torch.tensor([0.5, 1.0]))
    for p, g in zip(layer.parameters(), grads):
        torch.testing.assert_close(p.grad, g)
