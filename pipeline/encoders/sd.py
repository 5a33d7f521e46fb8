"""`sd`: Stable Diffusion (diffusers) — the VAE encoder, and optionally the UNet mid-block.

Prior, in this order (all per-channel spatial means unless said):

1. the VAE encoder's mid-block output (``vae.encoder.mid_block``; 512 channels in SD 1.x/2.x),
2. the posterior mean ``mu`` of the latent (4 channels),
3. the spatial standard deviation of ``mu`` per channel (4),
4. the posterior standard deviation ``exp(logvar / 2)`` per channel (4),
5. only with ``--timestep T``: the UNet mid-block output (1280 channels in SD 1.x) for the latent
   ``sqrt(a_T)·mu·scaling_factor + sqrt(1 - a_T)·eps``, with ``a_T`` the cumulative alpha of the
   repo's scheduler (SD's scaled-linear DDPM betas if it has none), ``eps`` drawn per image from a
   generator seeded 0 (so the prior is deterministic and batch-independent), and an all-zero text
   conditioning of one token (no text encoder is loaded).

Preprocessing: short side to 512 (bicubic), centre crop 512, values mapped to [-1, 1]
(``--size`` lowers the resolution for CPUs). ``--pretrained`` is a hub id (default
``stable-diffusion-v1-5/stable-diffusion-v1-5``) or a local directory laid out like an SD repo
(``vae/``, and ``unet/`` + optional ``scheduler/`` when ``--timestep`` is used).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.errors import PtgError
from . import hub
from .preprocess import Preprocess
from .registry import Encoder, EncoderSpec, fingerprint_dir, random_fingerprint, register_encoder

DEFAULT_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_SIZE = 512
HOW = "--pretrained /path/to/sd-dir (a folder with vae/ [and unet/] written by save_pretrained)"


def _pooled_hook(store: dict, name: str):
    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        store[name] = out.float().mean(dim=(2, 3))  # [B, C, h, w] -> [B, C]

    return hook


def _load(cls, root: Path, sub: str, random_init: bool):
    if not (root / sub / "config.json").is_file():
        raise PtgError(f"{root} has no {sub}/config.json; {HOW}")
    try:
        if random_init:
            return cls.from_config(cls.load_config(root / sub))
        return cls.from_pretrained(root, subfolder=sub)
    except PtgError:
        raise
    except Exception as exc:
        raise PtgError(f"cannot load {sub}/ from {root}: {exc}") from exc


def _load_unet(root: Path, spec: EncoderSpec, feats: dict) -> tuple[Any, float, dict[str, Any]]:
    """The UNet whose mid-block is pooled at ``spec.timestep``, that timestep's alpha-bar, and its details."""
    import diffusers
    from diffusers import DDPMScheduler

    cfg_path = root / "unet" / "config.json"
    cls_name = json.loads(cfg_path.read_text()).get("_class_name", "UNet2DConditionModel") if cfg_path.is_file() else ""
    unet_cls = getattr(diffusers, cls_name, None) if cls_name in ("UNet2DConditionModel", "UNet2DModel") else None
    if unet_cls is None:
        raise PtgError(f"{root}/unet holds a {cls_name or 'missing'} model; the sd encoder supports UNet2DConditionModel and UNet2DModel")
    unet = _load(unet_cls, root, "unet", spec.random_init).to(spec.device).eval()
    unet.mid_block.register_forward_hook(_pooled_hook(feats, "unet_mid"))
    if (root / "scheduler" / "scheduler_config.json").is_file():
        sched = DDPMScheduler.from_pretrained(root, subfolder="scheduler")
    else:  # Stable Diffusion's training schedule
        sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    if not 0 <= spec.timestep < sched.config.num_train_timesteps:
        raise PtgError(f"--timestep {spec.timestep} is outside 0..{sched.config.num_train_timesteps - 1}")
    alpha_bar = float(sched.alphas_cumprod[spec.timestep])
    details = {"unet_mid_channels": unet.config.block_out_channels[-1], "alpha_bar": alpha_bar, "unet_class": cls_name}
    return unet, alpha_bar, details


