"""`clip`: OpenCLIP / OpenAI CLIP image tower — the prior the paper's authors use.

Prior: ``encode_image`` of the degraded image (the model's projection output), L2-normalised, as
in the authors' code (512-d for ViT-B-32). Preprocessing is the model's own evaluation transform,
pinned: short side to the model's resolution (bicubic) + centre crop, CLIP mean/std (the model's
``preprocess_cfg`` decides; a ``squash`` resize mode is honoured).

Weights: ``--pretrained`` is an open_clip tag (``openai``, ``laion2b_s34b_b79k``, ...; downloaded
to the open_clip/hub cache; offline, a cached copy is used or the error comes at once) or a local
checkpoint file. ``--arch`` is an open_clip model name or a
path to a model-config JSON (custom architectures).
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from ..core.errors import PtgError
from . import hub
from .preprocess import Preprocess
from .hub import cannot_fetch
from .registry import Encoder, EncoderSpec, random_fingerprint, register_encoder, sha256_file

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_TAG = "openai"  # the weights of the authors' released configuration
OPEN_CLIP_URL_CACHE = "~/.cache/clip"  # where open_clip keeps weights it fetches by URL rather than from the hub


def _resolve_arch(arch: str) -> str:
    import open_clip

    p = Path(arch).expanduser()
    if p.suffix == ".json":
        if not p.is_file():
            raise PtgError(f"open_clip model config {p} not found; pass an existing JSON file or a name from open_clip.list_models()")
        open_clip.add_model_config(p)  # registers it under the file's stem
        return p.stem
    if arch not in open_clip.list_models():
        raise PtgError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models() (e.g. ViT-B-32, RN50) or pass a model-config .json")
    return arch


def _preprocess_of(model, size: int | None) -> Preprocess:
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    side = cfg.get("size", 224)
    side = side[0] if isinstance(side, (tuple, list)) else int(side)
    side = size or side
    mode = cfg.get("resize_mode", "shortest")
    return Preprocess(
        size=side,
        resize="squash" if mode == "squash" else "short_side_center_crop",
        resize_short=side,
        interpolation=cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bicubic", "bilinear") else "bicubic",
        mean=tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD)),
    )


def _load_pretrained(open_clip, arch: str, tag: str, device: str, how: str):
    """(the model with its weights, the weights file) from a local file or an open_clip tag."""
    p = Path(tag).expanduser()
    if p.is_file():
        path = p.resolve()
    elif p.exists() or tag.startswith((".", "/", "~")) or p.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        raise PtgError(f"CLIP checkpoint {tag!r} is not a file. Pass an existing file or an open_clip tag, e.g. --pretrained openai")
    else:
        cfg = open_clip.get_pretrained_cfg(arch, tag)
        if not cfg:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
            raise PtgError(f"open_clip has no pretrained tag {tag!r} for {arch}; known tags: {tags}; or pass a local file")
    # A tag on a machine that cannot reach its host loads from the local cache or fails within
    # seconds (hub.offline_mode), instead of a minute of hub retries before the same failure.
    offline = None if p.is_file() else hub.unreachable(hub.hf_endpoint() if cfg.get("hf_hub") else cfg.get("url", ""))
    with hub.offline_mode() if offline else nullcontext():
        if not p.is_file():
            try:
                path = Path(open_clip.download_pretrained(cfg))
            except Exception as exc:  # hub / url errors, OSError
                if offline:
                    raise hub.offline_error("CLIP", f"{arch}/{tag}", how, offline, exc) from exc
                raise cannot_fetch("CLIP", f"{arch}/{tag}", how, exc) from exc
            if not path.is_file():
                raise cannot_fetch("CLIP", f"{arch}/{tag}", how, FileNotFoundError(str(path)))
        try:
            # a tag goes through open_clip's own tag path (it sets e.g. quick_gelu for openai weights)
            model = open_clip.create_model(arch, pretrained=str(path) if p.is_file() else tag, device=device,
                                           require_pretrained=True)
        except PtgError:
            raise
        except Exception as exc:
            raise PtgError(f"cannot load CLIP weights {path} into {arch}: {exc}") from exc
    return model, path


@register_encoder(
    "clip",
    summary="OpenCLIP image tower: encode_image, L2-normalised (the authors' prior)",
    dim="model's embed dim (512 for ViT-B-32)",
    preprocessing="model's transform: short side -> resolution (bicubic), centre crop; CLIP mean/std",
    default_weights=f"--arch {DEFAULT_ARCH} --pretrained {DEFAULT_TAG} (open_clip download)",
)
def build_clip(spec: EncoderSpec) -> Encoder:
    tag = spec.pretrained or DEFAULT_TAG
    if not spec.random_init and not Path(tag).expanduser().exists() and not tag.startswith((".", "/", "~")):
        # offline with an empty cache: say so before importing torch and open_clip (seconds on a busy CPU)
        reason = hub.unreachable(hub.hf_endpoint())
        if reason and hub.nothing_cached(OPEN_CLIP_URL_CACHE):
            raise hub.offline_error("CLIP", f"{spec.arch or DEFAULT_ARCH}/{tag}",
                                    "--pretrained /path/to/open_clip_model.safetensors (a checkpoint file of the architecture)", reason)
    import open_clip
    import torch
    import torch.nn.functional as F

    arch = _resolve_arch(spec.arch or DEFAULT_ARCH)
    how = f"--pretrained /path/to/open_clip_model.safetensors (a checkpoint file of {arch})"
    if spec.random_init:
        model = open_clip.create_model(arch, pretrained=None, device=spec.device)
        fingerprint, source = random_fingerprint(spec.seed), "random init"
    else:
        model, path = _load_pretrained(open_clip, arch, tag, spec.device, how)
        fingerprint, source = sha256_file(path), str(path)
    model.eval()
    pp = _preprocess_of(model, spec.size)
    with torch.inference_mode():
        dim = int(model.encode_image(torch.zeros(1, 3, pp.size, pp.size, device=spec.device)).shape[-1])

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.normalize(model.encode_image(x).float(), dim=-1)  # [B, 3, S, S] -> [B, dim]

    return Encoder("clip", dim, pp, fingerprint, spec.random_init, source,
                   "encode_image (projected image embedding), L2-normalised", forward, model,
                   {"arch": arch, "pretrained": spec.pretrained or (None if spec.random_init else DEFAULT_TAG)})
