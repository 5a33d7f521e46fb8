"""Frozen pre-trained encoders G that turn an image into a 1-D prior (see `registry`)."""
from .preprocess import Preprocess, apply_preprocess
from .registry import ENCODERS, Encoder, EncoderInfo, EncoderSpec, build_encoder, list_encoders, register_encoder

__all__ = ["ENCODERS", "Encoder", "EncoderInfo", "EncoderSpec", "Preprocess", "apply_preprocess",
           "build_encoder", "list_encoders", "register_encoder"]
