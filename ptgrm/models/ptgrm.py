"""PTG-RM, the Pre-Train-Guided Refinement Module R.

Xu, Kong, Hu, Liu, Bao. "Boosting Image Restoration via Priors from Pre-trained Models",
CVPR 2024. R refines the output of a restoration network F with a 1-D prior g (an off-the-shelf
feature of a frozen pre-trained model) in a latent space at 1/4 resolution:

    f    = Re(Ihat ⊕ Id)                                  encoder
    fhat = A(f, g)     PTG-SVE:  M = Rm(f ⊕ Tm(g) ⊕ Sm),   fhat = M·Rs(f) + (1−M)·Rl(f)   (Eq. 2, 3)
    fbar = C(fhat, g)  PTG-CSA:  Mc = Rc(O(fhat) ⊕ Tc(g));  Cp = Rp(fhat, Tc(g), Sc);
                                 Ms = Ro(fhat ∗ Cp);  fbar = Rf(fhat·Mc ⊕ fhat·Ms)           (Eq. 4-7)
    [Im, Ir] = Rd(fbar),  Ibar = Id + (Ihat − Id)·Im + Ir                                  (Eq. 1)

The default configuration follows the authors' release (width 16 at 1/4 resolution, 4 Restormer
blocks with one head, one ResBlock, prior mapping 512→256→64 without bias, 3×3 location-wise
kernels): about 0.67M parameters at prior dim 512. `PTGRMConfig` carries every ablation and
variant of the paper's Table 3 as a switch; see its field comments.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .layers import ResBlock, RestormerBlock, coordinate_grid, crop_to, pad_to_multiple, snr_map
from .lwconv import location_wise_conv
from .registry import register_model

_SLOPE = 0.2  # LeakyReLU slope used throughout R


@dataclass
class PTGRMConfig:
    """Architecture of R and every ablation switch of the paper.

    Derived behaviour (so that a saved config always rebuilds the same network):
    ``large=True`` means 4× width, plain-sum SVE, attention from features only, no priors.
    ``prior_mode`` other than "ptg" also turns SVE into a plain sum (unless ``mask_source="snr"``)
    and the attentions into feature-only ones: the priors then enter only where the mode says.
    """

    prior_dims: tuple[int, ...] = (512,)  # one entry per prior (CLIP ViT-B/32: 512); each gets its own T
    width: int = 16  # channels c of the latent features (authors: 16)
    large: bool = False  # "Large R" of Table 3: 4× width, no SVE/CSA, no priors
    downsample: int = 2  # stride-2 convs in the encoder: features at 1/2**downsample (authors: 1/4)
    short_blocks: int = 1  # ResBlocks in the short-range branch Rs (authors: 1)
    long_blocks: int = 4  # Restormer blocks in the long-range branch Rl (authors: 4)
    long_heads: int = 1  # attention heads of those blocks (authors: 1)
    ffn_expansion: float = 2.66  # GDFN hidden expansion (Restormer's value)
    prior_hidden: int = 256  # hidden width of each prior mapping T (authors: 512→256→64)
    prior_embed: int = 64  # output width of each prior mapping T
    kernel_size: int = 3  # kh = kw of the location-wise kernels Cp (authors: 3)
    use_sve: bool = True  # False: fhat = Rs(f) + Rl(f), no M, no Tm, no Sm ("w/o SP")
    use_channel_attn: bool = True  # False: Mc from the pooled features only, no Tc(g) ("w/o CA")
    use_spatial_attn: bool = True  # False: Cp from the features only, no Tc(g), no Sc ("w/o SA")
    unguided_attn: Literal["features", "off"] = "features"  # an attention without the prior: kept on features (paper) or removed
    use_pos_embed: bool = True  # False: drop Sm and Sc ("w/o Position Embedding for Priors")
    mask_source: Literal["learned", "snr"] = "learned"  # "snr": M is the SNR map of Id (SNR-aware), no Rm/Tm/Sm
    mask_on: Literal["short", "long"] = "short"  # which branch M weights: paper Eq. 3 "short"; the release "long"
    prior_mode: Literal["ptg", "concat1d", "concat2d", "none"] = "ptg"  # how priors enter R (Table 3 "Con.")
    concat2d_size: int = 16  # prior_mode="concat2d": each prior becomes a learned size×size map
    output_form: Literal["paper", "official"] = "paper"  # Eq. 1, or the release's clamp(Ihat) + Ir
    zero_init_output: bool = True  # last decoder conv starts at zero, so R starts as the identity on Ihat
    lwc_chunk_elements: int = 1 << 24  # bound on unfolded elements per chunk of the location-wise conv

    def __post_init__(self) -> None:
        self.prior_dims = tuple(int(d) for d in self.prior_dims)
        for name in ("width", "short_blocks", "long_heads", "prior_hidden", "prior_embed", "concat2d_size", "lwc_chunk_elements"):
            if getattr(self, name) < 1:
                raise PtgError(f"PTGRMConfig.{name}={getattr(self, name)} must be >= 1")
        for name in ("downsample", "long_blocks"):
            if getattr(self, name) < 0:
                raise PtgError(f"PTGRMConfig.{name}={getattr(self, name)} must be >= 0")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise PtgError(f"PTGRMConfig.kernel_size={self.kernel_size} must be an odd number >= 1")
        choices = {
            "unguided_attn": ("features", "off"),
            "mask_source": ("learned", "snr"),
            "mask_on": ("short", "long"),
            "prior_mode": ("ptg", "concat1d", "concat2d", "none"),
            "output_form": ("paper", "official"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise PtgError(f"PTGRMConfig.{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
        if any(d < 1 for d in self.prior_dims):
            raise PtgError(f"PTGRMConfig.prior_dims={self.prior_dims} must all be >= 1")
        if self.uses_priors and not self.prior_dims:
            raise PtgError(
                f"prior_mode={self.prior_mode!r} needs prior_dims (one dimension per prior, e.g. (512,)); "
                "use prior_mode='none' for R without priors"
            )
        if (self.width * (4 if self.large else 1)) % self.long_heads:
            raise PtgError(f"PTGRMConfig.width={self.width} must be divisible by long_heads={self.long_heads}")

    @property
    def uses_priors(self) -> bool:
        """Whether forward reads the priors at all."""
        return not self.large and self.prior_mode != "none"

    @property
    def effective_width(self) -> int:
        return self.width * 4 if self.large else self.width

    @property
    def sve_mask(self) -> Literal["learned", "snr", "sum"]:
        """How PTG-SVE fuses the two branches: learned M, the SNR map, or a plain sum."""
        if self.large or not self.use_sve:
            return "sum"
        if self.mask_source == "snr":
            return "snr"
        return "learned" if self.prior_mode == "ptg" else "sum"

    def attention_mode(self, which: Literal["channel", "spatial"]) -> Literal["guided", "features", "off"]:
        """Whether one attention of PTG-CSA sees the prior, only the features, or is removed."""
        use = self.use_channel_attn if which == "channel" else self.use_spatial_attn
        if use and not self.large and self.prior_mode == "ptg":
            return "guided"
        return self.unguided_attn


class RefineOutput(NamedTuple):
    """What R returns."""

    out: Tensor  # the refined image Ibar, [B, 3, H, W]
    im: Tensor | None  # correction mask Im, [B, 3, H, W] (None for output_form="official")
    ir: Tensor  # residual refinement Ir, [B, 3, H, W]
    mask: Tensor | None  # range score map M at feature resolution, [B, 1, h, w] (None without SVE mask)


class PositionEmbedding(nn.Module):
    """P(S): the normalised coordinate grid mapped to c channels (Conv3×3 → LeakyReLU → Conv1×1)."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2, channels, 3, padding=1), nn.LeakyReLU(_SLOPE), nn.Conv2d(channels, channels, 1))

    def forward(self, like: Tensor) -> Tensor:
        # like: [B, C, h, w] (only its shape, device and dtype are used) -> [B, channels, h, w]
        b, _, h, w = like.shape
        grid = coordinate_grid(b, h, w, like.device, like.dtype)
        return self.net(grid)


