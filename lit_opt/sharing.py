"""Which layers share their weights, and how: the configuration, the codebooks and the clustering.

:class:`SharingConfig` validates the arguments once; :func:`prepare_sharing` installs a
:class:`~lit_opt.parametrizations.Codebook` on each targeted weight (structure, at ``setup``);
:func:`cluster_weights` fills the codebooks with k-means centroids and indices (values, at
``start_step``) and makes every DDP rank hold rank 0's result. ``WeightSharingCallback`` is a thin
adapter over these functions.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> config = SharingConfig(n_clusters=4, init="linear")
    >>> prepare_sharing(model, config)
    ['0', '2']
    >>> cluster_weights(model, config)
    2
    >>> len(torch.unique(model[0].weight)) <= 4
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrize

from lit_opt._checks import check_int
from lit_opt.functional.clustering import INITS, kmeans_1d
from lit_opt.module_types import supported_types, warn_unsupported, with_tied
from lit_opt.parametrizations.codebook import Codebook
from lit_opt.parametrizations.mask import Mask
from lit_opt.parametrizations.ordering import register_in_order
from lit_opt.quantization import quantizer_input
from lit_opt.targets import select_modules, validate_patterns


@dataclass
class SharingConfig:
    """How to share weights; see :class:`lit_opt.WeightSharingCallback` for the meaning of each field.

    Raises:
        ValueError: an argument outside the accepted values, with the fix in the message.
    """

    n_clusters: int = 16
    init: str = "kmeans++"
    targets: Sequence[str] = field(default_factory=lambda: ["*"])
    exclude: Sequence[str] = field(default_factory=list)
    max_iter: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 256:
            raise ValueError(
                f"n_clusters={k!r} must be an integer from 2 to 256. HINT: indices are stored in "
                "ceil(log2(n_clusters)) bits, at most 8: 16 clusters give 4-bit indices, 256 give 8-bit ones."
            )
        if self.init not in INITS:
            raise ValueError(
                f"init={self.init!r} is not one of {INITS}. HINT: 'linear' spaces the initial centroids evenly "
                "between the smallest and largest weight (Han et al. 2016), 'kmeans++' seeds them at random."
            )
        check_int("max_iter", self.max_iter, 1)
        check_int("seed", self.seed, 0)
        self.targets = validate_patterns(self.targets, "targets")
        self.exclude = validate_patterns(self.exclude, "exclude")


def codebooks(model: nn.Module) -> Iterator[tuple[str, nn.Module, Codebook]]:
    """Yield ``(module_name, module, codebook)`` for every weight carrying a ``Codebook``."""
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in cast(Any, module).parametrizations["weight"]:
                if isinstance(p, Codebook):
                    yield name, module, p


def prepare_sharing(model: nn.Module, config: SharingConfig, owner: str = "") -> list[str]:
    """Install an (unclustered) :class:`Codebook` on every weight ``config`` selects; returns the names.

    Idempotent for the same ``owner`` (Lightning calls ``setup`` once per stage).

    Raises:
        ValueError: targets that match nothing or only modules without a shareable weight, or a
            weight another owner already shares.
    """
    selected = select_modules(model, config.targets, config.exclude, types=supported_types("sharing"))
    warn_unsupported(model, config.targets, config.exclude, "sharing")
    groups = with_tied(model, selected, "sharing")
    existing = {name: book for name, _, book in codebooks(model)}
    for name in (n for group in groups for n in group):
        if name in existing and existing[name].owner != owner:
            raise ValueError(
                f"module {name!r} is already shared by {existing[name].owner or 'another codebook'}; "
                f"{owner or 'this configuration'} targets it too. HINT: give each WeightSharingCallback "
                "disjoint `targets`/`exclude` patterns."
            )
    for group in groups:
        if any(name in existing for name in group):
            continue
        weight = cast(Tensor, model.get_submodule(group[0]).weight)
        book = Codebook(weight.shape, config.n_clusters, owner).to(weight.device, weight.dtype)
        for name in group:  # tied modules: one codebook, one set of indices
            register_in_order(model.get_submodule(name), "weight", book)
    return [name for group in groups for name in group]


def _mask_before(module: nn.Module, book: Codebook) -> Tensor | None:
    """The pruning mask applied before ``book`` on the same weight, if any."""
    for p in cast(Any, module).parametrizations["weight"]:
        if p is book:
            return None
        if isinstance(p, Mask):
            return p.mask
    return None


def _fill(module: nn.Module, book: Codebook, config: SharingConfig, generator: torch.Generator) -> None:
    """Cluster the weight ``book`` receives and store the centroids and indices (zeros pinned under a mask)."""
    w = quantizer_input(module, book).detach()
    mask = _mask_before(module, book)
    indices = torch.zeros(w.shape, dtype=torch.long, device=w.device)
    if mask is None:
        centroids, indices = kmeans_1d(w, config.n_clusters, config.init, config.max_iter, generator)
    else:  # cluster 0 holds the pruned zeros; the kept values share the other n_clusters - 1
        centroids = torch.zeros(config.n_clusters, dtype=w.dtype, device=w.device)
        if bool(mask.any()):
            kept, kept_indices = kmeans_1d(
                w[mask], config.n_clusters - 1, config.init, config.max_iter, generator
            )
            centroids[1:] = kept
            indices[mask] = kept_indices + 1
    book.centroids.copy_(centroids.to(torch.float16).to(book.centroids.dtype))
    book.indices.copy_(indices)
    book.zero_cluster.fill_(mask is not None)
    book.clustered.fill_(True)


def cluster_weights(model: nn.Module, config: SharingConfig, owner: str = "") -> int:
    """Run k-means on every unclustered codebook of ``owner`` and switch it on; returns how many.

    Every DDP rank computes the same clustering from the same weights; rank 0's centroids and
    indices are then broadcast so that nondeterministic GPU reductions cannot make ranks differ.
    """
    generator = torch.Generator().manual_seed(config.seed)
    done = []
    with torch.no_grad():
        for _, module, book in codebooks(model):
            if book.owner == owner and not bool(book.clustered):
                _fill(module, book, config, generator)
                done.append(book)
        if dist.is_available() and dist.is_initialized():
            for book in done:
                dist.broadcast(book.centroids.data, src=0)
                dist.broadcast(book.indices, src=0)
    return len(done)
