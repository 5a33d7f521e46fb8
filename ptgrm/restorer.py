"""`Restorer`: F -> R with the run's prior transform, the one forward of training, validation,
`ptg eval` and `ptg restore`. It only runs networks; loading them is `ptg.ptgrm.artifacts`."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from .priors import PriorTransform
from .tiling import required_multiple


class Restorer(nn.Module):
    """F and R (or a "-f" F carrying R) with the run's `PriorTransform`.

    One module, so one DistributedDataParallel wrapper syncs both networks in training.
    `forward` takes transformed priors (training, where the dataset transforms them with its
    regularisers); `restore` takes raw store vectors and applies the transform (inference).

    Attributes:
        f: the restoration network F.
        r: R, or None (F alone, or a "-f" F).
        f_kind: "restorer" or "feature-refiner" (F takes the priors itself).
        transform: the prior transform (dims () when no priors are used).
        train_f: whether F is trained (False in refine mode: F runs under no_grad).

    Where the networks came from is not its business: `ptg.ptgrm.artifacts.load` returns a
    `RunInfo` beside it.
    """

    def __init__(self, f: nn.Module, r: nn.Module | None, transform: PriorTransform, f_kind: str = "restorer",
                 train_f: bool = True):
        super().__init__()
        self.f = f
        self.r = r
        self.f_kind = f_kind
        self.transform = transform
        self.train_f = train_f
        self.bytes_per_pixel: float | None = None  # inference memory estimate, measured on first use (`restore_image`)

    @property
    def uses_priors(self) -> bool:
        """Whether F or R takes priors at all."""
        return bool(self.transform.dims) and (self.r is not None or self.f_kind == "feature-refiner")

    @property
    def needs_priors(self) -> bool:
        """Whether the images' own raw priors must be supplied (not for the zero/constant controls)."""
        return self.uses_priors and self.transform.needs_input

    @property
    def multiple(self) -> int:
        return required_multiple(self.f, self.r)

    def forward(self, x: Tensor, priors: Sequence[Tensor]) -> tuple[Tensor, Tensor | None]:
        # x: [B, 3, H, W]; priors: transformed, one [B, D_i] per store -> (Ihat, Ibar or None), [B, 3, H, W]
        if self.f_kind == "feature-refiner":
            return self.f(x, list(priors)), None
        if getattr(self.f, "input_channels", 3) == 6 and x.shape[1] == 6:  # cached F: x = Id ⊕ Ihat
            ihat, x = self.f(x), x[:, :3]
        elif self.train_f:
            ihat = self.f(x)
        else:
            with torch.no_grad():  # refine mode: F is frozen, R learns on top of its output
                ihat = self.f(x)
        if self.r is None:
            return ihat, None
        return ihat, self.r(ihat, x, list(priors)).out

    @torch.no_grad()
    def restore(self, x: Tensor, raw_priors: Sequence[Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        """Run F (and R) on a batch.

        Args:
            x: ``[B, 3, H, W]`` degraded images in [0, 1].
            raw_priors: raw store vectors, one ``[B, D_i]`` per store (None when unused or for the
                zero/constant controls); under shuffle, already the other images' priors (see
                `PriorTransform.order`).

        Returns:
            (F's output, R's output or None), both ``[B, 3, H, W]``.
        """
        device = next(self.f.parameters()).device
        x = x.to(device)
        g = self.transform(raw_priors, x.shape[0], device) if self.uses_priors else []
        return self(x, g)
