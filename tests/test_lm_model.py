"""The LM around every registered core: full forward = prefill + stepwise decoding."""

import pytest
import torch
from helpers import assert_close

from lm.model import LM, LMConfig, mean_keys, sample_next
from rlmem.memory import CORES, core_options

VOCAB, BOS = 11, 10


def tiny_lm(core: str, **overrides) -> LM:
    """A small fp32 model whose windows and chunks are crossed within a dozen tokens."""
    accepted = core_options(core)
    opts = {k: v for k, v in {"window": 4, "chunk": 4, "max_len": 64}.items() if k in accepted}
    sizes = dict(d_model=32, n_layers=2, n_heads=2)
    return LM(LMConfig(vocab_size=VOCAB, core=core, core_opts=opts, **sizes, **overrides)).eval()


def tokens(batch: int = 3, steps: int = 13) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids with document starts (<bos>) at t=0 and mid-sequence; resets where bos."""
    idx = torch.randint(0, BOS, (batch, steps))
    idx[:, 0] = BOS
    idx[1, steps // 2] = BOS
    return idx, idx == BOS


@pytest.mark.parametrize("core", list(CORES))
def test_forward_equals_prefill_then_step(core):
    torch.manual_seed(0)
    model = tiny_lm(core)
    idx, resets = tokens()
    with torch.no_grad():
        full, _, _ = model(idx, resets=resets)
        prefill = 5
        logits, _, state = model(idx[:, :prefill], resets=resets[:, :prefill])
        stepped = [logits]
        for t in range(prefill, idx.shape[1]):
            logit, state = model.step(idx[:, t], state, resets[:, t])
            stepped.append(logit[:, None])
    assert_close(f"{core} logits", torch.cat(stepped, dim=1), full)


@pytest.mark.parametrize("core", list(CORES))
def test_greedy_generation_matches_full_recomputation(core):
    torch.manual_seed(1)
    model = tiny_lm(core)
    idx, _ = tokens(batch=2, steps=5)
    out = model.generate(idx, max_new_tokens=6, temperature=0)
    assert out.shape == (2, 11) and torch.equal(out[:, :5], idx)
    seq = idx
    with torch.no_grad():
        for _ in range(6):
            logits, _, _ = model(seq)
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, seq)


@pytest.mark.gpu
@pytest.mark.parametrize("core", list(CORES))
def test_graphed_decoding_matches_eager_decoding(core):
    from lm.decode import GraphedStep

    torch.manual_seed(2)
    model = tiny_lm(core).cuda()
    idx = tokens(batch=2, steps=5)[0].cuda()
    runs = {}
    for graphed in (False, True):  # sampled, same seed: the same tokens
        gen = torch.Generator(device="cuda").manual_seed(0)
        runs[graphed] = model.generate(idx, 12, 0.8, 5, gen, cuda_graph=graphed)
    assert torch.equal(runs[True], runs[False])
    # Step by step past the windows and chunks, at two batch sizes (a capture each), passing
    # the graph's own state back (no copy) and, once, a state of the eager run (copied in).
    stepper = GraphedStep(model)
    for rows in (2, 1):
        with torch.no_grad():
            _, _, state_e = model(idx[:rows])
            state_g = state_e
            ids = idx[:rows, -1]
            for t in range(12):
                logits_g, state_g = stepper(ids, state_e if t == 6 else state_g)
                logits_e, state_e = model.step(ids, state_e)
                assert_close(f"{core} logits, {rows} rows, step {t}", logits_g, logits_e, 1e-5)
                ids = logits_e.argmax(-1)
    assert stepper.enabled and len(stepper.graphs) == 2, "decoding fell back to eager steps"


@pytest.mark.gpu
@pytest.mark.parametrize("core", ["hqlt-sync", "transformer"])
def test_compiled_graphed_decoding_matches_eager_decoding(core):
    from lm.decode import GraphedStep

    torch.manual_seed(3)
    model = tiny_lm(core).cuda()
    idx = tokens(batch=2, steps=5)[0].cuda()
    stepper = GraphedStep(model, compile=True)
    with torch.no_grad():
        _, _, state_e = model(idx)
        state_g, ids = state_e, idx[:, -1]
        for t in range(10):
            logits_g, state_g = stepper(ids, state_g)
            logits_e, state_e = model.step(ids, state_e)
            assert_close(f"{core} logits, step {t}", logits_g, logits_e, 1e-4)
            ids = logits_e.argmax(-1)
    assert stepper.enabled and stepper.graphs, "decoding fell back to eager steps"


def test_loss_is_cross_entropy_over_scored_targets_only():
    model = tiny_lm("gru")
    idx, _ = tokens()
    targets = torch.full_like(idx, -100)
    targets[:, 4] = 3
    logits, loss, _ = model(idx, targets)
    want = torch.nn.functional.cross_entropy(logits[:, 4], targets[:, 4])
    assert torch.allclose(loss, want)


def test_tied_head_shares_the_embedding():
    tied, untied = tiny_lm("mlp"), tiny_lm("mlp", tie_weights=False)
    assert tied.lm_head.weight is tied.wte.weight
    assert untied.lm_head.weight is not untied.wte.weight
    extra = untied.get_num_params(non_embedding=False) - tied.get_num_params(non_embedding=False)
    assert extra == VOCAB * 32
    assert untied.get_num_params() == tied.get_num_params()  # the input embedding is left out


def test_sampling_greedy_top1_and_distribution():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 0.0]])
    assert sample_next(logits, temperature=0).tolist() == [1, 0]
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, 1.0, top_k=1, generator=gen).tolist() == [1, 0]
    draws = torch.stack([sample_next(logits, 1.0, top_k=2, generator=gen) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1, 2}  # the least likely token is cut by top_k


def test_flops_count_attention_where_there_is_some():
    assert mean_keys(4, 8) == pytest.approx((1 + 2 + 3 + 4 * 5) / 8)
    assert mean_keys(4, 8, chunked=True) == pytest.approx(2.5)
    mlp = tiny_lm("mlp")
    assert mlp.flops_per_token(128) == 6 * mlp.get_num_params()
    if "transformer" in CORES:
        attn = tiny_lm("transformer")
        assert attn.flops_per_token(64) > 6 * attn.get_num_params()
        assert 0 < attn.estimate_mfu(1e6, 64, 1e12) < 1


def test_errors_name_what_is_valid():
    with pytest.raises(ValueError, match="valid cores"):
        LM(LMConfig(core="no-such-core"))
    with pytest.raises(ValueError, match="LMConfig fields"):
        LM(LMConfig(core="gru", core_opts={"d_model": 8}))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        tiny_lm("gru")(torch.zeros(5, dtype=torch.long))
