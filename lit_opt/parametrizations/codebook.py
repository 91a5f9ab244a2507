"""``Codebook``: a parametrization that replaces a weight by trainable shared values (weight sharing)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_opt.parametrizations.extra_state import ConfigExtraState


class Codebook(ConfigExtraState):
    """Weight sharing (Han et al. 2016): the weight becomes ``centroids[indices]``.

    ``centroids`` is an ``nn.Parameter`` of ``n_clusters`` values and exists from construction, so
    an optimizer built after ``setup`` already holds it; ``indices`` (uint8, one per weight entry),
    ``clustered`` and ``zero_cluster`` are persistent buffers, so a checkpoint taken at any step
    restores exactly. Until ``clustered`` is set (by :func:`lit_opt.sharing.cluster_weights`) the
    weight passes through unchanged.

    Once clustered, the gradient reaching each centroid is the sum of its members' gradients (the
    backward of indexing), and the original weight is unused: it gets a zero gradient, which keeps
    it in the autograd graph so DDP (``find_unused_parameters=False``) still finds every parameter.
    Centroids are rounded to float16 in the forward (straight-through for the gradient), so the
    float16 codebook that export writes reproduces the trained weight exactly. With
    ``zero_cluster`` set (a pruning :class:`~lit_opt.parametrizations.Mask` comes first), cluster 0
    is pinned at zero and never trained, and entries the mask zeroes stay zero even if the mask
    changes after clustering.

    Args:
        shape: shape of the weight.
        n_clusters: number of shared values, 2 to 256.
        owner: ``state_key`` of the callback that installed it.

    Example::

        >>> from torch.nn.utils import parametrize
        >>> layer = torch.nn.Linear(3, 2)
        >>> book = Codebook((2, 3), n_clusters=2)
        >>> _ = parametrize.register_parametrization(layer, "weight", book)
        >>> with torch.no_grad():
        ...     _ = book.centroids.copy_(torch.tensor([-0.5, 0.25]))
        ...     _ = book.indices.copy_(torch.tensor([[0, 1, 1], [1, 0, 0]]))
        ...     _ = book.clustered.fill_(True)
        >>> layer.weight.tolist()
        [[-0.5, 0.25, 0.25], [0.25, -0.5, -0.5]]
    """

    what, callback, checked = "codebook", "WeightSharingCallback", ("shape", "n_clusters")
    fields = ("shape", "n_clusters", "owner")
    indices: Tensor
    clustered: Tensor
    zero_cluster: Tensor

    def __init__(
        self, shape: tuple[int, ...] | list[int] | torch.Size, n_clusters: int = 16, owner: str = ""
    ) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.n_clusters = int(n_clusters)
        if not 2 <= self.n_clusters <= 256:
            raise ValueError(
                f"n_clusters={n_clusters!r} must be from 2 to 256 (indices are stored as uint8)."
            )
        self.owner = owner
        self.centroids = nn.Parameter(torch.zeros(self.n_clusters))
        self.register_buffer("indices", torch.zeros(self.shape, dtype=torch.uint8))
        self.register_buffer("clustered", torch.tensor(False))
        self.register_buffer("zero_cluster", torch.tensor(False))

    def values(self) -> Tensor:
        """The shared values as the forward uses them: float16-representable, cluster 0 pinned at 0 if zero_cluster."""
        raw: Tensor = self.centroids
        c = raw + (raw.to(torch.float16).to(raw.dtype) - raw).detach()  # straight-through rounding
        pinned = (torch.arange(self.n_clusters, device=c.device) == 0) & self.zero_cluster
        return torch.where(pinned, torch.zeros_like(c), c)

    def encoded(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(codebook, indices)`` that reproduce ``forward(w)`` of a clustered codebook: float16 and uint8.

        ``w`` is this parametrization's input; with ``zero_cluster`` its zeros map to cluster 0.
        """
        indices = torch.where(self.zero_cluster & (w == 0), torch.zeros_like(self.indices), self.indices)
        return self.values().detach().to(torch.float16), indices

    def forward(self, w: Tensor) -> Tensor:
        flat = self.indices.reshape(-1).to(torch.int32)
        shared = (
            self.values().to(w.dtype).index_select(0, flat).reshape(w.shape)
        )  # (shape): centroid per entry
        shared = torch.where(self.zero_cluster & (w == 0), torch.zeros_like(shared), shared)
        return torch.where(self.clustered, shared, w)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, n_clusters={self.n_clusters}, clustered={bool(self.clustered)}"
