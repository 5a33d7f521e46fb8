"""Frozen pre-trained encoders G that turn an image into a 1-D prior (see `registry`).

The built-in encoders are imported here by name, as timm's ``models/__init__`` does: each module
registers itself in the leaf `registry` when imported, and nothing scans a folder. Their heavy
libraries are imported inside the factories only. The recorded-degradation prior is not an
encoder (it reads no pixels): it is a row source of the extraction engine, `degradation`.
"""
from . import blip2, clip, imagenet, restoration, sd  # noqa: F401 (registers the built-in encoders)
from .preprocess import Preprocess, apply_preprocess
from .registry import ENCODERS, Encoder, EncoderInfo, EncoderSpec, build_encoder, list_encoders, register_encoder

__all__ = ["ENCODERS", "Encoder", "EncoderInfo", "EncoderSpec", "Preprocess", "apply_preprocess",
           "build_encoder", "list_encoders", "register_encoder"]
