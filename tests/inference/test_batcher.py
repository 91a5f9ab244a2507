"""DynamicBatcher: own results per caller, per-request errors, back-pressure, shutdown, asyncio."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, wait
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lit_opt.inference import BatcherClosedError, DynamicBatcher, QueueFullError
from lit_opt.inference.batcher import _warn_cudnn_attention, length_groups
from tests.helpers.models import tiny_bert


def ids(seed: int, length: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, 100, (length,), generator=generator).tolist()


def alone(model: nn.Module, input_ids: list[int]) -> Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([input_ids])).logits[0]


class Gate(nn.Module):
    """Sums the unmasked ids; blocks in forward until ``release`` is set (to hold the worker busy)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        self.entered.set()
        assert self.release.wait(10)
        return (input_ids * attention_mask).sum(-1, keepdim=True)  # (B, 1)


def test_concurrent_threads_each_get_their_own_result() -> None:
    model = tiny_bert()
    requests = [ids(seed, 3 + seed % 20) for seed in range(16)]
    results: dict[int, Any] = {}
    barrier = threading.Barrier(len(requests))

    def client(i: int) -> None:
        barrier.wait()
        results[i] = batcher({"input_ids": requests[i]}, timeout=30)

    with DynamicBatcher(model, max_batch_size=8, max_wait_ms=200) as batcher:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = batcher.stats
    for i, request in enumerate(requests):  # padded and batched == alone
        torch.testing.assert_close(results[i].logits, alone(model, request), atol=1e-5, rtol=1e-5)
    assert stats["requests"] == 16 and stats["batches"] < 16  # requests were really batched


