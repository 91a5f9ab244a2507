"""The last encoder layer of a BERT sequence classifier, computed for the first token only.

``BertForSequenceClassification`` reads one vector of its last encoder layer: the first token's
([CLS]), through the pooler. The layer's queries, attention output, feed-forward block and layer
norms for every other token are work nobody reads; only its keys and values need every token.
:func:`first_token_last_layer` swaps that layer for :class:`FirstTokenLayer`, which computes the
rest for the first token alone, with the same maths, so the logits do not change. In a 3-layer
encoder that is about a quarter of the matrix products at any batch size. Both
``lit_opt.export_onnx(..., first_token_only=True)`` (the default) and
``lit_opt.load(..., first_token_only=True)`` apply it.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                     intermediate_size=64, attn_implementation="eager")
    >>> model = BertForSequenceClassification(config).eval()
    >>> ids = torch.randint(0, 50, (2, 7))
    >>> before = model(input_ids=ids).logits
    >>> first_token_last_layer(model)
    True
    >>> torch.allclose(model(input_ids=ids).logits, before, atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertLayer, BertPooler

from lit_opt.export.onnx_attention import OnnxSelfAttention, additive_mask, attention_context


class FirstTokenLayer(nn.Module):
    """A ``BertLayer`` whose output is its first token's row only: ``(batch, 1, hidden)``.

    It takes over the layer's ``attention``, ``intermediate`` and ``output`` under the same names, so
    parameter and initializer names do not change. Keys and values come from every token; the
    attention mask (additive, or boolean where ``True`` keeps a key) is read for the first query row.
    """

    def __init__(self, layer: BertLayer) -> None:
        super().__init__()
        self.attention, self.intermediate, self.output = layer.attention, layer.intermediate, layer.output

    def forward(
        self, hidden_states: Tensor, attention_mask: Tensor | None = None, *args: Any, **kwargs: Any
    ) -> Tensor:
        attention = self.attention.self
        first = hidden_states[:, :1]  # (B, 1, H)
        mask = None if attention_mask is None else attention_mask[..., :1, :]  # the first query's row
        if isinstance(attention, OnnxSelfAttention):
            context = attention.attend(first, hidden_states, mask)
        else:
            context = attention_context(
                attention.query(first),
                attention.key(hidden_states),
                attention.value(hidden_states),
                None if mask is None else additive_mask(mask, hidden_states.dtype),
                attention.attention_head_size,
                attention.scaling,
            )
        attended = self.attention.output(context, first)
        return self.output(self.intermediate(attended), attended)


def first_token_last_layer(model: nn.Module) -> bool:
    """Swap the last encoder layer of a BERT sequence classifier for a :class:`FirstTokenLayer`.

    Returns ``True`` when swapped; ``False`` (model unchanged) for any other model, whose head may read
    other tokens. The last layer's other rows of ``last_hidden_state`` are gone afterwards: use it
    for the logits only (as an exported classifier graph does).
    """
    if not isinstance(model, BertForSequenceClassification) or not isinstance(model.bert.pooler, BertPooler):
        return False
    layers = model.bert.encoder.layer
    if not len(layers) or not isinstance(layers[-1], BertLayer) or layers[-1].is_decoder:
        return False
    layers[-1] = FirstTokenLayer(layers[-1])
    return True
