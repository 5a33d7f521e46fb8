"""PTG-RM as the authors released it: layer-exact to ``refinement2`` of their SID model.

`ptgrm` (ptgrm.py) follows the paper's equations and is ptg's default R. This file is the other
form: the refinement module of the authors' release (xiaogang00/pretrain_model_boost_restoration,
``models/archs/low_light_transformer648_final.py``, class ``refinement2`` as built by
``low_light_transformer2648_final``), written from its description, so that a checkpoint from the
authors' training code loads as is and gives the same output (max |Δ| <= 1e-5, float32, CPU;
README "PTG-RM: the paper's form and the release's"). Where the release departs from the paper,
this file follows the release:

- encoder ``r1`` → InstanceNorm ``r1norm`` → LeakyReLU → ``r2`` (stride 2) → InstanceNorm
  ``r2norm`` → ``r22`` (stride 2): no activation after the stride-2 convs, no biases;
- LeakyReLU slope 0.1 everywhere; ReLU inside the short branch's residual block;
- no biases in the prior mappings, position embeddings, range head, channel MLP, kernel head,
  Ro, Rf and the decoder convs (only the residual block and the last two convs have them);
- Ro is LeakyReLU → conv c→1 → sigmoid; LayerNorm eps 1e-5; coordinate channels [row, column];
- M weights the long branch (``fhat = M·Rl(f) + (1−M)·Rs(f)``);
- Eq. 7 as ``fhat + Rf(fhat·Mc ⊕ fhat·Ms)``; the decoder ends PixelShuffle → ``conv_last2``
  3×3 → LeakyReLU → ``conv_last3``; the output is ``clamp(Ihat, 0, 1) + Ir`` (no Im).

Submodules carry the release's names; the Restormer blocks are ptg's shared `RestormerBlock`,
whose parameter names are mapped to and from the release's on save and load. One difference
that cannot change a release-sized input: ptg pads H and W up to a multiple of 4 (replicate)
where the release requires them to divide by 4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .layers import ResBlock, RestormerBlock, crop_to, pad_to_multiple
from .lwconv import location_wise_conv
from .ptgrm import RefineOutput, _InstanceNorm32
from .registry import register_model

_SLOPE = 0.1  # the release's LeakyReLU slope, used everywhere
_LN_EPS = 1e-5  # the release's LayerNorm eps (ptgrm: 1e-6)

# Parameter names inside one Restormer block: the release's -> ptg's `RestormerBlock`.
_BLOCK_NAMES = {
    "norm1.body": "norm1",
    "norm2.body": "norm2",
    "attn.qkv_dwconv": "attn.qkv_dw",
    "attn.project_out": "attn.proj",
    "ffn.project_in": "ffn.proj_in",
    "ffn.dwconv": "ffn.dw",
    "ffn.project_out": "ffn.proj_out",
}


@dataclass
class PTGRMReleaseConfig:
    """Widths of the released R; every default is the release's SID configuration."""

    prior_dims: tuple[int, ...] = (512,)  # the release takes one prior (CLIP, 512); several are concatenated into one
    width: int = 16  # nf of the release
    long_blocks: int = 4  # Restormer blocks of the long branch (release: num_blocks[0] = 4)
    long_heads: int = 1  # their attention heads (release: heads[0] = 1)
    ffn_expansion: float = 2.66  # GDFN expansion (release: 2.66)
    prior_hidden: int = 256  # hidden width of each prior mapping (release: 512→256→4·nf)
    prior_embed: int = 64  # output width of each prior mapping (release: 4·nf)
    kernel_size: int = 3  # location-wise kernel side (release: kh = 3)
    zero_init_output: bool = True  # ptg's choice, not the release's: conv_last3 starts at zero, so R starts as clamp(Ihat)
    lwc_chunk_elements: int = 1 << 24  # bound on unfolded elements per chunk of the location-wise conv

    def __post_init__(self) -> None:
        self.prior_dims = tuple(int(d) for d in self.prior_dims)
        if not self.prior_dims or any(d < 1 for d in self.prior_dims):
            raise PtgError(f"PTGRMReleaseConfig.prior_dims={self.prior_dims} must be one or more dims >= 1 (e.g. (512,))")
        for name in ("width", "long_heads", "prior_hidden", "prior_embed", "lwc_chunk_elements"):
            if getattr(self, name) < 1:
                raise PtgError(f"PTGRMReleaseConfig.{name}={getattr(self, name)} must be >= 1")
        if self.long_blocks < 0:
            raise PtgError(f"PTGRMReleaseConfig.long_blocks={self.long_blocks} must be >= 0")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise PtgError(f"PTGRMReleaseConfig.kernel_size={self.kernel_size} must be an odd number >= 1")
        if self.width % self.long_heads:
            raise PtgError(f"PTGRMReleaseConfig.width={self.width} must be divisible by long_heads={self.long_heads}")

    @property
    def uses_priors(self) -> bool:
        """The released R always reads its prior."""
        return True


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, bias=bias)