@register_encoder(
    "sd",
    summary="Stable Diffusion VAE encoder (mid-block features + latent statistics), optional UNet mid-block at --timestep",
    dim="VAE mid channels + 12 (524 for SD 1.x), + UNet mid channels with --timestep",
    preprocessing=f"short side -> {DEFAULT_SIZE} (bicubic), centre crop {DEFAULT_SIZE}; values in [-1, 1]",
    default_weights=f"--pretrained {DEFAULT_REPO} (hub) or a local SD directory",
)
def build_sd(spec: EncoderSpec) -> Encoder:
    if spec.arch is not None:
        raise PtgError("the sd encoder takes its architecture from the repo's config files; drop --arch")
    use_unet = spec.timestep is not None
    allow = ["model_index.json", "vae/*"] + (["unet/*", "scheduler/*"] if use_unet else [])
    # weights first, torch and diffusers after: offline, the error comes before seconds of imports
    root = hub.snapshot(spec.pretrained or DEFAULT_REPO, "Stable Diffusion", HOW, allow=allow)
    import diffusers
    import torch
    from diffusers import AutoencoderKL

    vae = _load(AutoencoderKL, root, "vae", spec.random_init).to(spec.device).eval()
    feats: dict = {}
    vae.encoder.mid_block.register_forward_hook(_pooled_hook(feats, "vae_mid"))
    vae_mid = vae.config.block_out_channels[-1]
    latent_ch = vae.config.latent_channels
    dim = vae_mid + 3 * latent_ch
    unet = None
    modules = torch.nn.ModuleDict({"vae": vae})
    details: dict = {"vae_mid_channels": vae_mid, "latent_channels": latent_ch, "timestep": spec.timestep}
    if use_unet:
        unet, alpha_bar, unet_details = _load_unet(root, spec, feats)
        modules["unet"] = unet
        dim += unet_details["unet_mid_channels"]
        details.update(unet_details)
    scaling = float(getattr(vae.config, "scaling_factor", 0.18215))
    size = spec.size or DEFAULT_SIZE
    pp = Preprocess(size=size, resize="short_side_center_crop", resize_short=size, interpolation="bicubic",
                    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    if spec.random_init:
        fingerprint, source = random_fingerprint(spec.seed), "random init"
    else:
        fingerprint = fingerprint_dir(root, ("vae", "unet") if use_unet else ("vae",))
        source = str(root)

    def forward(x: torch.Tensor) -> torch.Tensor:
        post = vae.encode(x).latent_dist  # mean, std: [B, 4, S/8, S/8]
        mu = post.mean.float()
        parts = [feats.pop("vae_mid"), mu.mean(dim=(2, 3)), mu.std(dim=(2, 3)), post.std.float().mean(dim=(2, 3))]
        if unet is not None:
            z = mu * scaling
            # one generator per image, seeded 0: the same image gets the same noise in any batch
            eps = torch.stack([torch.randn(z.shape[1:], generator=torch.Generator().manual_seed(0)) for _ in range(z.shape[0])]).to(z)
            noisy = alpha_bar**0.5 * z + (1 - alpha_bar) ** 0.5 * eps
            t = torch.full((z.shape[0],), spec.timestep, device=z.device, dtype=torch.long)
            if isinstance(unet, diffusers.UNet2DConditionModel):
                ctx = torch.zeros(z.shape[0], 1, unet.config.cross_attention_dim, device=z.device, dtype=z.dtype)
                unet(noisy, t, encoder_hidden_states=ctx)
            else:
                unet(noisy, t)
            parts.append(feats.pop("unet_mid"))
        return torch.cat(parts, dim=-1)  # [B, dim]

    pooling = "VAE encoder mid-block channel means, latent mu channel means and spatial stds, posterior std channel means"
    if use_unet:
        pooling += f", UNet mid-block channel means at timestep {spec.timestep}"
    return Encoder("sd", dim, pp, fingerprint, spec.random_init, source, pooling, forward, modules, details)