class PriorMapping(nn.Module):
    """T: maps each 1-D prior with its own bias-free MLP and concatenates the results.

    Bias-free as in the release: a zero prior maps to zero, so R's behaviour without a prior
    signal is carried by the image features alone.
    """

    def __init__(self, prior_dims: Sequence[int], hidden: int, out: int):
        super().__init__()
        self.maps = nn.ModuleList(
            nn.Sequential(nn.Linear(d, hidden, bias=False), nn.LeakyReLU(_SLOPE), nn.Linear(hidden, out, bias=False))
            for d in prior_dims
        )
        self.out_channels = out * len(self.maps)

    def forward(self, priors: Sequence[Tensor]) -> Tensor:
        # priors: n × [B, D_i] -> [B, n*out]
        return torch.cat([m(g) for m, g in zip(self.maps, priors)], dim=1)


def _broadcast(v: Tensor, like: Tensor) -> Tensor:
    """A ``[B, E]`` vector as a constant ``[B, E, h, w]`` map."""
    return v[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


class SpatialVaryingEnhancement(nn.Module):
    """PTG-SVE (Eq. 2, 3): short- and long-range branches fused by a per-location range map M."""

    def __init__(
        self,
        width: int,
        prior_channels: int,
        mask: Literal["learned", "snr", "sum"],
        use_pos_embed: bool,
        mask_on: Literal["short", "long"],
        short_blocks: int,
        long_blocks: int,
        heads: int,
        expansion: float,
    ):
        super().__init__()
        self.mask_mode = mask
        self.mask_on = mask_on
        self.short = nn.Sequential(*[ResBlock(width) for _ in range(short_blocks)])  # Rs
        self.long = nn.Sequential(*[RestormerBlock(width, heads, expansion) for _ in range(long_blocks)])  # Rl
        self.pos_embed = PositionEmbedding(width) if mask == "learned" and use_pos_embed else None  # P for Sm
        if mask == "learned":
            in_ch = width + prior_channels + (width if self.pos_embed is not None else 0)
            self.range_head = nn.Sequential(  # Rm
                nn.Conv2d(in_ch, width, 3, padding=1), nn.LeakyReLU(_SLOPE), nn.Conv2d(width, 1, 3, padding=1), nn.Sigmoid()
            )
        else:
            self.range_head = None

    def forward(self, f: Tensor, tm: Tensor | None, snr: Tensor | None) -> tuple[Tensor, Tensor | None]:
        # f: [B, c, h, w]; tm: [B, E] mapped prior or None; snr: [B, 1, h, w] or None
        fs = self.short(f)
        fl = self.long(f)
        if self.mask_mode == "sum":
            return fs + fl, None
        if self.mask_mode == "snr":
            m = snr
        else:
            parts = [f]
            if tm is not None:
                parts.append(_broadcast(tm, f))
            if self.pos_embed is not None:
                parts.append(self.pos_embed(f))
            m = self.range_head(torch.cat(parts, dim=1))  # [B, 1, h, w] in [0, 1]
        if self.mask_on == "short":
            return m * fs + (1 - m) * fl, m
        return m * fl + (1 - m) * fs, m


class ChannelSpatialAttention(nn.Module):
    """PTG-CSA (Eq. 4-7): prior-conditioned channel attention and location-wise spatial attention."""

    def __init__(
        self,
        width: int,
        prior_channels: int,
        channel: Literal["guided", "features", "off"],
        spatial: Literal["guided", "features", "off"],
        use_pos_embed: bool,
        kernel_size: int,
        chunk_elements: int,
    ):
        super().__init__()
        self.channel_mode = channel
        self.spatial_mode = spatial
        self.kernel_size = kernel_size
        self.chunk_elements = chunk_elements
        if channel != "off":
            in_ch = width + (prior_channels if channel == "guided" else 0)
            self.channel = nn.Sequential(  # Rc
                nn.Linear(in_ch, width), nn.LeakyReLU(_SLOPE), nn.Linear(width, width), nn.Sigmoid()
            )
        else:
            self.channel = None
        self.pos_embed = PositionEmbedding(width) if spatial == "guided" and use_pos_embed else None  # P for Sc
        if spatial != "off":
            k2c = kernel_size * kernel_size * width
            in_ch = width
            if spatial == "guided":
                in_ch += prior_channels + (width if self.pos_embed is not None else 0)
            self.kernel_head = nn.Sequential(  # Rp
                nn.Conv2d(in_ch, k2c, 3, padding=1), nn.LeakyReLU(_SLOPE), nn.Conv2d(k2c, k2c, 3, padding=1)
            )
            self.out_proj = nn.Sequential(nn.Conv2d(width, 1, 3, padding=1), nn.Sigmoid())  # Ro: c → 1
        else:
            self.kernel_head = None
            self.out_proj = None
        self.fuse = nn.Conv2d(2 * width, width, 1)  # Rf

    def forward(self, fhat: Tensor, tc: Tensor | None) -> Tensor:
        # fhat: [B, c, h, w]; tc: [B, E] mapped prior (guided modes) or None -> fbar [B, c, h, w]
        if self.channel is not None:
            pooled = fhat.mean(dim=(2, 3))  # O(fhat): [B, c]
            if self.channel_mode == "guided":
                pooled = torch.cat([pooled, tc], dim=1)
            mc = self.channel(pooled)  # [B, c]
            f_c = fhat * mc[:, :, None, None]
        else:
            f_c = fhat
        if self.kernel_head is not None:
            parts = [fhat]
            if self.spatial_mode == "guided":
                parts.append(_broadcast(tc, fhat))
                if self.pos_embed is not None:
                    parts.append(self.pos_embed(fhat))
            cp = self.kernel_head(torch.cat(parts, dim=1))  # Cp: [B, k*k*c, h, w]
            ms_hat = location_wise_conv(fhat, cp, self.kernel_size, self.chunk_elements)  # [B, c, h, w]
            ms = self.out_proj(ms_hat)  # [B, 1, h, w]
            f_s = fhat * ms
        else:
            f_s = fhat
        return fhat + self.fuse(torch.cat([f_c, f_s], dim=1))


class PriorConcat(nn.Module):
    """Table 3 "Con." baselines: the priors concatenated to the features as 1-D vectors or 2-D maps.

    "concat1d": T(g) broadcast over h×w; "concat2d": each prior mapped to a learned size×size map,
    resized to h×w. Either is concatenated to f and merged back to c channels by a 1×1 conv.
    """

    def __init__(self, width: int, prior_dims: Sequence[int], mode: str, hidden: int, embed: int, size: int):
        super().__init__()
        self.mode = mode
        self.size = size
        if mode == "concat1d":
            self.mapping = PriorMapping(prior_dims, hidden, embed)
            extra = self.mapping.out_channels
            self.to_maps = None
        else:
            self.mapping = PriorMapping(prior_dims, hidden, size * size)
            self.to_maps = nn.Conv2d(len(prior_dims), embed, 3, padding=1)
            extra = embed
        self.merge = nn.Conv2d(width + extra, width, 1)

    def forward(self, f: Tensor, priors: Sequence[Tensor]) -> Tensor:
        # f: [B, c, h, w] -> [B, c, h, w]
        if self.mode == "concat1d":
            extra = _broadcast(self.mapping(priors), f)
        else:
            b = f.shape[0]
            maps = self.mapping(priors).view(b, -1, self.size, self.size)  # [B, n, s, s]
            maps = F.interpolate(maps, size=f.shape[-2:], mode="bilinear", align_corners=False)
            extra = self.to_maps(maps)
        return f + self.merge(torch.cat([f, extra], dim=1))


class _InstanceNorm32(nn.Module):
    """Affine InstanceNorm computed in float32 whatever the model dtype (half variance underflows)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, C, H, W] -> [B, C, H, W]
        y = F.instance_norm(x.float(), weight=self.weight.float(), bias=self.bias.float(), eps=self.eps)
        return y.to(x.dtype)


@register_model(
    "ptgrm",
    config=PTGRMConfig,
    kind="refiner",
    description="PTG-RM refinement module R (CVPR 2024): PTG-SVE + PTG-CSA at 1/4 resolution",
)
class PTGRM(nn.Module):
    """The refinement module R: ``R(Ihat, Id, g) -> Ibar`` (see the module docstring)."""

    def __init__(self, config: PTGRMConfig | None = None):
        super().__init__()
        cfg = config if config is not None else PTGRMConfig()
        self.config = cfg
        c = cfg.effective_width
        self.multiple = 2**cfg.downsample
        enc: list[nn.Module] = [nn.Conv2d(6, c, 3, padding=1), _InstanceNorm32(c), nn.LeakyReLU(_SLOPE)]
        for _ in range(cfg.downsample):
            enc += [nn.Conv2d(c, c, 3, stride=2, padding=1), nn.LeakyReLU(_SLOPE)]
        self.encoder = nn.Sequential(*enc)  # Re

        self.prior_concat = (
            PriorConcat(c, cfg.prior_dims, cfg.prior_mode, cfg.prior_hidden, cfg.prior_embed, cfg.concat2d_size)
            if cfg.uses_priors and cfg.prior_mode in ("concat1d", "concat2d")
            else None
        )
        sve_mask = cfg.sve_mask
        self.t_m = PriorMapping(cfg.prior_dims, cfg.prior_hidden, cfg.prior_embed) if sve_mask == "learned" else None
        self.sve = SpatialVaryingEnhancement(
            c,
            self.t_m.out_channels if self.t_m is not None else 0,
            sve_mask,
            cfg.use_pos_embed,
            cfg.mask_on,
            cfg.short_blocks,
            cfg.long_blocks,
            cfg.long_heads,
            cfg.ffn_expansion,
        )
        ch_mode, sp_mode = cfg.attention_mode("channel"), cfg.attention_mode("spatial")
        guided = "guided" in (ch_mode, sp_mode)
        self.t_c = PriorMapping(cfg.prior_dims, cfg.prior_hidden, cfg.prior_embed) if guided else None
        self.csa = ChannelSpatialAttention(
            c,
            self.t_c.out_channels if self.t_c is not None else 0,
            ch_mode,
            sp_mode,
            cfg.use_pos_embed,
            cfg.kernel_size,
            cfg.lwc_chunk_elements,
        )
        dec: list[nn.Module] = []
        for _ in range(cfg.downsample):
            dec += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(_SLOPE)]
        out_ch = 6 if cfg.output_form == "paper" else 3
        dec.append(nn.Conv2d(c, out_ch, 3, padding=1))
        if cfg.zero_init_output:
            # Im - 1 = 0 and Ir = 0 at initialisation: an untrained R returns Ihat exactly, so joint
            # training starts from F and refine mode never starts by making a pre-trained F worse.
            nn.init.zeros_(dec[-1].weight)
            nn.init.zeros_(dec[-1].bias)
        self.decoder = nn.Sequential(*dec)  # Rd

    def prior_parameters(self) -> list[nn.Parameter]:
        """R's prior mappings T (and the concat ablation's), which ``priors.lr_mult`` scales."""
        return [p for m in (self.t_m, self.t_c, self.prior_concat) if m is not None for p in m.parameters()]

    def forward(self, ihat: Tensor, x: Tensor, priors: Tensor | Sequence[Tensor] | None = None) -> RefineOutput:
        """Refine ``ihat = F(x)``.

        Args:
            ihat: ``[B, 3, H, W]`` output of F.
            x: ``[B, 3, H, W]`` degraded input Id.
            priors: ``[B, D]`` or a sequence of ``[B, D_i]``, one per entry of ``prior_dims``;
                ignored (may be None) when the configuration uses no priors.

        Returns:
            `RefineOutput` with the refined image ``out`` ``[B, 3, H, W]``.
        """
        if ihat.shape != x.shape or x.dim() != 4 or x.shape[1] != 3:
            raise PtgError(f"PTG-RM expects ihat and x of the same shape [B, 3, H, W]; got {tuple(ihat.shape)} and {tuple(x.shape)}")
        cfg = self.config
        inp, size = pad_to_multiple(torch.cat([ihat, x], dim=1), self.multiple)
        f = self.encoder(inp)  # [B, c, h, w], h = ceil(H / 2**downsample)
        g = self._check_priors(priors, f) if cfg.uses_priors else []
        if self.prior_concat is not None:
            f = self.prior_concat(f, g)
        snr = None
        if self.sve.mask_mode == "snr":
            # The SNR map of Id, averaged down to the feature grid (area pooling keeps it in [0, 1]).
            snr = F.adaptive_avg_pool2d(snr_map(inp[:, 3:6]), f.shape[-2:])
        tm = self.t_m(g) if self.t_m is not None else None
        fhat, mask = self.sve(f, tm, snr)  # [B, c, h, w]
        tc = self.t_c(g) if self.t_c is not None else None
        fbar = self.csa(fhat, tc)  # [B, c, h, w]
        y = crop_to(self.decoder(fbar), size)  # [B, 6 or 3, H, W]
        if cfg.output_form == "paper":
            # The decoder predicts Im - 1: R starts at Ibar = Ihat + Ir (Ihat itself with the zero
            # initialisation), i.e. it trusts F, rather than starting near the degraded input.
            im = 1 + y[:, :3]
            ir = y[:, 3:]
            return RefineOutput(combine_paper(ihat, x, im, ir), im, ir, mask)
        ir = y
        return RefineOutput(ihat.clamp(0, 1) + ir, None, ir, mask)

    def _check_priors(self, priors: Tensor | Sequence[Tensor] | None, like: Tensor) -> list[Tensor]:
        dims = self.config.prior_dims
        if priors is None:
            raise PtgError(f"PTG-RM (prior_mode={self.config.prior_mode!r}) needs priors of dims {dims}; got None")
        g = [priors] if isinstance(priors, Tensor) else list(priors)
        if len(g) != len(dims):
            raise PtgError(f"PTG-RM was built for {len(dims)} prior(s) of dims {dims} but got {len(g)}")
        for i, (t, d) in enumerate(zip(g, dims)):
            if t.dim() != 2 or t.shape[1] != d or t.shape[0] != like.shape[0]:
                raise PtgError(
                    f"prior {i} has shape {tuple(t.shape)}; expected [{like.shape[0]}, {d}] "
                    "(check the priors store matches the model's prior_dims)"
                )
        return [t.to(like.dtype) for t in g]


def combine_paper(ihat: Tensor, x: Tensor, im: Tensor, ir: Tensor) -> Tensor:
    """Eq. 1: ``Ibar = Id + (Ihat − Id)·Im + Ir``."""
    return x + (ihat - x) * im + ir


# "Large R" is the same class with large=True; a second name so that it can be trained by name.
register_model(
    "ptgrm-large",
    config=PTGRMConfig,
    kind="refiner",
    defaults={"large": True},
    description="'Large R' ablation: PTG-RM at 4x width without SVE/CSA and without priors",
)(PTGRM)
