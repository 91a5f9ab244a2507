"""The models, data, training loops and timing the benchmarks share.

``model``: ``"minilm"`` (all-MiniLM-L6-v2 with a seeded 2-label head) or ``"tiny"`` (``--quick``: a random
2-layer BERT with the same vocabulary). ``data``: ``"rotten_tomatoes"`` (:mod:`lit_opt.data`'s cache) or
``"synthetic"`` (a made-up CSV in the run's directory; nothing is downloaded).

Example::

    dm = text_data(s, work_dir, max_length=64, batch_size=32, bucketing=True)
    trainer(max_epochs=1).fit(Classifier(classifier("tiny"), lr=1e-4), datamodule=dm)
"""

import csv
import functools
import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from benchmarks.harness import time_models
from lit_opt.data.rotten_tomatoes import rotten_tomatoes_csv
from lit_opt.data.text_classification import default_tokenizer
from lit_opt.distillation import students
from lit_opt.inference.bucketing import LengthBucketBatchSampler, pad_collate
from lit_opt.inference.measure import synthetic_batch
from lit_opt.recipe.training import Classifier, RecipeDataModule, model_inputs

SEED = 0
VOCAB = 30522  # all-MiniLM-L6-v2's (BERT uncased) vocabulary
WORDS = {
    "fresh": "moving warm sharp witty bright tender gripping clever lovely superb",
    "rotten": "dull flat tired clumsy bland messy hollow stale silly tedious",
    "either": "film plot actor scene story music script camera ending cast the a and of",
}
#: BERT shapes (hidden size, layers, heads, FFN width): all-MiniLM-L6-v2's and the tiny one of ``--quick``.
SHAPES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "tiny": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64),
}
#: The Linear layers the pruning and compression rows change: the encoder's (inside ``Classifier``). The
#: pooler (the one path from [CLS] to the head), the embeddings and the classifier stay as they are.
ENCODER = {"targets": ["model.bert.encoder.*"], "exclude": ["*classifier*", "*embeddings*"]}
#: The settings :func:`epoch_data` reads (with ``train_rows``, ``test_rows``): full-run defaults, quick values.
EPOCH_SETTINGS = dict(model="minilm", data="rotten_tomatoes", threads=1, max_length=(64, 32), batch_size=32)
#: What the distillation benchmarks share (with :data:`EPOCH_SETTINGS`).
DISTILL_SETTINGS = dict(epochs=2, teacher_lr=1e-4, temperature=2.0, alpha=0.7, hidden_weight=1.0)
#: What the benchmarks on :func:`fixed_batches` share.
FIXED_SETTINGS = dict(
    model="minilm", data="rotten_tomatoes", threads=2, warmup=(2, 1), latency_seq_len=(128, 16)
)


def classifier(model: str, seed: int = SEED, layers: int = 2) -> nn.Module:
    """A 2-label sequence classifier: ``"minilm"`` (pretrained) or ``"tiny"`` (random, ``layers`` deep)."""
    torch.manual_seed(seed)
    if model == "minilm":
        return students.pretrained(None, num_labels=2).float()
    shape = SHAPES["tiny"] | {"num_hidden_layers": layers}
    return BertForSequenceClassification(BertConfig(vocab_size=VOCAB, max_position_embeddings=160, **shape))


def minilm_tokenizer() -> Any:
    """The tokenizer of all-MiniLM-L6-v2 (``default_tokenizer()``), which the tiny model shares."""
    return AutoTokenizer.from_pretrained(default_tokenizer())


def small_student(model: str) -> nn.Module:
    """The pretrained 3-layer paraphrase-MiniLM-L3-v2 (``students.minilm_l3``), or a random 1-layer tiny BERT."""
    return students.minilm_l3(num_labels=2) if model == "minilm" else classifier("tiny", SEED + 1, layers=1)


def csv_path(data: str, work_dir: Path) -> Path:
    """The CSV (``text,label``) of ``data``: Rotten Tomatoes, or 480 synthetic snippets."""
    if data == "rotten_tomatoes":
        return rotten_tomatoes_csv()
    path = work_dir / "synthetic.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for i in range(480):
            label = "fresh" if i % 2 else "rotten"
            pool = f"{WORDS[label]} {WORDS['either']}".split()
            words = (pool[(i * 3 + j * 5) % len(pool)] for j in range(4 + (i * 7) % 29))
            writer.writerow([" ".join(words), label])
    return path


