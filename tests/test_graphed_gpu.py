"""Acting through a CUDA graph gives the eager results."""

import pytest
import torch
from gymnasium import spaces
from helpers import assert_close

from agents.graphed import GraphedActor
from agents.policy import Agent
from rlmem.memory import tree_leaves

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("core", ["hqlt-sync", "gru", "transformer"])
def test_graphed_actor_matches_eager_acting(core):
    obs_space = spaces.Dict({"vector": spaces.Box(-1, 1, (6,))})
    agent = Agent(obs_space, spaces.Discrete(4), core=core, core_options={"d_model": 32}).cuda()
    actor, N = GraphedActor(agent), 16
    state_g = state_e = agent.initial_state(N, "cuda")
    for t in range(6):
        obs = {"vector": torch.randn(N, 6, device="cuda")}
        resets = torch.rand(N, device="cuda") < 0.3
        with torch.no_grad():
            out_g = actor(obs, state_g, resets)
            out_e = agent.act(obs, state_e, resets)
        assert_close(f"value at step {t}", out_g.value, out_e.value, tol=1e-4)
        for i, (a, b) in enumerate(zip(tree_leaves(out_g.state), tree_leaves(out_e.state))):
            assert_close(f"state leaf {i} at step {t}", a, b, tol=1e-4)
        state_g, state_e = out_g.state, out_e.state
    assert actor.graph is not None, "the actor fell back to eager acting"
