"""`RunInfo`: the typed description of a trained model, whichever file it was loaded from.

A train checkpoint, an export folder and (for the priors) a distilled student all describe the
same things: which networks, trained on which prior stores (with their encoders' metadata), with
which prior transform, from which file, at which step, EMA or raw weights. `RunInfo` holds them
typed, so readers never index an untyped dict; ``to_*`` methods write the exact JSON the file
formats have always held (old files keep loading, new ones stay byte-compatible).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..priors import PriorTransform

# How a network is built: "registry" (a ptg model by registry name, weights from the file);
# "spandrel" (an architecture spandrel detects in the recorded weights; `weights_sha256` = the
# original checkpoint's SHA-256); "black-box" (a library's shipped weights, built by name);
# "cached-outputs" (no network: F's outputs were read from a cache; `weights_sha256` = the
# fingerprint of the F that made them, `args["f"]` its name).
NETWORK_KINDS = ("registry", "spandrel", "black-box", "cached-outputs")


def network_kind(name: str) -> str:
    """The `NETWORK_KINDS` entry of a recorded network name."""
    if name == "spandrel":
        return "spandrel"
    if name == "f-outputs":
        return "cached-outputs"
    if ":" not in name:
        from ..models import get_model_spec, list_models

        if name in list_models() and get_model_spec(name).black_box:
            return "black-box"
    return "registry"


@dataclass(frozen=True)
class NetworkSpec:
    """How to rebuild one network (F or R).

    Attributes:
        name: the registry name (or a trusted ``package.module:Class``).
        args: the constructor overrides it was trained with.
        kind: how it is built (see `NETWORK_KINDS`).
        interface: for F, "restorer" (``F(x)``) or "feature-refiner" (``F(x, priors)``, a "-f" F).
        weights_sha256: spandrel: SHA-256 of the original weights file; cached-outputs: the
            fingerprint of the F whose outputs were read; else None.
    """

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    kind: str = "registry"
    interface: str = "restorer"
    weights_sha256: str | None = None

    @classmethod
    def from_entry(cls, entry: dict[str, Any], with_interface: bool) -> "NetworkSpec":
        """From a checkpoint's or export's ``baseline``/``refiner`` entry."""
        name, args = str(entry["name"]), dict(entry["args"])
        kind = network_kind(name)
        sha = args.get("sha256") if kind == "spandrel" else args.get("fingerprint") if kind == "cached-outputs" else None
        return cls(name, args, kind=kind, interface=str(entry.get("kind", "restorer")) if with_interface else "restorer",
                   weights_sha256=str(sha) if sha else None)

    def to_entry(self, with_interface: bool) -> dict[str, Any]:
        """The ``{name, args[, kind]}`` entry the file formats hold."""
        out: dict[str, Any] = {"name": self.name, "args": dict(self.args)}
        if with_interface:
            out["kind"] = self.interface
        return out


@dataclass(frozen=True)
class PriorStoreInfo:
    """One priors store a model was trained on, as recorded (never opened to describe it).

    Attributes:
        path: where the store was at training time.
        dim: the prior dimension D.
        views: the views the store holds.
        metadata: the store's metadata (encoder, its spec, fingerprint, dtype, ...), as written.
    """

    path: str
    dim: int
    views: tuple[str, ...]
    metadata: dict[str, Any]

    @classmethod
    def from_entry(cls, e: dict[str, Any]) -> "PriorStoreInfo":
        return cls(str(e["path"]), int(e["dim"]), tuple(e.get("views") or ()), dict(e.get("metadata") or {}))

    def to_entry(self) -> dict[str, Any]:
        return {"path": self.path, "dim": self.dim, "views": list(self.views), "metadata": self.metadata}

    @property
    def fingerprint(self) -> str | None:
        """The encoder weights' fingerprint (a store of other weights is refused)."""
        fp = self.metadata.get("fingerprint")
        return None if fp is None else str(fp)

    @property
    def encoder(self) -> dict[str, Any]:
        """The recorded encoder: name, spec, preprocessing, source, details."""
        return dict(self.metadata.get("encoder") or {})

    @property
    def dtype(self) -> str:
        """The dtype the store holds its vectors in (inference rounds to it)."""
        return str(self.metadata.get("dtype", "float32"))


@dataclass(frozen=True)
class RunInfo:
    """What was loaded: provenance of a `Restorer`.

    Attributes:
        source: the file or folder it was read from.
        step: the optimiser step of the weights.
        mode: joint | baseline | refine.
        weights: "ema" or "raw".
        baseline: F.
        refiner: R, or None (F alone, or a "-f" F).
        priors: the prior stores it was trained on, in order.
        transform: the prior transform (normalisation statistics, control).
        config: the run's resolved training config (as saved).
        exported_from: for an export folder, the checkpoint it was exported from.
        students: distilled student folders that ship with it (an export), in store order.
    """

    source: str
    step: int
    mode: str
    weights: str | None
    baseline: NetworkSpec
    refiner: NetworkSpec | None
    priors: tuple[PriorStoreInfo, ...]
    transform: PriorTransform
    config: dict[str, Any] = field(default_factory=dict)
    exported_from: str | None = None
    students: tuple[str, ...] = ()

    @property
    def manifest(self) -> tuple[Path | None, Path | None]:
        """(manifest, root) the run trained on, from its config; (None, None) when not recorded."""
        data = self.config.get("data") or {}
        manifest = Path(data["manifest"]) if data.get("manifest") else None
        return manifest, Path(data["root"]) if data.get("root") else None

    @property
    def recorded_in(self) -> Path:
        """The file this run's recorded paths come from: the checkpoint, or an export's config.json
        (`fsio.written_by_you` and `fsio.check_recorded_paths` read its owner)."""
        src = Path(self.source)
        return src / "config.json" if src.is_dir() else src

    @property
    def run_dir(self) -> Path:
        """The run folder (a checkpoint's ``RUN/checkpoints/x.pt``), else the source itself."""
        src = Path(self.source)
        return src.parent.parent if src.parent.name == "checkpoints" else src

    def prior_entries(self) -> list[dict[str, Any]]:
        """The stores as the file formats record them."""
        return [p.to_entry() for p in self.priors]