def csv_rows(data: str, work_dir: Path) -> list[dict[str, str]]:
    """The rows (``text``, ``label``) of :func:`csv_path`'s file, in file order."""
    with open(csv_path(data, work_dir), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def text_data(
    s: Any, work_dir: Path, train_rows: int = 0, test_rows: int = 0, path: Path | None = None, **kwargs: Any
) -> RecipeDataModule:
    """The recipe's data module on ``path`` or ``s.data``, set up (split, seeded by ``SEED``) with its training split
    cut to ``train_rows`` and its test split to ``test_rows`` (0: all); synthetic data is tokenized under
    ``work_dir``."""
    kwargs |= dict(path=str(path or csv_path(s.data, work_dir)), max_train_rows=train_rows or None, seed=SEED)
    dm = RecipeDataModule(cache_dir=str(work_dir / "cache") if s.data == "synthetic" else None, **kwargs)
    dm.setup("fit")  # the split is the same for every stage
    if test_rows:
        dm.splits["test"] = dm.splits["test"].select(range(min(test_rows, len(dm.splits["test"]))))
    return dm


def trainer(callbacks: Iterable[L.Callback] = (), **kwargs: Any) -> L.Trainer:
    """A quiet single-CPU Trainer: no logger, checkpoints, progress bar, summary or validation."""
    kwargs |= dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    kwargs |= dict(num_sanity_val_steps=0, limit_val_batches=0, callbacks=list(callbacks))
    return L.Trainer(accelerator="cpu", devices=1, **kwargs)


class Clock(L.Callback):
    """Wall and CPU time of each training epoch and batch, and the ``global_step`` each batch started at.

    A batch is timed from its start to its end hooks: listed first, the clock includes the other callbacks'
    per-batch hooks.
    """

    def __init__(self) -> None:
        self.wall: list[float] = []  # per epoch, seconds
        self.cpu_per_wall: list[float] = []
        self.steps: list[int] = []  # per batch
        self.wall_ms: list[float] = []
        self.cpu_ms: list[float] = []

    def on_train_epoch_start(self, *_: Any) -> None:
        self._epoch = (time.perf_counter(), time.process_time())

    def on_train_epoch_end(self, *_: Any) -> None:
        self.wall.append(time.perf_counter() - self._epoch[0])
        self.cpu_per_wall.append((time.process_time() - self._epoch[1]) / self.wall[-1])

    def on_train_batch_start(self, trainer: L.Trainer, *_: Any) -> None:
        self.steps.append(trainer.global_step)
        self._batch = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, *_: Any) -> None:
        self.wall_ms.append((time.perf_counter() - self._batch[0]) * 1e3)
        self.cpu_ms.append((time.process_time() - self._batch[1]) * 1e3)


class EpochChunks(Sampler[list[int]]):
    """A fixed list of batches, ``per_epoch`` per epoch (epoch ``e`` gets chunk ``e``), so short epochs
    still see every batch once, in the same order in every run; ``yielded`` records what was served."""

    def __init__(self, batches: list[list[int]], per_epoch: int) -> None:
        self.batches, self.per_epoch, self.epoch = batches, per_epoch, 0
        self.yielded: list[list[int]] = []
        self.sampler = self  # Lightning calls set_epoch on batch_sampler.sampler

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches[self.epoch * self.per_epoch : (self.epoch + 1) * self.per_epoch]:
            self.yielded.append(batch)
            yield batch


def fixed_batches(s: Any, work_dir: Path, steps: int, batch: int = 32) -> dict[str, Any]:
    """``steps`` full, length-bucketed training batches (seed 0; the same in every run; max_length 64), the data
    module (its test loader: the test split cut to ``s.test_size`` rows, in batches of up to 128 of similar
    length), the collate function and the sizes, from a 80/5/15 stratified split."""
    split = dict(val_fraction=0.05, test_fraction=0.15)
    dm = text_data(s, work_dir, test_rows=s.test_size, max_length=64, batch_size=128, bucketing=True, **split)
    train, test = dm.splits["train"], dm.splits["test"]
    lengths = [len(ids) for ids in train["input_ids"]]
    sampler = LengthBucketBatchSampler(lengths, batch, shuffle=True, seed=SEED)
    batches: list[list[int]] = []
    for epoch in range(steps):  # an epoch holds at least one full batch
        sampler.set_epoch(epoch)
        batches += [b for b in sampler if len(b) == batch]
        if len(batches) >= steps:
            break
    batches, labels = batches[:steps], [int(y) for y in test["labels"]]
    sizes = {
        "train_split": len(train),
        "train_examples_used": sum(len(b) for b in batches),
        "train_unique_examples": len({i for b in batches for i in b}),
        "test": len(test),
        "test_label_counts": {name: labels.count(k) for k, name in enumerate(dm.label_names)},
    }
    collate = functools.partial(pad_collate, pad_token_id=dm.pad_token_id)
    return {"train": train, "dm": dm, "batches": batches, "collate": collate, "sizes": sizes}


