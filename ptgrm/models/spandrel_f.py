"""Any pre-trained restoration network F from its checkpoint, recognised by spandrel.

spandrel (MIT; the loader behind chaiNNer and ComfyUI) detects ~40 architectures from a bare
state dict (NAFNet, SwinIR, Uformer, SCUNet, DRUNet, DnCNN, KBNet, FFTformer, RetinexFormer,
HVI-CIDNet, MixDehazeNet, ...); ``spandrel_extra_arches`` adds Restormer, MPRNet, MIRNet-v2,
M3SNet (under their own licences). ptg reads the file itself through its one weights reader
(`ptg.pipeline.core.weights`: ``torch.load(weights_only=True)`` or safetensors, so nothing in the
file can run code; zip, key-count and byte bounds; wrappers unwrapped by spandrel's
``canonicalize_state_dict``), detects the architecture with spandrel's registry, and builds it
twice: first on the meta device with the parameter and module bounds of ptg's own networks
(`limits.build_on_meta`: a file of a few KB naming 12 encoder levels or block 10^30 is refused
before anything is allocated), then for real, with the weights. Only a 1x restoration model with 3
input and 3 output channels is accepted as F: super-resolution, inpainting and face models are
refused naming their purpose and scale.

spandrel is imported inside the functions only: `ptg.ptgrm.models` imports just torch.
The network's parameters sit under ``net.`` in `SpandrelF`'s state dict; the weights' SHA-256 and
the detected architecture are recorded in the config, so a run refuses a changed file on resume.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ptg.pipeline.core.errors import PtgError

from .registry import register_model

_PLAIN_CALL = "ImageModelDescriptor.__init__.<locals>.<lambda>"  # spandrel's default: model(image)
_FIX = "convert it to .safetensors or save only the state dict"


@dataclass
class SpandrelConfig:
    """Which checkpoint F is built from; the last two fields are written by a run, then checked."""

    weights: str | None = None  # the checkpoint file (.pth/.pt/.ckpt/.safetensors); required
    sha256: str | None = None  # expected SHA-256 of the file (a run records it; a changed file is refused)
    architecture: str | None = None  # expected spandrel architecture name (recorded like sha256)


@dataclass(frozen=True)
class Detected:
    """What spandrel recognised in a weights file (`inspect_weights`)."""

    path: str  # the file read
    sha256: str  # SHA-256 of its bytes
    architecture: str | None  # spandrel's name, e.g. "NAFNet" (None: not recognised)
    purpose: str | None  # "Restoration", "SR", "FaceSR", "Inpainting", ...
    scale: int | None  # output size / input size
    input_channels: int | None
    output_channels: int | None
    parameters: int | None  # parameters of the network
    size_multiple: int | None  # H and W are padded to a multiple of this
    size_minimum: int | None  # and at least to this
    square: bool | None  # and to a square
    refused: str | None  # why it cannot be F (None: usable)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file, read by the one weights reader (`ptg.pipeline.core.weights`).

    Raises:
        PtgError: missing, over a bound, unsafe, or holding no state dict of tensors.
    """
    from ptg.pipeline.core.weights import read_state_dict as read

    _registry()  # spandrel loaded (or its absence named) first: the file is unwrapped by its canonicalize_state_dict
    return read(path, "--baseline-weights", f"pass the checkpoint (.pth/.ckpt/.safetensors) of F; {_FIX}")


def detect(state: dict[str, Tensor], where: str = "the weights", on_meta: bool = False) -> Any:
    """spandrel's model descriptor of a state dict (spandrel_extra_arches included when installed).

    The architecture is sized on the meta device first (`limits.build_on_meta`: ptg's parameter
    bound, a submodule bound, every exception of spandrel's builder one named line); only then,
    unless ``on_meta``, is it built for real with the weights.

    Raises:
        PtgError: spandrel missing, no architecture it knows matches the keys, over a bound, or a
            build that fails.
    """
    from ptg.pipeline.core.limits import build_on_meta

    with warnings.catch_warnings():  # spandrel's architectures script helpers with the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        registry = _registry()
        _check_indices(state, where)
        arch = _detect_arch(registry, state, where)
        name = arch.architecture.name
        fix = "pass a genuine checkpoint of a restoration network (raise the named limit if it is genuine)"
        meta = build_on_meta(lambda: arch.architecture.load(state), f"{where} ({name})", fix)
        if on_meta:
            return meta
        try:
            return arch.architecture.load(state)
        except Exception as exc:  # shapes that passed sizing but do not fit, MemoryError, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PtgError(f"spandrel matched {name} in {where} but could not build it ({type(exc).__name__}: "
                           f"{first:.160}); {fix}") from None


