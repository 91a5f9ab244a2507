"""Generation figures of causal LMs: prefill, decode tokens/s (KV cache), peak memory; lit-opt bench shows them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import lit_opt
from lit_opt.cli import main
from lit_opt.export.architecture import is_causal_lm
from lit_opt.inference import generation
from lit_opt.inference.generation import measure_generation
from tests.helpers.models import LM_VOCAB, tiny_bert, tiny_llama

FAST = ["--repeats", "1", "--warmup", "0", "--no-progress"]


def test_figures_for_every_model_and_batch_size() -> None:
    models = {"a": tiny_llama(), "b": tiny_llama(seed=1)}
    figures = measure_generation(
        models, LM_VOCAB, prompt_len=8, new_tokens=16, batch_sizes=[1, 3], repeats=3, warmup=0
    )
    assert sorted(figures) == ["a", "b"]
    for row in figures.values():
        assert set(row) == {"prefill_ms_b1", "decode_tokens_per_s_b1", "decode_tokens_per_s_b3", "peak_bytes"}
        assert row["prefill_ms_b1"] > 0 and row["peak_bytes"] > 0
        # decode: positive, or NaN where a loaded machine's noise exceeds the decode steps (see the next test)
        assert all(row[k] > 0 or math.isnan(row[k]) for k in row if k.startswith("decode"))


def test_decode_counts_the_tokens_after_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """tokens/s = batch x (new_tokens - 1) / (time(generate new_tokens) - time(generate 1))."""
    from lit_opt.inference.measure import Timing

    def fake(calls, warmup, repeats):  # generate(1) 10 ms, generate(new_tokens) 10 + 3 x 20 ms
        return {k: Timing([10.0 if "|one|" in k else 70.0 if "|all|" in k else 5.0], 1.0) for k in calls}

    monkeypatch.setattr(generation, "time_round_robin", fake)
    figures = measure_generation({"m": tiny_llama()}, LM_VOCAB, prompt_len=4, new_tokens=4, batch_sizes=[2])
    assert figures["m"]["decode_tokens_per_s_b2"] == pytest.approx(2 * 3 / 0.060)
    assert figures["m"]["prefill_ms_b1"] == 5.0


def test_greedy_generation_really_runs_the_requested_tokens() -> None:
    model = tiny_llama()
    call = generation._generate(model, {"input_ids": torch.full((2, 5), 2)}, 6)  # 2: the EOS id
    assert tuple(call().shape) == (2, 11)  # min_new_tokens: an early EOS does not cut it short


def test_bad_input() -> None:
    assert is_causal_lm(tiny_llama()) and not is_causal_lm(tiny_bert()) and not is_causal_lm(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"new_tokens=1 is not accepted; expected >= 2"):
        measure_generation({"m": tiny_llama()}, 100, new_tokens=1)
    with pytest.raises(ValueError, match=r"m: BertForSequenceClassification is not a causal LM.*HINT"):
        measure_generation({"m": tiny_bert()}, 100)


@pytest.fixture(scope="module")
def lm_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("lm")
    model = tiny_llama()
    model.save_pretrained(str(root / "hf"))
    return str(lit_opt.export(model, root / "int8", quantization={"weight_bits": 8})), str(root / "hf")


def test_bench_adds_generation_figures_for_a_causal_lm(
    lm_artifact: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    artifact, hf = lm_artifact
    extra = ["--batch-sizes", "1", "--seq-lens", "8", "--prompt-len", "8", "--new-tokens", "12"]
    main(
        [
            "bench",
            artifact,
            "--baseline",
            hf,
            *extra,
            "--decode-batch-sizes",
            "1,2",
            "--output-dir",
            str(tmp_path),
            *FAST,
        ]
    )
    report = json.loads((tmp_path / "bench.json").read_text())
    assert sorted(report["generation"]) == ["artifact", "baseline"]
    assert set(report["generation"]["artifact"]) >= {"prefill_ms_b1", "decode_tokens_per_s_b2", "peak_bytes"}
    assert report["settings"]["generation"]["decode_batch_sizes"] == [1, 2]
    assert "decode tok/s b2" in capsys.readouterr().out


def test_bench_refuses_a_prompt_beyond_the_positions(lm_artifact: tuple[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"prompt_len=60 \+ new_tokens=8 exceeds the 64 positions.*HINT"):
        main(
            [
                "bench",
                lm_artifact[0],
                "--seq-lens",
                "8",
                "--prompt-len",
                "60",
                "--new-tokens",
                "8",
                "--output-dir",
                str(tmp_path),
                *FAST,
            ]
        )


def test_decode_within_noise_is_nan_not_a_huge_number(monkeypatch: pytest.MonkeyPatch) -> None:
    from lit_opt.inference.measure import Timing

    monkeypatch.setattr(
        generation, "time_round_robin", lambda calls, warmup, repeats: {k: Timing([5.0], 1.0) for k in calls}
    )
    figures = measure_generation({"m": tiny_llama()}, LM_VOCAB, prompt_len=4, new_tokens=2, batch_sizes=[1])
    assert figures["m"]["decode_tokens_per_s_b1"] != figures["m"]["decode_tokens_per_s_b1"]  # NaN
