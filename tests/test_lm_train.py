"""Training: exact resume, falling loss, NaN reporting, and the CLI end to end."""

import json

import pytest
import torch

from lm import cli
from lm.model import LM
from lm.train import TrainConfig, train

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "cores"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    gen = torch.Generator().manual_seed(0)
    for i in range(12):
        picks = torch.randint(0, len(WORDS), (400,), generator=gen).tolist()
        (root / f"doc{i}.txt").write_text(" ".join(WORDS[j] for j in picks) + "\n")
    return root


def config(corpus, run_dir, **overrides) -> TrainConfig:
    model = dict(core="gru", core_opt=["dropout=0.1"], d_model=32, n_layers=1, n_heads=2)
    data = dict(data=str(corpus), data_cache=str(run_dir.parent / "cache"), val_fraction=0.2)
    run = dict(seq_len=32, batch_size=4, max_steps=4, warmup_steps=1, lr=3e-3)
    logs = dict(eval_interval=100, eval_batches=2, log_interval=1, progress_bar=False)
    return TrainConfig(**{**model, **data, **run, **logs, "run_dir": str(run_dir), **overrides})


def test_resume_gives_the_same_next_losses_as_an_uninterrupted_run(corpus, tmp_path):
    whole = train(config(corpus, tmp_path / "whole"))["history"]
    interrupted = tmp_path / "interrupted"
    first = train(config(corpus, interrupted, max_steps=2, lr_decay_steps=4))["history"]
    assert (interrupted / "ckpt.pt").is_file()
    second = train(config(corpus, interrupted, lr_decay_steps=4))["history"]
    assert [s for s, _ in first] == [0, 1] and [s for s, _ in second] == [2, 3]
    assert [v for _, v in first + second] == pytest.approx([v for _, v in whole], rel=1e-6)


def test_loss_falls_and_checkpoint_loads(corpus, tmp_path):
    run = tmp_path / "run"
    result = train(config(corpus, run, core="mlp", core_opt=[], max_steps=30, lr=1e-2))
    losses = [v for _, v in result["history"]]
    assert losses[-1] < losses[0] - 1.0
    assert result["val_loss"] < 4.0
    assert json.loads((run / "results.json").read_text())["step"] == 30
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    assert ckpt["step"] == 30 and ckpt["model_config"]["core"] == "mlp"


def test_resume_refuses_another_model(corpus, tmp_path):
    train(config(corpus, tmp_path / "run", max_steps=1))
    with pytest.raises(ValueError, match="different model"):
        train(config(corpus, tmp_path / "run", core="mlp", core_opt=[], max_steps=2))


def test_non_finite_loss_is_reported_with_its_step(corpus, tmp_path, monkeypatch):
    forward = LM.forward

    def nan_after_two(self, idx, targets=None, state=None, resets=None):
        logits, loss, state = forward(self, idx, targets, state, resets)
        if self.training and self.calls >= 2:
            loss = loss * float("nan")
        self.calls += self.training
        return logits, loss, state

    monkeypatch.setattr(LM, "calls", 0, raising=False)
    monkeypatch.setattr(LM, "forward", nan_after_two)
    with pytest.raises(FloatingPointError, match="step 2"):
        train(config(corpus, tmp_path / "run", core="mlp", core_opt=[]))


def test_cli_train_generate_eval(corpus, tmp_path, capsys):
    run = tmp_path / "cli-run"
    args = "--core gru --max-steps 3 --d-model 32 --n-layers 1 --seq-len 32 --batch-size 2"
    args += " --no-progress-bar --eval-batches 1 --val-fraction 0.2"
    paths = ["--data", str(corpus), "--data-cache", str(tmp_path / "cache"), "--run-dir", str(run)]
    assert cli.main(["train", *args.split(), *paths]) == 0
    out = capsys.readouterr().out
    summary = out[out.index("run summary (gru, step 3)") :]  # the end summary, in order
    for line in ("train loss", "val loss", "tokens/s", f"run dir        {run}"):
        assert line in summary
    assert summary.rstrip().endswith(f"curves: rlmem plot {run}")
    sample = ["--prompt", "the quick", "--max-new-tokens", "5", "--num-samples", "2"]
    assert cli.main(["generate", str(run), *sample]) == 0
    out = capsys.readouterr().out
    assert out.count("the quick") == 2 and "--- sample 2" in out
    one = ["--prompt", "the quick", "--max-new-tokens", "12", "--temperature", "1.0"]
    assert cli.main(["generate", str(run), *one]) == 0  # one sample: streamed
    streamed = capsys.readouterr().out
    assert cli.main(["generate", str(run), *one, "--no-stream"]) == 0
    assert streamed == capsys.readouterr().out and streamed.startswith("the quick")
    assert cli.main(["eval", str(run), "--max-tokens", "500"]) == 0
    assert "val loss" in capsys.readouterr().out
    assert json.loads((run / "eval-val.json").read_text())["tokens"] > 0