def _detect_arch(registry: Any, state: dict[str, Tensor], where: str) -> Any:
    """The first architecture (in spandrel's detection order) whose keys and shapes match."""
    try:
        arch = next((a for a in registry.architectures("detection") if a.detect(state)), None)
    except Exception as exc:  # a detector meeting shapes it does not expect
        raise PtgError(f"spandrel could not read {where} ({type(exc).__name__}: {str(exc)[:120]}); {_FIX}") from None
    if arch is None:
        raise PtgError(f"spandrel recognises no architecture in {where} (keys such as "
                       f"{', '.join(list(state)[:3])}); see spandrel's list of supported architectures, or register "
                       "the network in ptg and pass a `ptg train` checkpoint")
    return arch


def _check_indices(state: dict[str, Tensor], where: str) -> None:
    """No key may index a block beyond the module bound: spandrel sizes a sequence by its largest
    index (``middle_blks.<10^30>.beta`` asks for 10^30 blocks), so refuse it by name, at once."""
    from ptg.pipeline.core.limits import max_modules

    bound = max_modules()
    for key in state:
        for part in key.split("."):
            if part.isdigit() and (len(part) > 9 or int(part) >= bound):
                raise PtgError(f"{where}: the key {key[:80]!r} indexes block {part[:12]}{'...' if len(part) > 12 else ''}, "
                               f"beyond the {bound:,} modules a network may have (PTG_MAX_MODULES); the file is crafted "
                               "or damaged")


def _registry() -> Any:
    try:
        import spandrel
    except ImportError:
        raise PtgError("--baseline spandrel needs the 'spandrel' package: pip install 'ptg[boost]'") from None
    registry = spandrel.ArchRegistry()
    registry.add(*spandrel.MAIN_REGISTRY)
    try:
        import spandrel_extra_arches  # Restormer, MPRNet, MIRNet-v2, ... (their own licences)

        registry.add(*(s for s in spandrel_extra_arches.EXTRA_REGISTRY if s.architecture.id not in registry))
    except ImportError:
        pass
    return registry


def refusal(desc: Any) -> str | None:
    """Why a spandrel descriptor cannot be F (None when it is 1x RGB restoration)."""
    arch = desc.architecture.name
    purpose, scale = getattr(desc, "purpose", None), getattr(desc, "scale", None)
    if purpose != "Restoration" or scale != 1 or not callable(getattr(desc, "_call_fn", None)):
        what = {"SR": "super-resolution", "FaceSR": "face restoration", "Inpainting": "inpainting"}.get(purpose, purpose)
        return (f"{arch} is a {what} model (purpose {purpose}, scale {scale}x); ptg refines 1x restoration "
                "networks only (output the size of the input)")
    if desc.input_channels != 3 or desc.output_channels != 3:
        return (f"{arch} takes {desc.input_channels} and returns {desc.output_channels} channels; "
                "F must map RGB to RGB")
    return None


def inspect_weights(path: str | Path) -> Detected:
    """What spandrel finds in a weights file, or why it cannot be F (`Detected.refused`)."""
    sha = file_sha256(path) if Path(path).is_file() else ""
    state = read_state_dict(path)
    try:
        desc = detect(state, f"--baseline-weights {path}", on_meta=True)  # inspecting needs no real network
    except PtgError as exc:
        return Detected(str(path), sha, None, None, None, None, None, None, None, None, None, str(exc))
    req = desc.size_requirements
    return Detected(str(path), sha, desc.architecture.name, desc.purpose, desc.scale, desc.input_channels,
                    desc.output_channels, sum(p.numel() for p in desc.model.parameters()), int(req.multiple_of),
                    int(req.minimum), bool(req.square), refusal(desc))


