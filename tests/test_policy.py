"""The agent: encoders, action heads, and acting with `step` == replaying with `forward`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.heads import make_head
from agents.policy import Agent
from rlmem.memory import CORES

SMALL = {"d_model": 16, "n_layers": 1, "n_heads": 2}

OBS_SPACES = {
    "vector": spaces.Dict({"vector": spaces.Box(-1, 1, (5,), np.float32)}),
    "image+vector": spaces.Dict(
        {
            "image": spaces.Box(0, 1, (20, 3, 3), np.uint8),
            "vector": spaces.Box(0, 1, (4,), np.float32),
        }
    ),
    "large image": spaces.Dict({"image": spaces.Box(0, 255, (3, 20, 20), np.uint8)}),
}
ACTION_SPACES = {
    "discrete": spaces.Discrete(4),
    "multidiscrete": spaces.MultiDiscrete([3, 5]),
    "box": spaces.Box(-2.0, 2.0, (2,), np.float32),
}


def random_obs(space: spaces.Dict, *lead: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, sub in space.spaces.items():
        if sub.dtype == np.uint8:
            out[key] = torch.randint(
                0, int(sub.high.max()) + 1, (*lead, *sub.shape), dtype=torch.uint8
            )
        else:
            out[key] = torch.randn(*lead, *sub.shape)
    return out


@pytest.mark.parametrize("obs_kind", list(OBS_SPACES))
@pytest.mark.parametrize("action_kind", list(ACTION_SPACES))
def test_acting_step_by_step_equals_replaying_the_row(obs_kind, action_kind):
    torch.manual_seed(0)
    obs_space, action_space = OBS_SPACES[obs_kind], ACTION_SPACES[action_kind]
    agent = Agent(obs_space, action_space, "gru", SMALL)
    B, T = 3, 7
    obs = random_obs(obs_space, B, T)
    resets = torch.zeros(B, T, dtype=torch.bool)
    resets[:, 0] = True
    resets[1, 4] = True  # an episode starts mid-row
    state0 = agent.initial_state(B)
    state, actions, logps, values = state0, [], [], []
    with torch.no_grad():
        for t in range(T):
            out = agent.act({k: v[:, t] for k, v in obs.items()}, state, resets[:, t])
            state = out.state
            actions.append(out.action)
            logps.append(out.logprob)
            values.append(out.value)
        actions = torch.stack(actions, 1)
        assert actions.shape == (B, T, *agent.actor.action_shape)
        logp, entropy, value, _ = agent.evaluate(obs, state0, resets, actions)
    torch.testing.assert_close(logp, torch.stack(logps, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(value, torch.stack(values, 1), rtol=1e-5, atol=1e-5)
    assert torch.isfinite(entropy).all() and (entropy >= 0).all() or action_kind == "box"


@pytest.mark.parametrize("core", sorted(CORES))
def test_every_registered_core_drives_the_agent(core):
    space = OBS_SPACES["vector"]
    agent = Agent(space, ACTION_SPACES["discrete"], core, SMALL)
    out = agent.act(random_obs(space, 4), agent.initial_state(4), torch.ones(4, dtype=torch.bool))
    assert out.action.shape == (4,) and out.value.shape == (4,)


def test_box_actions_are_rescaled_into_bounds():
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)
    head = make_head(8, spaces.Box(low, high))
    env_action = head.to_env(torch.tensor([[-5.0, 5.0], [0.0, 0.0]]))
    torch.testing.assert_close(env_action, torch.tensor([[-2.0, 10.0], [0.0, 5.0]]))


def test_discrete_sampling_follows_the_probabilities():
    torch.manual_seed(0)
    head = make_head(2, spaces.Discrete(3, start=1))
    with torch.no_grad():
        head.logits.weight.zero_()
        head.logits.bias.copy_(torch.log(torch.tensor([0.2, 0.3, 0.5])))
    action, logp = head.sample(torch.zeros(20000, 2))
    freq = torch.bincount(action, minlength=3).float() / len(action)
    torch.testing.assert_close(freq, torch.tensor([0.2, 0.3, 0.5]), atol=0.015, rtol=0)
    torch.testing.assert_close(logp.exp(), torch.tensor([0.2, 0.3, 0.5])[action])
    assert set(head.to_env(action).tolist()) == {1, 2, 3}


def test_unsupported_spaces_are_named():
    with pytest.raises(ValueError, match="supported: Discrete, MultiDiscrete, Box"):
        make_head(4, spaces.MultiBinary(3))
    with pytest.raises(ValueError, match="expected 'vector' and/or 'image'"):
        Agent(spaces.Dict({"rgb": spaces.Box(0, 1, (2,))}), spaces.Discrete(2), "gru", SMALL)