def test_cli_rejects_unknown_commands(capsys):
    assert cli.main(["fly"]) == 2
    assert "valid commands" in capsys.readouterr().out


def test_throughput_benchmark_runs_tiny_on_cpu(tmp_path, capsys):
    import runpy
    from pathlib import Path

    bench = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "lm_throughput.py"))
    out = tmp_path / "tp.json"
    args = "--cores gru mlp --reference gru --d-model 16 --n-layers 1 --n-heads 2"
    args += " --vocab-size 50 --seq-len 16 --batch-size 2 --steps 1 --warmup 1 --device cpu"
    assert bench["main"]([*args.split(), "--json", str(out)]) == 0
    assert "| mlp |" in capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    assert [r["core"] for r in results] == ["gru", "mlp"]
    assert all(r["tokens_per_s"] > 0 for r in results)


def test_host_profile_benchmark_runs_tiny_on_cpu(capsys, monkeypatch):
    import runpy
    from pathlib import Path

    benchmarks = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))  # it imports lm_throughput, as a script does
    bench = runpy.run_path(str(benchmarks / "lm_host_profile.py"))
    args = "--cores gru --d-model 16 --n-layers 1 --n-heads 2 --vocab-size 50 --seq-len 16"
    args += " --batch-size 2 --steps 1 --warmup 1 --top 3 --device cpu"
    assert bench["main"](args.split()) == 0
    out = capsys.readouterr().out
    assert "## gru:" in out and "ms per step" in out
    assert "by cumulative time" in out and "operators by host time" in out


def test_throughput_benchmark_sdpa_peer_equals_the_transformer_core():
    import runpy
    from pathlib import Path

    from rlmem.memory import make_core

    bench = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "lm_throughput.py"))
    sizes = dict(d_model=32, n_layers=2, n_heads=4, max_len=64)
    core = make_core("transformer", **sizes)
    peer = bench["SDPATransformerCore"](**sizes)
    peer.load_state_dict(core.state_dict())
    x = torch.randn(2, 20, 32)
    torch.testing.assert_close(peer(x)[0], core(x)[0], rtol=1e-5, atol=1e-5)


def test_torchrun_ddp_on_cpu_trains_and_saves_once(corpus, tmp_path):
    import os
    import subprocess
    import sys

    run = tmp_path / "ddp"
    args = "--core gru --d-model 32 --n-layers 1 --seq-len 32 --batch-size 2 --max-steps 3"
    args += " --grad-accum 2 --log-interval 1 --eval-batches 1 --val-fraction 0.2 --no-progress-bar"
    paths = ["--data", str(corpus), "--data-cache", str(tmp_path / "cache"), "--run-dir", str(run)]
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launch, "-m", "lm.train", *args.split(), *paths],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 process(es)" in proc.stdout
    assert proc.stdout.count("step 3: loss") == 1  # only rank 0 logs
    assert torch.load(run / "ckpt.pt", weights_only=True)["step"] == 3


def test_text_stream_waits_for_a_whole_character():
    from lm.generate import TextStream
    from lm.tokenizer import ByteTokenizer

    pieces = []
    stream = TextStream(ByteTokenizer(), pieces.append)
    for byte in "aé€".encode():  # 1 + 2 + 3 bytes
        stream(torch.tensor([byte]))
    stream(torch.tensor([0xE2]))  # the first byte of another 3-byte character, cut short
    assert pieces == ["a", "é", "€"]
    stream.flush()
    assert "".join(pieces) == "aé€\ufffd"
