"""DETR's encoder-decoder transformer, built from PyTorch's own layers.

::

    src [N, d, H, W] --flatten--> [N, HW, d] --encoder (E layers)--> memory [N, HW, d]
    query_embed [Q, d] (learned)     tgt = 0 [N, Q, d]
    tgt --decoder (D layers, each attends to memory)--> LayerNorm after every layer
        --> hs [D, N, Q, d]   (one output per decoder layer, for the auxiliary losses)

Post-norm layers as in the paper. As in the paper, and unlike PyTorch's layers used as
they are, the positional encodings enter *every* layer and only the attention queries and
keys, never the values or the residual stream:

* encoder self-attention: q = k = x + pos, v = x;
* decoder self-attention: q = k = tgt + query_pos, v = tgt;
* decoder cross-attention: q = tgt + query_pos, k = memory + pos, v = memory.

:class:`DETREncoderLayer` and :class:`DETRDecoderLayer` are therefore minimal subclasses of
``nn.TransformerEncoderLayer`` / ``nn.TransformerDecoderLayer``: same sub-modules and
parameter names (their state dicts load into each other), only ``forward`` takes the
encodings. Padded cells of the feature map are masked out as attention keys.
"""
from typing import Optional

import torch
from torch import nn

__all__ = ["DETREncoderLayer", "DETRDecoderLayer", "DETRTransformer"]


def _with_pos(x: torch.Tensor, pos: Optional[torch.Tensor]) -> torch.Tensor:
    return x if pos is None else x + pos


class DETREncoderLayer(nn.TransformerEncoderLayer):
    """Post-norm encoder layer (ReLU, batch first) adding ``pos`` to queries and keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__(
            d_model, nhead, dim_feedforward, dropout, activation="relu", batch_first=True, norm_first=False
        )

    def forward(  # a different signature from the parent's: it takes the encodings
        self, src: torch.Tensor, pos: Optional[torch.Tensor], key_padding_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """
        Args:
            src, pos: ``[N, S, d]``; key_padding_mask: bool ``[N, S]`` (True = padded).

        Returns:
            ``[N, S, d]``.
        """
        q = k = _with_pos(src, pos)
        attn = self.self_attn(q, k, src, key_padding_mask=key_padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class DETRDecoderLayer(nn.TransformerDecoderLayer):
    """Post-norm decoder layer (ReLU, batch first) adding the query embeddings to the
    attention queries/keys of the object queries and ``pos`` to the memory's keys."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__(
            d_model, nhead, dim_feedforward, dropout, activation="relu", batch_first=True, norm_first=False
        )

    def forward(  # a different signature from the parent's: it takes the encodings
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor,
        pos: Optional[torch.Tensor],
        memory_key_padding_mask: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """
        Args:
            tgt, query_pos: ``[N, Q, d]``; memory, pos: ``[N, S, d]``;
            memory_key_padding_mask: bool ``[N, S]`` (True = padded).

        Returns:
            ``[N, Q, d]``.
        """
        q = k = tgt + query_pos
        attn = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attn))
        cross = self.multihead_attn(
            tgt + query_pos,
            _with_pos(memory, pos),
            memory,
            key_padding_mask=memory_key_padding_mask,
            need_weights=False,
        )[0]
        tgt = self.norm2(tgt + self.dropout2(cross))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ffn))


class DETRTransformer(nn.Module):
    """Encoder (no final norm: post-norm layers end normalised) and decoder whose every
    layer output goes through one shared final ``LayerNorm``."""

    def __init__(
        self,
        *,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
    ):
        """
        Args:
            d_model: width d of every token; must be divisible by ``nhead``.
            nhead: attention heads.
            num_encoder_layers: E >= 0 (0: the decoder reads the projected features).
            num_decoder_layers: D >= 1.
            dim_feedforward: hidden width of each layer's feed-forward block.
            dropout: in attention, feed-forward and residual branches, in [0, 1).
        """
        super().__init__()
        if d_model % nhead:
            raise ValueError(f"d_model={d_model} is not divisible by nhead={nhead}.")
        if num_encoder_layers < 0 or num_decoder_layers < 1:
            raise ValueError(
                f"num_encoder_layers={num_encoder_layers}, num_decoder_layers={num_decoder_layers}; "
                "expected >= 0 and >= 1."
            )
        self.encoder_layers = nn.ModuleList(
            DETREncoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_encoder_layers)
        )
        self.decoder_layers = nn.ModuleList(
            DETRDecoderLayer(d_model, nhead, dim_feedforward, dropout) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(d_model)
        self.d_model = d_model
        # the paper's initialisation: Xavier-uniform on every matrix of the transformer
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        src: torch.Tensor,
        padding_mask: torch.Tensor,
        query_embed: torch.Tensor,
        pos: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            src: ``[N, d, H, W]`` projected backbone features.
            padding_mask: bool ``[N, H, W]``, True on padded cells.
            query_embed: ``[Q, d]`` object queries (their positional embeddings).
            pos: ``[N, d, H, W]`` positional encoding of ``src``.

        Returns:
            ``[D, N, Q, d]``: the normalised output of every decoder layer, last one last.
        """
        n = src.shape[0]
        memory = src.flatten(2).transpose(1, 2)
        pos = pos.flatten(2).transpose(1, 2)
        mask = padding_mask.flatten(1)
        for layer in self.encoder_layers:
            memory = layer(memory, pos, mask)
        query_pos = query_embed.unsqueeze(0).expand(n, -1, -1)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, query_pos, pos, mask)
            outputs.append(self.decoder_norm(tgt))
        return torch.stack(outputs)
