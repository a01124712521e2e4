"""Acting through a CUDA graph.

Acting is launch-bound: one policy step is a few hundred small kernels (encoder, every layer
of the core, heads, sampling) over a batch of a few hundred envs, so the GPU waits on Python.
`GraphedActor` captures `Agent.act` for a fixed batch once and then replays it: inputs are
copied into static buffers, the graph runs, outputs are read back. Weights are read by address,
so optimizer steps (in place) are seen by later replays. A policy whose step waits on the
host (found by `rlmem.graphs.host_sync_in` before capturing) acts eagerly, with a warning. The
PPO step's graph is `agents.learner.PPOLearner`.
"""

from __future__ import annotations

import warnings

import torch

from agents.policy import ActOutput, Agent, Obs
from rlmem.graphs import copy_into, warm_up_on_side_stream
from rlmem.memory import State, tree_map


class GraphedActor:
    """`actor(obs, state, resets)` == `agent.act(obs, state, resets)` (sampled actions), replayed
    from a CUDA graph on CUDA and eager elsewhere.

    The returned state is the graph's static state buffer, which the next call overwrites:
    clone it to keep it (rollout storage does). Passing it back in costs no copy. Actions,
    log-probs and values are fresh tensors.
    """

    def __init__(self, agent: Agent, enabled: bool = True):
        self.agent = agent
        self.enabled = enabled
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict | None = None

    @torch.no_grad()
    def __call__(self, obs: Obs, state: State, resets: torch.Tensor) -> ActOutput:
        if not self.enabled or resets.device.type != "cuda":
            return self.agent.act(obs, state, resets)
        if self.graph is None:
            try:
                self._capture(obs, state, resets)
            except RuntimeError as err:  # e.g. an op that synchronises with the host
                warnings.warn(f"acting eagerly, not through a CUDA graph: {err}", stacklevel=2)
                self.enabled = False
                torch.cuda.synchronize()
                return self.agent.act(obs, state, resets)
        static = self.static
        copy_into(static["obs"], obs)
        static["resets"].copy_(resets)
        if state is not static["state"]:  # usually it is: the state this graph returned last
            copy_into(static["state"], state)
        self.graph.replay()
        out = static["out"]
        return ActOutput(
            out.action.clone(), out.logprob.clone(), out.value.clone(), static["state"]
        )

    def _capture(self, obs: Obs, state: State, resets: torch.Tensor) -> None:
        static = {
            "obs": tree_map(torch.clone, obs),
            "state": tree_map(torch.clone, state),
            "resets": resets.clone(),
        }
        run = lambda: self.agent.act(static["obs"], static["state"], static["resets"])
        sync = warm_up_on_side_stream(run)
        if sync is not None:
            raise RuntimeError(f"the policy step synchronises with the host ({sync})")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static["out"] = run()
            # The new state goes back into the input buffers: the next step reads it there.
            copy_into(static["state"], static["out"].state)
        self.graph, self.static = graph, static