def release_grid(b: int, h: int, w: int, like: Tensor) -> Tensor:
    """The release's coordinate map: ``[B, 2, h, w]``, channel 0 the row, channel 1 the column.

    ``linspace(-1, 1, n)`` as the release computes it (a single row or column sits at -1).
    """
    rows = torch.linspace(-1.0, 1.0, h, device=like.device, dtype=like.dtype)
    cols = torch.linspace(-1.0, 1.0, w, device=like.device, dtype=like.dtype)
    gr, gc = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([gr, gc], dim=0).unsqueeze(0).expand(b, -1, -1, -1)


def _rename_block_keys(state: dict[str, Any], prefix: str, table: dict[str, str]) -> None:
    """Rename, in place and in order, the keys under ``prefix`` whose module path is in ``table``."""
    items = list(state.items())
    state.clear()
    for key, value in items:
        if key.startswith(prefix):
            rest = key[len(prefix):]
            head, _, tail = rest.rpartition(".")
            if head in table:
                key = prefix + table[head] + "." + tail
        state[key] = value


def _release_named(block: RestormerBlock) -> RestormerBlock:
    """Make ``block`` save and load its parameters under the release's names (strictly)."""
    to_ptg = _BLOCK_NAMES
    to_release = {v: k for k, v in _BLOCK_NAMES.items()}
    block.register_state_dict_post_hook(lambda m, sd, prefix, meta: _rename_block_keys(sd, prefix, to_release))
    block.register_load_state_dict_pre_hook(lambda m, sd, prefix, *a: _rename_block_keys(sd, prefix, to_ptg))
    return block