def fit_batches(
    module: L.LightningModule, data: dict[str, Any], batches: list[list[int]], epochs: int = 1, **kwargs: Any
) -> float:
    """Train ``module`` on ``batches`` in order over ``epochs`` equal epochs (seeded dropout); its seconds.

    Raises:
        RuntimeError: the Trainer did not train on exactly those batches (the comparison would be void).
    """
    sampler = EpochChunks(batches, len(batches) // epochs)
    loader = DataLoader(data["train"], batch_sampler=sampler, collate_fn=data["collate"], num_workers=0)
    L.seed_everything(SEED, verbose=False)
    started = time.perf_counter()
    trainer(max_epochs=epochs, **kwargs).fit(module, loader)
    if sampler.yielded != batches:
        raise RuntimeError("a run did not train on the fixed batches in order; the comparison is void.")
    return time.perf_counter() - started


def step_call(model: nn.Module, batches: list[dict[str, torch.Tensor]], optimizer: Any = None) -> Callable:
    """A call that runs ``model`` on the next of ``batches`` (in turn): with ``optimizer`` a training step (the
    loss's backward pass, the optimizer step, the gradients cleared), else a forward pass."""
    cycle = itertools.cycle(batches)

    def call() -> None:
        output = model(**next(cycle))
        if optimizer is not None:
            output.loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return call


def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """A classifier's logits on ``inputs`` as float32 (inference mode)."""
    with torch.inference_mode():
        return model(**inputs).logits.float()


def logit_diff(a: nn.Module, b: nn.Module) -> float:
    """Largest absolute logit difference of two classifiers on 8 rows of 64 random token ids."""
    probe = synthetic_batch(8, 64, VOCAB, seed=1)
    return float((logits(a, probe) - logits(b, probe)).abs().max())


def time_batches(
    models: dict,
    baseline: str,
    batches: dict,
    seq_len: int,
    warmup: int,
    device: Any = "cpu",
    settle_ms: float = 0.0,
):
    """:func:`~benchmarks.harness.time_models` on random token ids of each batch size (-> its repeats):
    ``{batch size: {model: timing}}``."""
    inputs = {b: {k: v.to(device) for k, v in synthetic_batch(b, seq_len, VOCAB).items()} for b in batches}
    return {b: time_models(models, inputs[b], baseline, warmup, n, settle_ms) for b, n in batches.items()}


def epoch_data(s: Any, work_dir: Path) -> RecipeDataModule:
    """The epoch-based benchmarks' data: ``s.train_rows``/``s.test_rows`` of ``s.data``, ``s.max_length``,
    batches of ``s.batch_size`` bucketed by length and carrying ``idx`` (the same batches in every run)."""
    size = dict(max_length=s.max_length, batch_size=s.batch_size)
    return text_data(s, work_dir, s.train_rows, s.test_rows, **size, bucketing=True, return_index=True)


def fit_epochs(s: Any, work_dir: Path, module: L.LightningModule, callbacks: Iterable = ()) -> dict:
    """Train ``module`` for ``s.epochs`` epochs on a fresh :func:`epoch_data`: its steps and epoch times."""
    L.seed_everything(SEED, verbose=False)
    dm, clock = epoch_data(s, work_dir), Clock()
    fit = trainer([clock, *callbacks], max_epochs=s.epochs, default_root_dir=str(work_dir))
    started = time.perf_counter()
    fit.fit(module, datamodule=dm)
    row = {"steps": int(fit.global_step), "fit_wall_s": time.perf_counter() - started}
    row |= {"epoch_wall_s": clock.wall, "epoch_cpu_per_wall": clock.cpu_per_wall}
    return row | {"threads": torch.get_num_threads(), "train_rows": len(dm.splits["train"])}


def evaluate(s: Any, work_dir: Path, model: nn.Module) -> dict[str, Any]:
    """Validation and test accuracy on :func:`epoch_data` (eval mode, no gradients; the model's mode is
    restored), and ``test``: ``{idx: (label, predicted)}``."""
    dm, result, was_training = epoch_data(s, work_dir), {}, model.training
    model.eval()
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        pairs: dict[int, tuple[int, int]] = {}  # idx -> (label, predicted)
        for batch in loader:
            labels = batch["labels"].tolist()
            predicted = logits(model, model_inputs(batch)).argmax(-1).tolist()
            pairs |= zip(batch["idx"].tolist(), zip(labels, predicted, strict=True), strict=True)
        right = sum(y == p for y, p in pairs.values())
        result |= {f"{split}_acc": right / len(pairs), f"{split}_n": len(pairs)}
    model.train(was_training)
    return result | {"test": pairs}


def fine_tune_teacher(s: Any, work_dir: Path) -> tuple[nn.Module, dict[str, Any], Path]:
    """Fine-tune ``classifier(s.model)`` with cross-entropy (lr ``s.teacher_lr``, :func:`fit_epochs`) and save
    it with its tokenizer in ``work_dir/teacher``: the model, its :func:`evaluate` row and the directory."""
    model = classifier(s.model)  # seeded; fit_epochs seeds the training
    row = fit_epochs(s, work_dir, Classifier(model, lr=s.teacher_lr)) | evaluate(s, work_dir, model)
    model.save_pretrained(str(work_dir / "teacher"), safe_serialization=True)
    minilm_tokenizer().save_pretrained(str(work_dir / "teacher"))
    return model, row, work_dir / "teacher"


def standard_error(accuracy: float, n: int) -> float:
    """The binomial standard error of an accuracy measured on ``n`` examples."""
    return (accuracy * (1 - accuracy) / n) ** 0.5


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"
