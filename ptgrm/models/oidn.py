"""Intel Open Image Denoise as a black-box F (via ``pyoidn``, its trained weights ship in the wheel).

OIDN is trained on rendering noise, not on photographs: on σ = 25 Gaussian noise it takes a 256²
photo from ~20.6 to ~29.3 dB here, a real pre-trained F with room left for R. It is a compiled
library, so nothing flows back through it: F is frozen (``--mode refine`` only) and R learns from
``(Id, Ihat)``. ``pyoidn`` is imported when the model is built, never at module import.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .registry import register_model

QUALITIES = ("high", "balanced", "fast")


@dataclass
class OIDNConfig:
    """OIDN's filter options (the weights are the library's own; there are no others)."""

    quality: str = "high"  # OIDN quality preset: high | balanced | fast (speed against accuracy)

    def __post_init__(self) -> None:
        if self.quality not in QUALITIES:
            raise PtgError(f"oidn quality={self.quality!r} is not one of {', '.join(QUALITIES)}")


class OIDNDenoiser(nn.Module):
    """``forward(x[B,3,H,W] in [0,1]) -> [B,3,H,W]``: OIDN's RT filter, one LDR image at a time, on the CPU."""

    weights_loaded = True  # the trained weights are inside the library
    black_box_library = "pyoidn"  # its weights are the library's: the version is part of its fingerprint
    runs_on_new_photos = True  # a live F: `ptg restore` can run it on any photo
    multiple = 1

    def __init__(self, config: OIDNConfig | None = None):
        super().__init__()
        self.config = config if config is not None else OIDNConfig()
        # OIDN holds no torch weights; ptg's inference code finds F's device from its parameters,
        # so an empty, frozen one stands in (0 values: nothing is stored or trained).
        self.device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)
        try:
            import pyoidn  # noqa: F401  (fail at build time, with the fix, not at the first step)
        except ImportError:
            raise PtgError("--baseline oidn needs the 'pyoidn' package: pip install 'ptg[boost]'") from None

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> [B, 3, H, W]; OIDN's LDR mode wants colours in [0, 1]
        import pyoidn

        out = torch.empty_like(x)
        for i in range(x.shape[0]):
            img = x[i].detach().float().clamp(0, 1).permute(1, 2, 0).contiguous().cpu().numpy()
            y = pyoidn.denoise(img, quality=self.config.quality)
            out[i] = torch.from_numpy(y).permute(2, 0, 1).to(out)
        return out


register_model("oidn", config=OIDNConfig, external=True, black_box=True,
               description="Intel Open Image Denoise (pyoidn, shipped weights); black box: --mode refine only")(OIDNDenoiser)
