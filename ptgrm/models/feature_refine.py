"""The "-f" variant of the paper (Table 1, "+Ours-f"): R applied to F's deepest feature map.

Instead of refining F's output image, PTG-SVE and PTG-CSA (the same modules as in `ptgrm.py`)
refine the feature map at F's bottleneck, conditioned on the prior g:

    deep, state = F.encode(x);   f = Pin(deep);   fbar = C(A(f, g), g);   y = F.decode(deep + Pout(fbar), state)

R works at its own narrow width (1×1 projections ``Pin``/``Pout``), because F's bottleneck has
128-256 channels and location-wise kernels at that width would cost millions of parameters.
``Pout`` starts at zero, so the wrapped network starts exactly as F — a pre-trained F is not
disturbed before R has learned anything.

Registered for every baseline exposing ``encode``/``decode``: "unet-f", "nafnet-f", "restormer-f".
The config is the baseline's config plus the refinement fields below.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .nafnet import NAFNet, NAFNetConfig
from .ptgrm import ChannelSpatialAttention, PriorMapping, SpatialVaryingEnhancement
from .registry import register_model
from .restormer import Restormer, RestormerConfig
from .unet import UNet, UNetConfig


@dataclass
class FeatureRefineFields:
    """The refinement part of an "-f" config (same switch names as `PTGRMConfig`)."""

    prior_dims: tuple[int, ...] = (512,)  # one entry per prior; each gets its own T
    refine_width: int = 16  # channels R works at on the bottleneck (16 as R, keeping it under 1M params)
    refine_short_blocks: int = 1  # ResBlocks of the short-range branch
    refine_long_blocks: int = 2  # Restormer blocks of the long-range branch (the map is small already)
    refine_heads: int = 1  # attention heads of those blocks
    prior_hidden: int = 256  # hidden width of each prior mapping T
    prior_embed: int = 64  # output width of each prior mapping T
    kernel_size: int = 3  # location-wise kernel size
    use_sve: bool = True  # False: plain sum of the two branches
    use_channel_attn: bool = True  # False: channel attention from features only
    use_spatial_attn: bool = True  # False: location-wise kernels from features only
    use_pos_embed: bool = True  # False: no position embeddings Sm, Sc
    mask_on: str = "short"  # which branch M weights: "short" (paper Eq. 3) or "long" (release)

    def _check_refine(self) -> None:
        self.prior_dims = tuple(int(d) for d in self.prior_dims)
        if not self.prior_dims or any(d < 1 for d in self.prior_dims):
            raise PtgError(f"prior_dims={self.prior_dims} must list at least one positive dimension")
        if self.refine_width % self.refine_heads:
            raise PtgError(f"refine_width={self.refine_width} must be divisible by refine_heads={self.refine_heads}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise PtgError(f"kernel_size={self.kernel_size} must be odd")
        if self.mask_on not in ("short", "long"):
            raise PtgError(f"mask_on={self.mask_on!r} is not one of short, long")


class FeatureRefined(nn.Module):
    """A baseline F whose bottleneck is refined by PTG-SVE + PTG-CSA: ``forward(x, priors) -> [B,3,H,W]``."""

    base_cls: type[nn.Module]  # set by each registered subclass
    base_config_cls: type

    def __init__(self, config: FeatureRefineFields):
        super().__init__()
        self.config = config
        base_fields = [f.name for f in dataclasses.fields(self.base_config_cls)]
        self.base = self.base_cls(self.base_config_cls(**{k: getattr(config, k) for k in base_fields}))
        c, rw = self.base.deep_channels, config.refine_width
        self.proj_in = nn.Conv2d(c, rw, 1)
        self.t_m = PriorMapping(config.prior_dims, config.prior_hidden, config.prior_embed) if config.use_sve else None
        self.sve = SpatialVaryingEnhancement(
            rw,
            self.t_m.out_channels if self.t_m is not None else 0,
            "learned" if config.use_sve else "sum",
            config.use_pos_embed,
            config.mask_on,
            config.refine_short_blocks,
            config.refine_long_blocks,
            config.refine_heads,
            2.66,
        )
        ch = "guided" if config.use_channel_attn else "features"
        sp = "guided" if config.use_spatial_attn else "features"
        guided = config.use_channel_attn or config.use_spatial_attn
        self.t_c = PriorMapping(config.prior_dims, config.prior_hidden, config.prior_embed) if guided else None
        self.csa = ChannelSpatialAttention(
            rw, self.t_c.out_channels if self.t_c is not None else 0, ch, sp, config.use_pos_embed, config.kernel_size, 1 << 24
        )
        self.proj_out = nn.Conv2d(rw, c, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The prior mappings T, which ``priors.lr_mult`` scales."""
        return [p for m in (self.t_m, self.t_c) if m is not None for p in m.parameters()]

    def forward(self, x: Tensor, priors: Tensor | Sequence[Tensor]) -> Tensor:
        # x: [B, 3, H, W]; priors: [B, D] or n × [B, D_i] -> [B, 3, H, W]
        deep, state = self.base.encode(x)  # deep: [B, C, h, w]
        g = [priors] if isinstance(priors, Tensor) else list(priors)
        dims = self.config.prior_dims
        if len(g) != len(dims) or any(t.dim() != 2 or t.shape[1] != d for t, d in zip(g, dims)):
            raise PtgError(f"expected {len(dims)} prior(s) of dims {dims}; got shapes {[tuple(t.shape) for t in g]}")
        g = [t.to(deep.dtype) for t in g]
        f = self.proj_in(deep)  # [B, rw, h, w]
        fhat, _ = self.sve(f, self.t_m(g) if self.t_m is not None else None, None)
        fbar = self.csa(fhat, self.t_c(g) if self.t_c is not None else None)
        return self.base.decode(deep + self.proj_out(fbar), state)


def _register_variant(name: str, base_cls: type[nn.Module], base_config: type) -> type[FeatureRefined]:
    """Build the "-f" config dataclass (base fields + refinement fields) and register the wrapper."""

    def post_init(self: FeatureRefineFields) -> None:
        base_config.__post_init__(self)
        self._check_refine()

    config_cls = dataclasses.make_dataclass(
        f"{base_cls.__name__}FConfig", [], bases=(base_config, FeatureRefineFields), namespace={"__post_init__": post_init}
    )
    config_cls.__doc__ = f"{base_config.__name__} plus the fields of FeatureRefineFields."
    cls = type(f"{base_cls.__name__}F", (FeatureRefined,), {"base_cls": base_cls, "base_config_cls": base_config})
    cls.__doc__ = f"{base_cls.__name__} with PTG-SVE + PTG-CSA on its deepest feature map."
    register_model(name, config=config_cls, kind="feature-refiner", description=f"{base_cls.__name__} with R on its deepest feature map (-f)")(cls)
    return cls


UNetF = _register_variant("unet-f", UNet, UNetConfig)
NAFNetF = _register_variant("nafnet-f", NAFNet, NAFNetConfig)
RestormerF = _register_variant("restormer-f", Restormer, RestormerConfig)
