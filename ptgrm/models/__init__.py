"""Model registry: PTG-RM (R) and the baseline restoration networks (F).

Every architecture file is imported here explicitly, which registers it; nothing is discovered
by scanning folders. Models import only torch (and ptg's error type).
"""
from __future__ import annotations

# Importing an architecture file registers its name(s); the order fixes nothing but readability.
from . import (dncnn, feature_refine, ffdnet, nafnet, oidn, ptgrm, ptgrm_release, restormer, snr,  # noqa: F401
               spandrel_f, unet, zero_dce)
from . import cached_f  # noqa: F401  (F's outputs read from a cache: ptg train --f-outputs)
from .ffdnet import FFDNet, FFDNetConfig, load_pretrained_ffdnet
from .lwconv import location_wise_conv
from .ptgrm import PTGRM, PTGRMConfig, RefineOutput
from .registry import (
    ModelSpec,
    config_to_dict,
    create_model,
    get_model_config,
    get_model_config_class,
    get_model_spec,
    list_models,
    model_kind,
    register_model,
    uses_priors,
)

__all__ = [
    "FFDNet",
    "FFDNetConfig",
    "load_pretrained_ffdnet",
    "PTGRM",
    "PTGRMConfig",
    "RefineOutput",
    "location_wise_conv",
    "ModelSpec",
    "config_to_dict",
    "create_model",
    "get_model_config",
    "get_model_config_class",
    "get_model_spec",
    "list_models",
    "model_kind",
    "register_model",
    "uses_priors",
]
