"""Recurrent PPO: rollout storage and core states, truncation bootstraps, the update's NaN
guard and the command line (train, resume, eval)."""

from __future__ import annotations

import dataclasses
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_envs import CountingEnv  # noqa: F401  (registers the rlmem-test/Counting envs)

from agents import evaluate as evaluate_cli
from agents import ppo
from agents.checkpoint import load_checkpoint, read_config
from agents.learner import PPOLearner, make_optimizer, restore_optimizer
from agents.metrics import EpisodeStats
from agents.storage import RolloutStorage
from rlmem.memory import states_close

SMALL = ["d_model=16", "n_layers=1", "n_heads=2"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small models run fastest on one thread (and don't stall on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def setup(env: str, num_envs: int, num_steps: int, chunk: int | None = None, core="gru"):
    torch.manual_seed(0)
    args = ppo.Args(
        env=env,
        core=core,
        core_opt=SMALL,
        num_envs=num_envs,
        num_steps=num_steps,
        num_workers=1,
        bptt_chunk=chunk,
    )
    envs = ppo.make_envs(args)
    agent = ppo.make_agent(args, envs)
    storage = RolloutStorage(
        envs.single_observation_space,
        agent.actor.action_shape,
        agent.actor.action_dtype,
        num_envs,
        num_steps,
        "cpu",
        chunk,
    )
    obs = envs.reset(seed=0)
    carry = ppo.Carry(
        ppo.to_device(obs, "cpu"),
        torch.ones(num_envs, dtype=torch.bool),
        agent.initial_state(num_envs),
    )
    return args, envs, agent, storage, carry


def replay(agent, storage, t_end):
    """core.forward over steps [0, t_end) of every row from the stored start state."""
    if t_end == 0:
        return storage.start_state
    x = agent.encoder({k: v[:, :t_end] for k, v in storage.obs.items()})
    _, state = agent.core(x, storage.start_state, storage.resets[:, :t_end])
    return state


@pytest.mark.parametrize("chunk", [None, 16])
def test_stored_states_equal_the_actors_and_replay_reproduces_the_rollout(chunk):
    # RepeatPreviousEasy episodes last 51 steps: resets land inside the second rollout.
    args, envs, agent, storage, carry = setup("popgym/RepeatPreviousEasy", 3, 32, chunk)
    stats = EpisodeStats(window=3)
    with torch.no_grad():
        carry = ppo.collect_rollout(agent, envs, storage, carry, stats)
        actor_state = carry.state
        carry = ppo.collect_rollout(agent, envs, storage, carry, stats)
        assert states_close(storage.start_state, actor_state, rtol=0, atol=0)
        # The reset flags mark the observations whose is-first flag is set.
        torch.testing.assert_close(storage.resets.float(), storage.obs["vector"][..., -1])
        assert storage.resets[:, 51 - 32].all() and storage.resets.sum() == 3
        for k, state in enumerate(storage.chunk_states):
            assert states_close(state, replay(agent, storage, k * storage.chunk), rtol=1e-5)
        assert states_close(replay(agent, storage, 32), carry.state, rtol=1e-5)
        batch = storage.sequences()
        logp, _, value, _ = agent.evaluate(
            batch["obs"], batch["state"], batch["resets"], batch["actions"]
        )
    torch.testing.assert_close(logp, batch["logprobs"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(value, batch["values"], rtol=1e-5, atol=1e-5)
    assert stats.episodes == 3
    envs.close()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("core", ["gru", "hqlt-sync"])
def test_env_groups_stepped_in_turn_give_the_ungrouped_rollout(core, device):
    """Two env groups (acting for one while the other steps) fill the same storage as one
    group, truncation bootstraps included (CountingNoTerm truncates every 3 steps). On CUDA
    the actions come back through pinned memory without waiting on the GPU."""
    runs = []
    for groups in (1, 2):
        torch.manual_seed(0)
        args = ppo.Args(
            env="rlmem-test/CountingNoTerm-v0",
            core=core,
            core_opt=SMALL,
            num_envs=5,
            num_steps=8,
            num_workers=1,
            env_groups=groups,
            bptt_chunk=4,
        )
        envs = ppo.make_envs(args)
        agent = ppo.make_agent(args, envs).to(device)
        head = agent.actor
        space = envs.single_observation_space
        storage = RolloutStorage(space, head.action_shape, head.action_dtype, 5, 8, device, 4)
        carry = ppo.Carry(
            ppo.to_device(envs.reset(seed=0), device),
            torch.ones(5, dtype=torch.bool, device=device),
            agent.initial_state(5, device),
        )
        greedy = lambda o, s, r, agent=agent: agent.act(o, s, r, greedy=True)  # noqa: E731
        stats = EpisodeStats()
        with torch.no_grad():
            for _ in range(2):  # the second rollout starts from a carried state
                carry = ppo.collect_rollout(agent, envs, storage, carry, stats, [greedy] * groups)
        runs.append((storage, carry, stats.episodes))
        envs.close()
    (a, carry_a, episodes_a), (b, carry_b, episodes_b) = runs
    for name in ("resets", "actions", "values", "rewards", "truncated", "final_values"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), msg=name)
    torch.testing.assert_close(b.obs["vector"], a.obs["vector"])
    assert (a.final_values != 0).any(), "no truncation bootstrap was exercised"
    for sa, sb in zip(a.chunk_states, b.chunk_states):
        assert states_close(sb, sa, rtol=1e-6)
    assert states_close(carry_b.state, carry_a.state, rtol=1e-6)
    assert torch.equal(carry_b.resets, carry_a.resets) and episodes_a == episodes_b


def test_truncated_steps_bootstrap_from_the_final_observation_with_the_pre_reset_state():
    args, envs, agent, storage, carry = setup("rlmem-test/CountingNoTerm-v0", 2, 8)
    with torch.no_grad():
        ppo.collect_rollout(agent, envs, storage, carry, EpisodeStats())
        truncated = storage.truncated & ~storage.terminated
        assert truncated[:, 2].all() and truncated[:, 5].all() and truncated.sum() == 4
        assert (storage.final_values[~truncated] == 0).all()
        for n, t in truncated.nonzero().tolist():
            state = replay(agent, storage, t + 1)  # after consuming obs t, before the reset
            final_obs = {"vector": torch.tensor([[3.0]])}  # TimeLimit cuts after 3 steps
            row = [s["h"][n : n + 1] for s in state]
            expected = agent.value(final_obs, [{"h": h} for h in row])
            torch.testing.assert_close(storage.final_values[n, t], expected[0])
    envs.close()


def _learner(agent, args):
    optimizer = make_optimizer(agent, 1e-3, graph=False)
    return optimizer, PPOLearner(agent, optimizer, ppo.loss_config(args), graph=False)


def test_non_finite_loss_raises_instead_of_training():
    args, envs, agent, storage, carry = setup("popgym/RepeatFirstEasy", 2, 8)
    with torch.no_grad():
        ppo.collect_rollout(agent, envs, storage, carry, EpisodeStats())
    adv = torch.full_like(storage.rewards, float("nan"))
    optimizer, learner = _learner(agent, args)
    before = [p.detach().clone() for p in agent.parameters()]
    with pytest.raises(FloatingPointError, match="non-finite PPO loss or gradients in 8 of 8"):
        ppo.ppo_update(learner, storage.sequences(advantages=adv, returns=adv), args, update=0)
    assert all(torch.equal(a, b) for a, b in zip(before, agent.parameters()))
    assert all(s["exp_avg"].abs().sum() == 0 for s in optimizer.state.values())
    envs.close()


def test_only_the_minibatches_with_a_nan_are_skipped():
    args, envs, agent, storage, carry = setup("popgym/RepeatFirstEasy", 4, 8)
    args = dataclasses.replace(args, num_minibatches=4, update_epochs=1)
    with torch.no_grad():
        ppo.collect_rollout(agent, envs, storage, carry, EpisodeStats())
    adv = torch.randn_like(storage.rewards)
    adv[2, 3] = float("nan")  # env row 2: one minibatch of the epoch
    optimizer, learner = _learner(agent, args)
    with pytest.raises(FloatingPointError, match="in 1 of 4 minibatches"):
        ppo.ppo_update(learner, storage.sequences(advantages=adv, returns=adv), args, update=0)
    assert all(s["step"].item() == 3 for s in optimizer.state.values())
    assert all(torch.isfinite(p).all() for p in agent.parameters())
    envs.close()


def test_optimizer_state_restores_into_the_fused_optimizer():
    args, envs, agent, storage, carry = setup("popgym/RepeatFirstEasy", 2, 8)
    plain = torch.optim.Adam(agent.parameters(), lr=0.25)  # e.g. an older checkpoint
    for p in agent.parameters():
        p.grad = torch.ones_like(p)
    plain.step()
    optimizer = make_optimizer(agent, 1e-3, graph=False)
    restore_optimizer(optimizer, plain.state_dict())
    group = optimizer.param_groups[0]
    assert group["fused"] and group["lr"] == 0.25
    assert all(s["step"].item() == 1 for s in optimizer.state.values())
    optimizer.step()  # the fused kernel accepts the restored state
    assert all(s["step"].item() == 2 for s in optimizer.state.values())
    envs.close()


def run_args(tmp_path, *extra):
    return [
        "--env",
        "popgym/RepeatFirstEasy",
        "--core",
        "gru",
        "--core-opt",
        *SMALL,
        "--num-envs",
        "4",
        "--num-steps",
        "16",
        "--seed",
        "3",
        "--no-progress",
        "--run-dir",
        str(tmp_path / "run"),
        *extra,
    ]


def test_train_checkpoint_resume_and_eval(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert ppo.main(run_args(tmp_path, "--total-steps", "192", "--checkpoint-every", "2")) == 0
    out = capsys.readouterr().out
    assert "run summary" in out and out.rstrip().endswith(f"curves: rlmem plot {run_dir}")
    ckpt = load_checkpoint(run_dir)
    assert (ckpt["update"], ckpt["global_step"]) == (3, 192)
    assert read_config(run_dir)["num_envs"] == 4
    steps_before = ckpt["optimizer"]["state"][0]["step"].item()

    assert ppo.main(["--resume", run_dir, "--total-steps", "320"]) == 0
    ckpt = load_checkpoint(run_dir)
    assert (ckpt["update"], ckpt["global_step"]) == (5, 320)
    assert ckpt["optimizer"]["state"][0]["step"].item() == steps_before + 2 * 4 * 4
    assert read_config(run_dir)["total_steps"] == 320
    events = [f for f in os.listdir(run_dir) if f.startswith("events.out")]
    assert len(events) == 2  # one per session, same directory: one curve in TensorBoard
    capsys.readouterr()

    assert ppo.main(["--resume", run_dir, "--core", "lstm"]) == 2
    assert "cannot change --core" in capsys.readouterr().err

    assert evaluate_cli.main([run_dir, "--episodes", "5", "--num-envs", "2"]) == 0
    out = capsys.readouterr().out
    assert "mean_return" in out and "normalised_return" in out
    result = evaluate_cli.evaluate(run_dir, episodes=3, num_envs=2)
    assert result["episodes"] == 3 and -1.0 <= result["mean_return"] <= 1.0


def test_resume_restores_the_rng_and_counters(tmp_path):
    run_dir = str(tmp_path / "run")
    ppo.main(run_args(tmp_path, "--total-steps", "64"))
    ckpt = load_checkpoint(run_dir)
    args = ppo.Args(**read_config(run_dir))
    args = dataclasses.replace(args, total_steps=64)
    # Already finished: resuming with the same budget trains nothing more.
    summary = ppo.train(args, ckpt)
    assert summary["steps"] == 64 and load_checkpoint(run_dir)["update"] == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--core", "nope"], "valid cores"),
        (["--env", "popgym/Nope"], "valid names"),
        (["--core", "gru", "--core-opt", "widht=3"], "valid options"),
    ],
)
def test_bad_names_are_reported_with_the_valid_ones(argv, message, capsys):
    assert ppo.main(argv + ["--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_minigrid_image_agent_trains_one_update(tmp_path):
    gym.logger.min_level = 40
    summary = ppo.train(
        ppo.Args(
            env="minigrid/MemoryS7",
            core="gru",
            core_opt=SMALL,
            num_envs=2,
            num_steps=8,
            total_steps=16,
            num_workers=1,
            run_dir=str(tmp_path / "mg"),
            progress=False,
            tensorboard=False,
        )
    )
    assert summary["steps"] == 16 and np.isfinite(summary["params"])


def test_steady_sps_starts_after_the_first_update(monkeypatch):
    from agents import metrics

    now = [100.0]
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: now[0])
    clock = metrics.Throughput(start_step=0)
    now[0] += 10.0  # the first update: compilation, graph capture
    clock.phase("rollout")
    clock.update_done(1000)
    assert clock.sps_steady() is None and clock.summary() == {"sps": 100}
    for step in (2000, 3000):
        now[0] += 0.25
        clock.phase("rollout")
        now[0] += 0.25
        clock.phase("update")
        clock.update_done(step)
    assert clock.sps() == 3000 / 11.0
    assert clock.sps_steady() == 2000 / 1.0
    assert clock.summary() == {"sps": 273, "sps_steady": 2000, "rollout_s": 0.25, "update_s": 0.25}