class ShapeRecorder(nn.Module):
    """Sums the unmasked ids per row and records each forward pass's input shape."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        self.shapes.append(tuple(input_ids.shape))
        return (input_ids * attention_mask).sum(-1, keepdim=True)  # (B, 1)


@pytest.mark.parametrize(
    ("lengths", "pass_cost", "groups"),
    [
        ([30, 4, 5, 6], 64, [[1, 2, 3], [0]]),  # one pass 64 + 4*30 = 184; two 64 + 3*6 + 64 + 30 = 176
        ([5, 6, 6], 64, [[0, 1, 2]]),  # 82 in one pass; a cut only adds a pass
        ([7], 64, [[0]]),
        ([], 64, []),
        ([10, 10, 40, 40], 64, [[0, 1, 2, 3]]),  # 64 + 160 = 224 beats 64 + 20 + 64 + 80 = 228
        ([10, 10, 40, 40], 30, [[0, 1], [2, 3]]),  # 30 + 20 + 30 + 80 = 160 beats 190
        ([10, 10, 40, 40], 0, [[0, 1], [2, 3]]),  # padding alone: equal lengths stay together
        ([2, 50, 20, 3, 21, 51], 20, [[0, 3], [2, 4], [1, 5]]),  # 3 passes: 3*20 + 6 + 42 + 102 = 210
    ],
)
def test_length_groups_minimise_padding_plus_pass_cost(
    lengths: list[int], pass_cost: int, groups: list[list[int]]
) -> None:
    assert length_groups(lengths, pass_cost) == groups


def test_length_groups_match_brute_force_over_all_cuts() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        lengths = torch.randint(1, 60, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
        ranked = sorted(lengths)
        n = len(ranked)
        best = min(  # every subset of the n - 1 cut points of the sorted lengths
            sum(32 + (b - a) * ranked[b - 1] for a, b in zip([0, *cuts], [*cuts, n], strict=True))
            for mask in range(2 ** (n - 1))
            for cuts in [[k + 1 for k in range(n - 1) if mask >> k & 1]]
        )
        got = length_groups(lengths, 32)
        assert sorted(i for group in got for i in group) == list(range(n))
        assert sum(32 + len(grp) * max(lengths[i] for i in grp) for grp in got) == best


def test_length_groups_rejects_negative_pass_cost() -> None:
    with pytest.raises(ValueError, match=r"pass_cost=-1 is not accepted; expected an integer >= 0"):
        length_groups([3, 4], -1)


def test_a_batch_of_short_and_long_requests_runs_as_two_passes() -> None:
    model = ShapeRecorder()
    lengths = [3, 90, 2, 4]  # one pass: 128 + 4*90 = 488 tokens; two: 128 + 3*4 + 128 + 90 = 358
    with DynamicBatcher(model, max_batch_size=4, max_wait_ms=5000) as batcher:
        futures = [batcher.submit({"input_ids": ids(i, n)}) for i, n in enumerate(lengths)]
        results = [f.result(timeout=30) for f in futures]
        stats = batcher.stats
    assert model.shapes == [(3, 4), (1, 90)]
    assert [int(r) for r in results] == [sum(ids(i, n)) for i, n in enumerate(lengths)]
    assert stats == {"requests": 4, "batches": 2, "mean_batch_size": 2.0}


def test_a_large_pass_cost_keeps_the_batch_in_one_pass() -> None:
    model = ShapeRecorder()
    with DynamicBatcher(model, max_batch_size=4, max_wait_ms=5000, pass_cost=10**9) as batcher:
        futures = [batcher.submit({"input_ids": ids(i, n)}) for i, n in enumerate([3, 90, 2, 4])]
        assert [int(f.result(timeout=30)) for f in futures] == [
            sum(ids(i, n)) for i, n in enumerate([3, 90, 2, 4])
        ]
    assert model.shapes == [(4, 90)]


def test_padding_to_a_multiple_changes_the_shapes_not_the_results() -> None:
    model, recorder = tiny_bert(), ShapeRecorder()
    requests = [ids(seed, n) for seed, n in enumerate([3, 9, 5])]
    for target in (model, recorder):
        with DynamicBatcher(target, max_batch_size=3, max_wait_ms=5000, pad_to_multiple_of=8) as batcher:
            futures = [batcher.submit({"input_ids": request}) for request in requests]
            results = [f.result(timeout=30) for f in futures]
        if target is model:
            for request, result in zip(requests, results, strict=True):
                torch.testing.assert_close(result.logits, alone(model, request), atol=1e-5, rtol=1e-5)
    assert recorder.shapes == [(3, 16)]  # 9 tokens padded to 16


def test_outputs_go_to_output_device() -> None:
    model = tiny_bert().bert
    with DynamicBatcher(model, max_wait_ms=1, output_device="meta") as batcher:
        output = batcher({"input_ids": ids(0, 3)})
    assert output.last_hidden_state.device.type == "meta" and output.last_hidden_state.shape == (3, 32)
    with DynamicBatcher(model, max_wait_ms=1, output_device=None) as batcher:
        assert batcher({"input_ids": ids(0, 3)}).last_hidden_state.device.type == "cpu"  # the model's


def test_pass_cost_defaults_by_device() -> None:
    with DynamicBatcher(Gate()) as on_cpu, DynamicBatcher(nn.Linear(2, 2, device="meta")) as elsewhere:
        assert on_cpu.pass_cost == 128 and elsewhere.pass_cost is None
        assert elsewhere._passes([3, 90, 2]) == [[0, 1, 2]]  # one pass, whatever the lengths
        assert on_cpu._passes([3, 90, 2, 4]) == [[2, 0, 3], [1]]  # shortest first


def test_split_costs_count_the_padding_to_a_multiple() -> None:
    # raw lengths [9, 9, 17, 17] with pass cost 20: 20 + 4*17 = 88 in one pass, 20+18 + 20+34 = 92 in two;
    # padded to 16 they become [16, 16, 32, 32]: 20 + 128 = 148 in one pass, 20+32 + 20+64 = 136 in two
    with (
        DynamicBatcher(Gate(), pass_cost=20) as plain,
        DynamicBatcher(Gate(), pass_cost=20, pad_to_multiple_of=16) as padded,
    ):
        assert plain._passes([9, 9, 17, 17]) == [[0, 1, 2, 3]]
        assert padded._passes([9, 9, 17, 17]) == [[0, 1], [2, 3]]


@pytest.mark.parametrize("cudnn", [True, False])
def test_cuda_with_cudnn_attention_warns(
    cudnn: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: cudnn)
    with caplog.at_level("WARNING", logger="lit_opt.inference.batcher"):
        _warn_cudnn_attention(torch.device("cuda", 0))
        _warn_cudnn_attention(torch.device("cpu"))
    expected = ["torch.backends.cuda.enable_cudnn_sdp(False)"] if cudnn else []
    assert [m for r in caplog.records for m in expected if m in r.getMessage()] == expected
    assert len(caplog.records) == len(expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_a_cuda_model_serves_host_outputs_unless_asked_otherwise() -> None:
    model, request = tiny_bert(), ids(0, 5)
    expected = alone(model, request)
    model.cuda()
    with DynamicBatcher(model, max_wait_ms=1) as batcher:
        on_host = batcher({"input_ids": request}).logits
        assert batcher.pass_cost is None  # launch-bound: a batch is never split
    with DynamicBatcher(model, max_wait_ms=1, output_device=None) as batcher:
        on_gpu = batcher({"input_ids": request}).logits
    assert on_host.device.type == "cpu" and on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_host, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(on_gpu.cpu(), on_host)


def test_token_level_outputs_are_cut_to_the_request() -> None:
    model = tiny_bert().bert
    with DynamicBatcher(model, max_wait_ms=50) as batcher:
        short, long = batcher.submit({"input_ids": ids(0, 3)}), batcher.submit({"input_ids": ids(1, 9)})
        assert short.result(30).last_hidden_state.shape == (3, 32)
        assert long.result(30).last_hidden_state.shape == (9, 32)


def test_a_bad_request_fails_only_its_caller() -> None:
    model = tiny_bert()
    good = [ids(seed, 5) for seed in range(4)]
    with DynamicBatcher(model, max_batch_size=8, max_wait_ms=200) as batcher:
        futures = [batcher.submit({"input_ids": r}) for r in good[:2]]
        bad = batcher.submit({"input_ids": [1, 2, 1000]})  # id outside the vocabulary: fails in forward
        futures += [batcher.submit({"input_ids": r}) for r in good[2:]]
        with pytest.raises(IndexError):
            bad.result(30)
        for future, request in zip(futures, good, strict=True):
            torch.testing.assert_close(future.result(30).logits, alone(model, request), atol=1e-5, rtol=1e-5)


def test_full_queue_raises_and_close_serves_the_rest() -> None:
    gate = Gate()
    batcher = DynamicBatcher(gate, max_batch_size=1, max_wait_ms=1, max_queue_size=3)
    first = batcher.submit({"input_ids": [1]})
    assert gate.entered.wait(10)  # the worker is busy with the first request
    queued = [batcher.submit({"input_ids": [i]}) for i in (2, 3, 4)]
    with pytest.raises(QueueFullError, match=r"queue is full: 3 requests wait \(max_queue_size=3\)"):
        batcher.submit({"input_ids": [5]})
    gate.release.set()
    batcher.close()
    assert [f.result(0).item() for f in [first, *queued]] == [1, 2, 3, 4]
    with pytest.raises(BatcherClosedError, match="accepts no new requests"):
        batcher.submit({"input_ids": [6]})


def test_close_with_cancel_pending_leaves_no_future_hanging() -> None:
    gate = Gate()
    batcher = DynamicBatcher(gate, max_batch_size=1, max_wait_ms=1)
    first = batcher.submit({"input_ids": [1]})
    assert gate.entered.wait(10)
    pending: list[Future] = [batcher.submit({"input_ids": [i]}) for i in range(2, 6)]
    closer = threading.Thread(target=batcher.close, kwargs={"cancel_pending": True})
    closer.start()
    gate.release.set()
    closer.join(10)
    done, not_done = wait([first, *pending], timeout=5)
    assert not not_done
    assert first.result().item() == 1  # in flight: finished
    for future in pending:
        with pytest.raises(BatcherClosedError):
            future.result()


def test_close_timeout_fails_what_the_worker_could_not_finish() -> None:
    gate = Gate()
    batcher = DynamicBatcher(gate, max_batch_size=1, max_wait_ms=1)
    batcher.submit({"input_ids": [1]})
    assert gate.entered.wait(10)
    waiting = batcher.submit({"input_ids": [2]})
    batcher.close(timeout=0.05)  # the worker is stuck in forward
    with pytest.raises(BatcherClosedError, match="closed before the request was served"):
        waiting.result(0)
    gate.release.set()


def test_asyncio_callers() -> None:
    model = tiny_bert()
    requests = [ids(seed, 4 + seed) for seed in range(6)]

    async def main(batcher: DynamicBatcher) -> list[Any]:
        return await asyncio.gather(*(batcher.submit_async({"input_ids": r}) for r in requests))

    with DynamicBatcher(model, max_wait_ms=20) as batcher:
        outputs = asyncio.run(main(batcher))
    for output, request in zip(outputs, requests, strict=True):
        torch.testing.assert_close(output.logits, alone(model, request), atol=1e-5, rtol=1e-5)


class WordTokenizer:
    """A stand-in for a Hugging Face tokenizer: one id per word."""

    pad_token_id = 0

    def __call__(self, text: str, truncation: bool, max_length: int | None) -> dict[str, list[int]]:
        words = [len(w) for w in text.split()][: max_length if truncation else None]
        return {"input_ids": words, "attention_mask": [1] * len(words)}


def test_texts_are_tokenized_in_the_callers_thread() -> None:
    gate = Gate()
    gate.release.set()
    with DynamicBatcher(gate, tokenizer=WordTokenizer(), max_length=3) as batcher:
        assert batcher("a bb ccc dddd").item() == 6  # truncated to 3 tokens


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch_size": 0}, r"max_batch_size=0 is not accepted; expected an integer > 0"),
        ({"max_wait_ms": -1.0}, r"max_wait_ms=-1.0 is not accepted; expected a number > 0"),
        ({"max_queue_size": 0}, r"max_queue_size=0 is not accepted"),
        ({"max_length": 0}, r"max_length=0 is not accepted"),
        ({"pad_to_multiple_of": 0}, r"pad_to_multiple_of=0 is not accepted; expected an integer >= 1"),
        ({"pass_cost": -1}, r"pass_cost=-1 is not accepted; expected an integer >= 0"),
        ({"output_device": "gpu7"}, r"output_device='gpu7' is not a device torch knows"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DynamicBatcher(Gate(), **kwargs)


@pytest.mark.parametrize(
    ("request_", "error", "match"),
    [
        (42, TypeError, r"request of type int is not accepted; expected a str or a mapping"),
        ("a text", TypeError, r"request is a str, but the DynamicBatcher has no tokenizer"),
        ({"ids": [1]}, ValueError, r"request with keys \['ids'\] is not accepted; expected 'input_ids'"),
        ({"input_ids": []}, ValueError, r"request\['input_ids'\] is empty"),
        ({"input_ids": [1.5]}, ValueError, r"request\['input_ids'\] of type list is not accepted"),
        ({"input_ids": torch.ones(2, 2, dtype=torch.long)}, ValueError, r"expected a list of ints or a 1-D"),
        ({"input_ids": list(range(1, 70))}, ValueError, r"holds 69 tokens, more than max_length=64"),
        ({"input_ids": [1, 2], "attention_mask": [1]}, ValueError, r"'attention_mask'\] holds 1 values"),
    ],
)
def test_bad_requests_fail_in_submit(request_: Any, error: type[Exception], match: str) -> None:
    with DynamicBatcher(tiny_bert()) as batcher, pytest.raises(error, match=match):
        batcher.submit(request_)
