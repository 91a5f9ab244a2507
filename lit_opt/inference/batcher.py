"""``DynamicBatcher``: serve concurrent callers of one model with batched forward passes."""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from lit_opt._checks import check_device, check_int, check_module
from lit_opt.inference.bucketing import pad_collate, round_up

log = logging.getLogger(__name__)

#: A CPU forward pass's fixed cost in padded tokens (measured; see :func:`length_groups`).
CPU_PASS_COST = 128

#: Keys a pre-tokenized request may hold.
REQUEST_KEYS: tuple[str, ...] = ("input_ids", "attention_mask")


class QueueFullError(RuntimeError):
    """:meth:`DynamicBatcher.submit` found ``max_queue_size`` requests already waiting."""


class BatcherClosedError(RuntimeError):
    """The :class:`DynamicBatcher` was closed before (or while) the request could be served."""


@dataclass
class _Request:
    inputs: dict[str, Tensor]  # 1-D int64 tensors of one length
    future: Future = field(default_factory=Future)
    arrival: float = field(default_factory=time.monotonic)

    @property
    def length(self) -> int:
        return len(self.inputs["input_ids"])


def _map_tensors(output: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``output`` with ``fn`` applied to every tensor in it; mappings (a ``ModelOutput`` keeps its type),
    tuples and lists are rebuilt, anything else is returned as is."""
    if isinstance(output, Tensor):
        return fn(output)
    if isinstance(output, Mapping):  # includes transformers' ModelOutput
        mapped = {key: _map_tensors(value, fn) for key, value in output.items()}
        try:
            return type(output)(**mapped)
        except TypeError:
            return mapped
    if isinstance(output, (tuple, list)):
        return type(output)(_map_tensors(value, fn) for value in output)
    return output


def _select(output: Any, row: int, length: int, padded: int) -> Any:
    """Row ``row`` of a batched model output; token-level tensors ``(B, T, ...)`` trimmed to ``length``."""

    def row_of(tensor: Tensor) -> Tensor:
        value = tensor[row]
        if tensor.dim() >= 3 and tensor.shape[1] == padded:
            value = value[:length]  # (T, ...) -> this request's tokens
        return value.clone()

    return _map_tensors(output, row_of)


def length_groups(lengths: Sequence[int], pass_cost: int = CPU_PASS_COST) -> list[list[int]]:
    """Indices of a batch split into forward passes of similar lengths, at the least estimated cost.

    A pass costs its padded tokens (``size * longest``) plus ``pass_cost`` tokens for its fixed
    overhead. Sorted by length, the batch is cut where the total cost is least (an exact dynamic
    program over the cut points); parts come shortest first. The default is measured: with
    all-MiniLM-L6-v2's int8 kernels on 2 AVX2 cores, a pass of 1 x 16 tokens took 10.3 ms where a token
    of a 32 x 48 batch cost 0.15 ms, and on the measured (batch, length) grid a pass cost of 64 to 128
    tokens gave the least time for batches of Rotten Tomatoes lengths; 128 makes fewer passes, which
    the batcher's own per-pass work (padding, cutting outputs) favours.

    Example::

        >>> length_groups([60, 4, 5, 6])  # 128 + 4*60 = 368 in one pass; 128 + 3*6 + 128 + 60 = 334 in two
        [[1, 2, 3], [0]]
        >>> length_groups([5, 6, 6])
        [[0, 1, 2]]
    """
    if pass_cost < 0:
        raise ValueError(f"pass_cost={pass_cost!r} is not accepted; expected an integer >= 0.")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    ranked = [lengths[i] for i in order]
    # best[j]: least cost of the j shortest requests; start[j]: where their last pass begins
    best, start = [0] * (len(ranked) + 1), [0] * (len(ranked) + 1)
    for j in range(1, len(ranked) + 1):
        best[j], start[j] = min((best[i] + pass_cost + (j - i) * ranked[j - 1], i) for i in range(j))
    groups, end = [], len(ranked)
    while end > 0:
        groups.append(order[start[end] : end])
        end = start[end]
    return groups[::-1]


def _model_device(model: nn.Module) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _warn_cudnn_attention(device: torch.device) -> None:
    """Warn, when a batcher's model is on a GPU, if PyTorch may run attention with cuDNN (it plans per shape)."""
    if device.type == "cuda" and torch.backends.cuda.cudnn_sdp_enabled():
        log.warning(
            "DynamicBatcher on %s with cuDNN attention enabled: PyTorch builds a cuDNN plan for every new "
            "(batch, length) shape, about 80 ms each on an H100 (torch 2.11); with varied request lengths the "
            "batcher served half as many requests per second. HINT: call "
            "torch.backends.cuda.enable_cudnn_sdp(False) before serving.",
            device,
        )


def _check_positive(name: str, value: Any, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value <= 0:
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name}={value!r} is not accepted; expected {what} > 0.")


class DynamicBatcher:
    """Serve concurrent callers of one model: queued requests run together in one padded forward pass.

    Callers in any thread :meth:`submit` a request (a text, or token ids) and get a
    :class:`~concurrent.futures.Future`; in asyncio, ``await batcher.submit_async(request)``; or block on
    ``batcher(request)``. One worker thread takes up to ``max_batch_size`` waiting requests as soon as
    that many wait or the oldest has waited ``max_wait_ms``, pads them to the longest one, runs the model
    once (``model(input_ids=..., attention_mask=...)``, under ``torch.inference_mode``; or in a few passes,
    short and long requests apart, where the padding saved outweighs a pass's fixed cost:
    :func:`length_groups`) and gives each
    caller its own row of the output (a ``ModelOutput`` keeps its type; token-level outputs
    ``(B, T, ...)`` are cut to the request's own tokens).

    Errors stay with their request: a malformed request fails in :meth:`submit`, in the caller's thread;
    if a batch's forward pass raises, its requests are run one by one, so only the failing one gets the
    exception. At most ``max_queue_size`` requests wait; beyond that :meth:`submit` raises
    :class:`QueueFullError` at once (back-pressure, not an unbounded backlog). :meth:`close` (also on
    leaving a ``with`` block) stops new requests, then serves every waiting one, or with
    ``cancel_pending=True`` fails each with :class:`BatcherClosedError`: no future is left pending.

    Args:
        model: The model, e.g. from :func:`lit_opt.load`; it takes ``input_ids`` and ``attention_mask``.
        tokenizer: A Hugging Face tokenizer, or the path of one, to accept texts; optional for token ids.
        max_batch_size: The most requests in one forward pass.
        max_wait_ms: How long the oldest waiting request may wait for others to join it.
        max_queue_size: The most requests waiting at once.
        max_length: The most tokens in a request: texts are truncated, longer token ids rejected
            (default: the model config's ``max_position_embeddings``, else no limit).
        pad_token_id: The padding id (default: the tokenizer's, else the model config's, else 0).
        pad_to_multiple_of: Pad each pass's length up to a multiple of this, so that kernels built or
            tuned per shape (oneDNN's, CUDA's) meet fewer shapes.
        pass_cost: The fixed cost of a forward pass, in padded tokens, with which :func:`length_groups`
            decides whether to split a batch by length (default: 128 on a CPU; on any other device,
            such as a GPU, launch-bound at these sizes, a batch is never split).
        output_device: Where callers get their outputs: the host by default (one copy per pass from a
            GPU, then the rows are cut there); ``None`` keeps them on the model's device.

    Raises:
        ValueError: If a size or wait is not positive, ``pass_cost`` is negative, or ``output_device``
            is not a device.

    Example::

        >>> model = lit_opt.load("artifacts/minilm-int8")  # doctest: +SKIP
        >>> with DynamicBatcher(model, tokenizer="artifacts/minilm-int8", max_wait_ms=5) as batcher:  # doctest: +SKIP
        ...     logits = batcher("a fine, quiet film").logits  # blocks; other threads batch alongside
        ...     output = await batcher.submit_async({"input_ids": [101, 2307, 102]})  # in a coroutine
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any = None,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_size: int = 1024,
        max_length: int | None = None,
        pad_token_id: int | None = None,
        pad_to_multiple_of: int = 1,
        pass_cost: int | None = None,
        output_device: str | torch.device | None = "cpu",
    ) -> None:
        check_module("model", model, "HINT: e.g. DynamicBatcher(lit_opt.load('artifacts/minilm-int8')).")
        _check_positive("max_batch_size", max_batch_size, integer=True)
        _check_positive("max_wait_ms", max_wait_ms, integer=False)
        _check_positive("max_queue_size", max_queue_size, integer=True)
        check_int("pad_to_multiple_of", pad_to_multiple_of, 1)
        if pass_cost is not None:
            check_int("pass_cost", pass_cost, 0)
        if max_length is not None:
            _check_positive("max_length", max_length, integer=True)
        if isinstance(tokenizer, str):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        config = getattr(model, "config", None)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1e3
        self.max_queue_size = max_queue_size
        self.max_length = max_length or getattr(config, "max_position_embeddings", None)
        default_pad = getattr(tokenizer, "pad_token_id", None)
        if default_pad is None:
            default_pad = getattr(config, "pad_token_id", None)
        self.pad_token_id = pad_token_id if pad_token_id is not None else (default_pad or 0)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.output_device = None if output_device is None else check_device("output_device", output_device)
        self._device = _model_device(model)
        _warn_cudnn_attention(self._device)
        if pass_cost is None and self._device.type == "cpu":
            pass_cost = CPU_PASS_COST
        self.pass_cost = pass_cost  # None: one pass per batch (any device but a CPU, by default)
        self._pending: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._cancel = False
        self._batches = 0
        self._served = 0
        self._worker = threading.Thread(target=self._loop, name="DynamicBatcher", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ callers

    def submit(self, request: str | Mapping[str, Any]) -> Future:
        """Queue one request; returns the future of its output.

        Args:
            request: A text (needs ``tokenizer``) or ``{"input_ids": [...], "attention_mask": [...]}``
                (``attention_mask`` optional; lists of ints or 1-D integer tensors).

        Raises:
            TypeError: If the request is neither a text nor a mapping, or is a text without a tokenizer.
            ValueError: If its token ids are empty, too long, not integers, or it holds unknown keys.
            QueueFullError: If ``max_queue_size`` requests are already waiting.
            BatcherClosedError: If the batcher was closed.

        Example::

            >>> future = batcher.submit({"input_ids": [101, 7592, 102]})  # doctest: +SKIP
            >>> future.result().logits.shape  # doctest: +SKIP
            torch.Size([2])
        """
        item = _Request(self._encode(request))
        with self._cond:
            if self._closed:
                raise BatcherClosedError("DynamicBatcher is closed; it accepts no new requests.")
            if len(self._pending) >= self.max_queue_size:
                raise QueueFullError(
                    f"DynamicBatcher queue is full: {len(self._pending)} requests wait "
                    f"(max_queue_size={self.max_queue_size}). HINT: retry later, lower the request "
                    "rate, or raise max_queue_size or max_batch_size."
                )
            self._pending.append(item)
            self._cond.notify_all()
        return item.future

    async def submit_async(self, request: str | Mapping[str, Any]) -> Any:
        """:meth:`submit` for asyncio: ``output = await batcher.submit_async(request)``.

        Example::

            >>> async def classify(texts):  # doctest: +SKIP
            ...     return await asyncio.gather(*(batcher.submit_async(t) for t in texts))
        """
        return await asyncio.wrap_future(self.submit(request))

    def __call__(self, request: str | Mapping[str, Any], timeout: float | None = None) -> Any:
        """Submit ``request`` and wait (at most ``timeout`` seconds) for its output."""
        return self.submit(request).result(timeout)

    def close(self, cancel_pending: bool = False, timeout: float | None = None) -> None:
        """Stop accepting requests, then serve (or, with ``cancel_pending``, fail) every waiting one.

        Waits up to ``timeout`` seconds for the worker; requests it could not finish by then fail with
        :class:`BatcherClosedError`. Calling it again does nothing.

        Example::

            >>> batcher.close()  # doctest: +SKIP
        """
        with self._cond:
            self._closed = True
            self._cancel = self._cancel or cancel_pending
            self._cond.notify_all()
        self._worker.join(timeout)
        with self._cond:
            self._fail_pending("DynamicBatcher closed before the request was served.")

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> dict[str, float]:
        """Requests served, forward passes run and their mean batch size so far."""
        with self._cond:
            return {
                "requests": self._served,
                "batches": self._batches,
                "mean_batch_size": self._served / self._batches if self._batches else 0.0,
            }

    # ------------------------------------------------------------------ requests

    def _encode(self, request: Any) -> dict[str, Tensor]:
        if isinstance(request, str):
            if self.tokenizer is None:
                raise TypeError(
                    "request is a str, but the DynamicBatcher has no tokenizer. HINT: pass "
                    "DynamicBatcher(model, tokenizer=...) or submit token ids {'input_ids': [...]}."
                )
            request = self.tokenizer(
                request, truncation=self.max_length is not None, max_length=self.max_length
            )
        if not isinstance(request, Mapping):
            raise TypeError(
                f"request of type {type(request).__name__} is not accepted; expected a str or a mapping "
                f"with keys {list(REQUEST_KEYS)}."
            )
        unknown = sorted(set(request) - set(REQUEST_KEYS) - {"token_type_ids"})
        if unknown or "input_ids" not in request:
            raise ValueError(
                f"request with keys {sorted(request)} is not accepted; expected 'input_ids' and optionally "
                f"'attention_mask' (single-segment input; 'token_type_ids' is ignored)."
            )
        inputs = {key: self._ids(key, request[key]) for key in REQUEST_KEYS if key in request}
        length = len(inputs["input_ids"])
        if length == 0:
            raise ValueError("request['input_ids'] is empty; expected at least one token id.")
        if self.max_length is not None and length > self.max_length:
            raise ValueError(
                f"request['input_ids'] holds {length} tokens, more than max_length={self.max_length}. "
                "HINT: truncate it, or submit the text and let the tokenizer truncate."
            )
        mask = inputs.setdefault("attention_mask", torch.ones(length, dtype=torch.int64))
        if len(mask) != length:
            raise ValueError(
                f"request['attention_mask'] holds {len(mask)} values but 'input_ids' {length}; "
                "expected one per token."
            )
        return inputs

    @staticmethod
    def _ids(key: str, value: Any) -> Tensor:
        if isinstance(value, Tensor):
            tensor = value
        elif isinstance(value, Sequence) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            tensor = torch.tensor(list(value), dtype=torch.int64)
        else:
            tensor = None
        if tensor is None or tensor.dim() != 1 or tensor.is_floating_point() or tensor.is_complex():
            raise ValueError(
                f"request[{key!r}] of type {type(value).__name__} is not accepted; expected a list of ints "
                "or a 1-D integer tensor."
            )
        return tensor.to(torch.int64)

    # ------------------------------------------------------------------ worker

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._cancel:
                    self._fail_pending("DynamicBatcher closed with cancel_pending=True.")
                if not self._pending:
                    return  # closed, nothing left
                deadline = self._pending[0].arrival + self.max_wait_s
                while len(self._pending) < self.max_batch_size and not self._closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._cancel:
                    continue
                size = min(len(self._pending), self.max_batch_size)
                batch = [self._pending.popleft() for _ in range(size)]
            running = [r for r in batch if r.future.set_running_or_notify_cancel()]
            for group in self._passes([r.length for r in running]):
                self._serve([running[i] for i in group])

    def _passes(self, lengths: list[int]) -> list[list[int]]:
        """The forward passes (indices into ``lengths``) that serve one batch."""
        if self.pass_cost is None:
            return [list(range(len(lengths)))] if lengths else []
        return length_groups([round_up(n, self.pad_to_multiple_of) for n in lengths], self.pass_cost)

    def _fail_pending(self, message: str) -> None:
        """Fail every waiting request (call with the lock held)."""
        while self._pending:
            future = self._pending.popleft().future
            if future.set_running_or_notify_cancel():
                future.set_exception(BatcherClosedError(message))

    def _serve(self, requests: list[_Request]) -> None:
        """Run ``requests`` as one batch; if that raises, run them one by one so only the bad one fails."""
        try:
            inputs = [r.inputs for r in requests]
            batch = pad_collate(inputs, self.pad_token_id, self.pad_to_multiple_of)  # (B, T) each
            padded = batch["input_ids"].shape[1]
            with torch.inference_mode():
                output = self.model(**{key: value.to(self._device) for key, value in batch.items()})
                if self.output_device is not None:
                    output = _map_tensors(output, lambda tensor: tensor.to(self.output_device))
            results = [_select(output, i, r.length, padded) for i, r in enumerate(requests)]
        except Exception as err:  # the error belongs to a request, not to the worker
            if len(requests) == 1:
                requests[0].future.set_exception(err)
                return
            log.warning("batch of %d failed (%s); running its requests one by one", len(requests), err)
            for request in requests:
                self._serve([request])
            return
        with self._cond:
            self._batches += 1
            self._served += len(requests)
        for request, result in zip(requests, results, strict=True):
            request.future.set_result(result)