class SpandrelF(nn.Module):
    """A spandrel-detected 1x restoration network: ``forward(x[B,3,H,W]) -> [B,3,H,W]`` for any H, W.

    The input is padded (replicate, bottom/right) to the architecture's size multiple, minimum and
    squareness, then cropped back, as every registered F pads itself; ``multiple`` tells the
    tiler the same. The output is not clamped (ptg's Fs return unclamped ``Ihat``).

    Attributes:
        net: the network spandrel built, with the file's weights.
        record: what a run writes into ``model.baseline_args`` (architecture, SHA-256).
    """

    weights_loaded = True  # built with its weights: refine mode reads no other file for F

    def __init__(self, config: SpandrelConfig | None = None):
        super().__init__()
        cfg = config if config is not None else SpandrelConfig()
        self.config = cfg
        self.net: nn.Module | None = None
        self.multiple, self.minimum, self.square = 1, 0, False
        if cfg.weights:
            sha = file_sha256(cfg.weights) if Path(cfg.weights).is_file() else None
            if cfg.sha256 and sha and sha != cfg.sha256:
                raise PtgError(f"--baseline-weights {cfg.weights} has SHA-256 {sha[:16]}…, not the {cfg.sha256[:16]}… "
                               "this run was started with; pass the original file or start a new run")
            self._build(read_state_dict(cfg.weights), f"--baseline-weights {cfg.weights}")
            self.record = {"architecture": self.architecture, "sha256": sha}
        elif not cfg.architecture:
            raise PtgError("--baseline spandrel needs the checkpoint: pass --baseline-weights FILE "
                           "(.pth/.ckpt/.safetensors of a 1x restoration network)")
        # else: rebuilt from a run's own record (checkpoint or export): `load_state_dict` builds the
        # network from the recorded weights, so the original file is not needed any more

    def _build(self, state: dict[str, Tensor], where: str) -> None:
        desc = detect(state, where)
        why = refusal(desc)
        if why:
            raise PtgError(f"{where}: {why}")
        arch = desc.architecture.name
        if self.config.architecture and arch != self.config.architecture:
            raise PtgError(f"{where} holds {arch}, not the recorded {self.config.architecture}")
        self.net = desc.model
        self._call: Callable[[nn.Module, Tensor], Tensor] = desc._call_fn  # spandrel's own forward of this arch
        # spandrel's own call functions (DRUNet's noise map, MPRNet's last stage, ...) assume one image;
        # the plain one (``model(image)``) takes a batch. Unknown ones run image by image: always right.
        self._batched = getattr(desc._call_fn, "__qualname__", "") == _PLAIN_CALL
        req = desc.size_requirements
        self.multiple, self.minimum, self.square = int(req.multiple_of), int(req.minimum), bool(req.square)
        self.architecture = arch

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load weights; a network built without a file (from a run's record) is detected from them first."""
        if self.net is None:
            inner = {k[len("net."):]: v for k, v in state_dict.items() if k.startswith("net.")}
            self._build(inner, "the recorded F weights")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, x: Tensor) -> Tensor:
        # x: [B, 3, H, W] -> [B, 3, H, W]
        if self.net is None:
            raise PtgError("spandrel F has no weights yet: build it from --baseline-weights FILE or load a run's state dict")
        h, w = x.shape[-2:]
        ph, pw = max(h, self.minimum), max(w, self.minimum)
        ph, pw = -(-ph // self.multiple) * self.multiple, -(-pw // self.multiple) * self.multiple
        if self.square:
            ph = pw = max(ph, pw)
        xp = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate") if (ph, pw) != (h, w) else x
        if self._batched or xp.shape[0] == 1:
            y = self._call(self.net, xp)
        else:
            y = torch.cat([self._call(self.net, xp[i : i + 1]) for i in range(xp.shape[0])])
        return y[..., :h, :w]


register_model("spandrel", config=SpandrelConfig, external=True,
               description="any 1x restoration network spandrel detects in --baseline-weights FILE")(SpandrelF)

