"""DETR's transformer parts: the sine positional encoding and the encoder-decoder."""
from sephnet.modeling.transformer.positional_encoding import SinePositionalEncoding
from sephnet.modeling.transformer.transformer import (
    DETRDecoderLayer,
    DETREncoderLayer,
    DETRTransformer,
)

__all__ = ["SinePositionalEncoding", "DETREncoderLayer", "DETRDecoderLayer", "DETRTransformer"]
