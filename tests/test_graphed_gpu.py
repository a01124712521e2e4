"""Acting through a CUDA graph gives the eager results."""

import pytest
import torch
from gymnasium import spaces
from helpers import assert_close

from agents.graphed import GraphedActor
from agents.policy import Agent
from rlmem.memory import tree_leaves

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("core", ["hqlt-sync", "hqlt-delayed-chunk", "gru", "transformer"])
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


def _batch(agent, S=8, C=12):
    g = torch.Generator(device="cuda").manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, device="cuda", generator=g)  # noqa: E731
    return {
        "obs": {"vector": rand(S, C, 6)},
        "resets": torch.rand(S, C, device="cuda", generator=g) < 0.1,
        "actions": torch.randint(0, 4, (S, C), device="cuda", generator=g),
        "logprobs": rand(S, C) - 1.4,
        "values": rand(S, C),
        "advantages": rand(S, C),
        "returns": rand(S, C),
        "state": agent.initial_state(S, "cuda"),
    }


@pytest.mark.parametrize("core", ["hqlt-sync", "transformer", "gru"])
def test_graphed_ppo_steps_match_eager_steps(core):
    from agents.learner import LossConfig, PPOLearner, make_optimizer, set_lr

    obs_space = spaces.Dict({"vector": spaces.Box(-1, 1, (6,))})
    agents, learners = [], []
    for graph in (False, True):
        torch.manual_seed(0)
        agent = Agent(obs_space, spaces.Discrete(4), core=core, core_options={"d_model": 32})
        agent = agent.cuda()
        optimizer = make_optimizer(agent, 1e-3, graph=graph)
        agents.append(agent)
        learners.append(PPOLearner(agent, optimizer, LossConfig(), graph=graph))
    batch = _batch(agents[0])
    g = torch.Generator(device="cuda").manual_seed(1)
    for update in range(2):
        for learner in learners:
            set_lr(learner.optimizer, 1e-3 / (update + 1))  # read by the captured step
            learner.load(batch)
        for _ in range(3):
            idx = torch.randperm(8, device="cuda", generator=g)[:4]
            stats = [learner.step(idx).clone() for learner in learners]
            assert_close("step stats", stats[1], stats[0], tol=1e-4)
        batch["advantages"] = batch["advantages"] * -1  # a new batch for the next update
    for (name, a), b in zip(agents[0].named_parameters(), agents[1].parameters()):
        assert_close(name, b, a, tol=1e-4)
    if core != "gru":  # cuDNN GRU spans between resets sync with the host: eager fallback
        assert learners[1].graph is not None, "the learner fell back to eager steps"