@register_model(
    "ptgrm-release",
    config=PTGRMReleaseConfig,
    kind="refiner",
    description="PTG-RM exactly as the authors released it (refinement2, SID); loads their state dicts",
)
class PTGRMRelease(nn.Module):
    """The released refinement module: ``R(Ihat, Id, g) -> clamp(Ihat) + Ir`` (module docstring)."""

    def __init__(self, config: PTGRMReleaseConfig | None = None):
        super().__init__()
        cfg = config if config is not None else PTGRMReleaseConfig()
        self.config = cfg
        c, e, k2c = cfg.width, cfg.prior_embed, cfg.kernel_size**2 * cfg.width
        self.multiple = 4
        self.lrelu = nn.LeakyReLU(_SLOPE)
        # Re: encoder to 1/4 resolution.
        self.r1, self.r1norm = _conv(6, c), _InstanceNorm32(c)
        self.r2, self.r2norm, self.r22 = _conv(c, c, stride=2), _InstanceNorm32(c), _conv(c, c, stride=2)
        # PTG-SVE: prior mapping Tm, position embedding P, range head Rm, branches Rl and Rs.
        d = sum(cfg.prior_dims)
        self.mapp_space1, self.mapp_space2 = nn.Linear(d, cfg.prior_hidden, bias=False), nn.Linear(cfg.prior_hidden, e, bias=False)
        self.mapp_position1, self.mapp_position2 = _conv(2, c), _conv(c, c, 1)
        self.r1_mask, self.r2_mask = _conv(c + e + c, c), _conv(c, 1)
        self.transformer = nn.Sequential(
            *[_release_named(RestormerBlock(c, cfg.long_heads, cfg.ffn_expansion, bias=False, norm_eps=_LN_EPS))
              for _ in range(cfg.long_blocks)]
        )
        self.resnet = ResBlock(c, negative_slope=0.0)  # slope 0: the release's ReLU
        # PTG-CSA: prior mapping Tc, position embedding, channel MLP Rc, kernel head Rp, Ro, Rf.
        self.mapp_space11, self.mapp_space22 = nn.Linear(d, cfg.prior_hidden, bias=False), nn.Linear(cfg.prior_hidden, e, bias=False)
        self.mapp_position11, self.mapp_position22 = _conv(2, c), _conv(c, c, 1)
        self.mapping11, self.mapping12 = nn.Linear(c + e, c, bias=False), nn.Linear(c, c, bias=False)
        self.mapp11, self.mapp12 = _conv(c + e + c, k2c), _conv(k2c, k2c)
        self.mapp1 = _conv(c, 1)
        self.refine11 = _conv(2 * c, c, 1)
        # Rd: decoder back to full resolution.
        self.r1_decoder, self.r2_decoder = _conv(c, 4 * c), _conv(c, 4 * c)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.conv_last2, self.conv_last3 = _conv(c, c, bias=True), _conv(c, 3, bias=True)
        if cfg.zero_init_output:
            nn.init.zeros_(self.conv_last3.weight)
            nn.init.zeros_(self.conv_last3.bias)

    def prior_parameters(self) -> list[nn.Parameter]:
        """The prior mappings Tm and Tc, which ``priors.lr_mult`` scales."""
        return [p for m in (self.mapp_space1, self.mapp_space2, self.mapp_space11, self.mapp_space22) for p in m.parameters()]

    def forward(self, ihat: Tensor, x: Tensor, priors: Tensor | Sequence[Tensor] | None = None) -> RefineOutput:
        """Refine ``ihat = F(x)``.

        Args:
            ihat: ``[B, 3, H, W]`` output of F.
            x: ``[B, 3, H, W]`` degraded input Id.
            priors: ``[B, D]`` or a sequence of ``[B, D_i]``, one per entry of ``prior_dims``.

        Returns:
            `RefineOutput` with ``out = clamp(ihat, 0, 1) + ir`` ``[B, 3, H, W]``, ``im`` None and
            the range map ``mask`` ``[B, 1, H/4, W/4]``.
        """
        if ihat.shape != x.shape or x.dim() != 4 or x.shape[1] != 3:
            raise PtgError(f"ptgrm-release expects ihat and x of the same shape [B, 3, H, W]; got {tuple(ihat.shape)} and {tuple(x.shape)}")
        inp, size = pad_to_multiple(torch.cat([ihat, x], dim=1), self.multiple)
        f = self.r22(self.r2norm(self.r2(self.lrelu(self.r1norm(self.r1(inp))))))  # [B, c, h, w]
        g = self._check_priors(priors, f)
        b, _, h, w = f.shape
        grid = release_grid(b, h, w, f)
        fhat, mask = self._sve(f, g, grid)
        fbar = self._csa(fhat, g, grid)
        y = self.lrelu(self.pixel_shuffle(self.r1_decoder(fbar)))
        y = self.lrelu(self.pixel_shuffle(self.r2_decoder(y)))
        ir = crop_to(self.conv_last3(self.lrelu(self.conv_last2(y))), size)  # [B, 3, H, W]
        return RefineOutput(ihat.clamp(0, 1) + ir, None, ir, mask)

    def _sve(self, f: Tensor, g: Tensor, grid: Tensor) -> tuple[Tensor, Tensor]:
        """PTG-SVE: ``M = σ(Rm(f ⊕ Tm(g) ⊕ P(S)))``, ``fhat = M·Rl(f) + (1−M)·Rs(f)``."""
        tm = self.mapp_space2(self.lrelu(self.mapp_space1(g)))  # [B, e]
        pos = self.mapp_position2(self.lrelu(self.mapp_position1(grid)))  # [B, c, h, w]
        tm_map = tm[:, :, None, None].expand(-1, -1, f.shape[2], f.shape[3])
        m = torch.sigmoid(self.r2_mask(self.lrelu(self.r1_mask(torch.cat([f, tm_map, pos], dim=1)))))  # [B, 1, h, w]
        return self.transformer(f) * m + self.resnet(f) * (1 - m), m

    def _csa(self, fhat: Tensor, g: Tensor, grid: Tensor) -> Tensor:
        """PTG-CSA: channel mask from the pooled features and Tc(g), spatial mask from per-pixel kernels."""
        tc = self.mapp_space22(self.lrelu(self.mapp_space11(g)))  # [B, e]
        pos = self.mapp_position22(self.lrelu(self.mapp_position11(grid)))  # [B, c, h, w]
        mc = torch.sigmoid(self.mapping12(self.lrelu(self.mapping11(torch.cat([fhat.mean(dim=(2, 3)), tc], dim=1)))))  # [B, c]
        tc_map = tc[:, :, None, None].expand(-1, -1, fhat.shape[2], fhat.shape[3])
        cp = self.mapp12(self.lrelu(self.mapp11(torch.cat([fhat, tc_map, pos], dim=1))))  # [B, k*k*c, h, w]
        ms_hat = location_wise_conv(fhat, cp, self.config.kernel_size, self.config.lwc_chunk_elements)  # [B, c, h, w]
        ms = torch.sigmoid(self.mapp1(self.lrelu(ms_hat)))  # [B, 1, h, w]
        return self.refine11(torch.cat([fhat * mc[:, :, None, None], fhat * ms], dim=1)) + fhat

    def _check_priors(self, priors: Tensor | Sequence[Tensor] | None, like: Tensor) -> Tensor:
        """The priors as one ``[B, sum(prior_dims)]`` tensor in the features' dtype."""
        dims = self.config.prior_dims
        if priors is None:
            raise PtgError(f"ptgrm-release needs priors of dims {dims}; got None")
        g = [priors] if isinstance(priors, Tensor) else list(priors)
        if len(g) != len(dims):
            raise PtgError(f"ptgrm-release was built for {len(dims)} prior(s) of dims {dims} but got {len(g)}")
        for i, (t, d) in enumerate(zip(g, dims)):
            if t.dim() != 2 or t.shape[1] != d or t.shape[0] != like.shape[0]:
                raise PtgError(f"prior {i} has shape {tuple(t.shape)}; expected [{like.shape[0]}, {d}] "
                               "(check the priors store matches the model's prior_dims)")
        return torch.cat([t.to(like.dtype) for t in g], dim=1)


def release_state_dict(obj: Any, what: str = "refiner weights") -> dict[str, Tensor]:
    """R's state dict from a loaded file of the authors' (or a plain) state dict.

    Unwraps ``{"params_ema": ...}`` (preferred when present, as ptg prefers EMA weights),
    ``{"params": ...}``, ``{"state_dict": ...}`` (BasicSR and Lightning files) and a DataParallel
    ``module.`` prefix as every weights file is unwrapped (`ptg.pipeline.core.weights.state_dict_of`),
    and from a whole released network keeps only its refinement module (keys under ``refinement11.``).

    Raises:
        PtgError: when what is left is not a flat dict of tensors.
    """
    from ptg.pipeline.core.weights import state_dict_of

    try:
        state = state_dict_of(obj, what) if isinstance(obj, dict) else None
    except PtgError:
        state = None
    if not state:
        raise PtgError(f"{what}: not a state dict of tensors (nor one wrapped in 'params', 'params_ema' or 'state_dict')")
    if any(k.startswith("refinement11.") for k in state):
        state = {k[len("refinement11."):]: v for k, v in state.items() if k.startswith("refinement11.")}
    return state
