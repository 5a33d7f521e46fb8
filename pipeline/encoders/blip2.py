"""`blip2`: BLIP-2's frozen ViT + Q-Former (transformers), without its language model.

Prior: the Q-Former's last hidden states for the learned query tokens ([B, 32, 768] for the
released models) **mean-pooled over the query tokens** into one vector (768-d), not normalised.
Only ``vision_model.*``, ``qformer.*`` and ``query_tokens`` are read from the checkpoint, so the
multi-billion-parameter language model is never loaded.

Preprocessing follows the checkpoint's ``preprocessor_config.json`` when present (BLIP's
processor squashes the whole image to 224×224, bicubic, CLIP mean/std) and those defaults
otherwise. ``--pretrained`` is a hub id (default ``Salesforce/blip2-opt-2.7b``) or a local
directory written by ``save_pretrained``.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import PtgError
from . import hub
from .preprocess import Preprocess
from .registry import (Encoder, EncoderSpec, fingerprint_dir, random_fingerprint, register_encoder)

DEFAULT_REPO = "Salesforce/blip2-opt-2.7b"
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_KEEP = ("vision_model.", "qformer.", "query_tokens")
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def _preprocess(root: Path | None, image_size: int, size: int | None) -> Preprocess:
    cfg = {}
    if root is not None and (root / "preprocessor_config.json").is_file():
        cfg = json.loads((root / "preprocessor_config.json").read_text())
    side = cfg.get("size", {}).get("height", image_size) if isinstance(cfg.get("size"), dict) else cfg.get("size", image_size)
    return Preprocess(
        size=size or int(side),
        resize="squash",  # BLIP's processor resizes to a fixed square, aspect not kept
        interpolation=_PIL_RESAMPLE.get(cfg.get("resample", 3), "bicubic"),
        mean=tuple(cfg.get("image_mean", _CLIP_MEAN)),
        std=tuple(cfg.get("image_std", _CLIP_STD)),
    )


def _load_selected(root: Path) -> dict:
    """Tensors of the vision tower, Q-Former and query tokens from every weight file in `root`."""
    import torch

    state = {}
    files = sorted(root.glob("*.safetensors")) or sorted(root.glob("*.bin"))
    if not files:
        raise PtgError(f"no model.safetensors / pytorch_model.bin in {root}; pass a directory written by save_pretrained")
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(f, framework="pt") as sf:  # reads only the tensors asked for
                for k in sf.keys():
                    if k.startswith(_KEEP):
                        state[k] = sf.get_tensor(k)
        else:
            sd = torch.load(f, map_location="cpu", weights_only=True)
            state.update({k: v for k, v in sd.items() if k.startswith(_KEEP)})
    return state


class _Blip2Tower:
    """Vision model + Q-Former + query tokens as one module (built from a Blip2Config)."""

    @staticmethod
    def build(cfg):
        import torch
        from transformers import Blip2QFormerModel, Blip2VisionModel

        class Tower(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.vision_model = Blip2VisionModel(cfg.vision_config)
                self.qformer = Blip2QFormerModel(cfg.qformer_config)
                self.query_tokens = torch.nn.Parameter(torch.zeros(1, cfg.num_query_tokens, cfg.qformer_config.hidden_size))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                image = self.vision_model(pixel_values=x, return_dict=True).last_hidden_state  # [B, P+1, Dv]
                mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
                q = self.qformer(query_embeds=self.query_tokens.expand(x.shape[0], -1, -1),
                                 encoder_hidden_states=image, encoder_attention_mask=mask,
                                 return_dict=True).last_hidden_state  # [B, Nq, Dq]
                return q.mean(dim=1)  # [B, Dq]

        return Tower()


@register_encoder(
    "blip2",
    summary="BLIP-2 ViT + Q-Former (transformers); query-token outputs mean-pooled",
    dim="Q-Former hidden size (768 for the released models)",
    preprocessing="whole image squashed to 224x224 (bicubic); CLIP mean/std (from preprocessor_config.json)",
    default_weights=f"--pretrained {DEFAULT_REPO} (hub) or a save_pretrained directory",
)
def build_blip2(spec: EncoderSpec) -> Encoder:
    if spec.arch is not None:
        raise PtgError("the blip2 encoder takes its architecture from the checkpoint's config.json; drop --arch")
    how = "--pretrained /path/to/blip2-dir (a directory with config.json and model*.safetensors, from save_pretrained)"
    # weights first, torch and transformers after: offline, the error comes before seconds of imports
    root = hub.snapshot(spec.pretrained or DEFAULT_REPO, "BLIP-2", how,
                        allow=["*.json", "*.safetensors", "*.safetensors.index.json"])
    import torch
    from transformers import Blip2Config

    try:
        cfg = Blip2Config.from_pretrained(root)
    except Exception as exc:
        raise PtgError(f"{root} holds no BLIP-2 config.json ({exc}); {how}") from exc
    tower = _Blip2Tower.build(cfg)
    if spec.random_init:
        fingerprint, source = random_fingerprint(spec.seed), "random init"
    else:
        state = _load_selected(root)
        missing, unexpected = tower.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise PtgError(f"BLIP-2 weights in {root} do not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        fingerprint, source = fingerprint_dir(root), str(root)
    tower = tower.to(spec.device).eval()
    pp = _preprocess(root, cfg.vision_config.image_size, spec.size)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return tower(x).float()  # [B, 3, S, S] -> [B, Dq]

    return Encoder("blip2", cfg.qformer_config.hidden_size, pp, fingerprint, spec.random_init, source,
                   "Q-Former last hidden states of the query tokens, mean over tokens (no normalisation)",
                   forward, tower, {"num_query_tokens": cfg.num_query_tokens})
