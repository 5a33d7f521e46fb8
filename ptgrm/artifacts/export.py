"""`ptg export` folders: a trained F and R as safetensors plus one JSON config, the format a team shares.

Layout of an export folder::

    config.json              format "ptg-export/1"; mode; baseline/refiner {name, args, kind, file, sha256,
                             network {kind: registry | spandrel | black-box | cached-outputs,
                             weights_sha256, architecture (spandrel)}}; a black box and cached
                             outputs have file null (built by name, weights from their package);
                             priors (one entry per store: path, dim, views, metadata with the encoder
                             spec and weights fingerprint); prior_transform {dims, normalize, control,
                             seed}; prior_stats {file, sha256} or null; source {checkpoint, sha256, step,
                             weights: "ema" | "raw", config: the run's resolved config}
    baseline.safetensors     F's state dict
    refiner.safetensors      R's state dict (absent for F alone or a "-f" F)
    prior_stats.safetensors  mean.i / std.i (standardize) and constant.i (constant control), if any
    students/<i>/            optional `ptg distill` students (student.json + student.safetensors), one
                             per store: restore and eval compute priors with them, so the folder
                             restores photos without any foundation model
    .ptg-artifact.json       marks the folder as a ptg export

Nothing in an export can run code: safetensors holds tensors only, config.json is data, and the
model names resolve only through the registry. Each file's SHA-256 is checked when loading.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ptg.pipeline.core import fsio
from ptg.pipeline.core.errors import PtgError

from ..priors import PriorTransform
from .checkpoint import build_network, read_checkpoint
from .info import NetworkSpec, PriorStoreInfo, RunInfo
from .student import student_priors

EXPORT_FORMAT = "ptg-export/1"
BY_NAME = ("black-box", "cached-outputs")  # network kinds exported without a weights file
EXPORT_CONFIG = "config.json"
MAX_PRIOR_DIM = 1 << 20  # a recorded prior dimension beyond this is no encoder's (a crafted config)


def _config_schema():
    """What a shared config.json must hold, checked before any field is read (`limits.check_schema`)."""
    from ptg.pipeline.core.limits import Optional_ as Opt

    # file/sha256 null: a black box or cached outputs, exported by name (`_write_network`)
    net = {"name": str, "args": dict, "file": Opt(str), "sha256": Opt(str), "kind": Opt(str),
           "network": Opt({"kind": str, "weights_sha256": Opt(str), "architecture": Opt(str)})}
    return {"format": str, "mode": str, "step": int, "baseline": net, "refiner": Opt(net),
            "priors": Opt([{"path": str, "dim": int, "views": Opt([str]), "metadata": Opt(dict)}]),
            "prior_transform": {"dims": [int], "normalize": str, "control": str, "seed": int},
            "prior_stats": Opt({"file": str, "sha256": str}), "students": Opt([str]),
            "source": Opt({"checkpoint": Opt(str), "sha256": Opt(str), "step": Opt(int), "weights": Opt(str),
                           "config": Opt(dict)})}


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    fsio.atomic_write_bytes(path, data)
    return fsio.file_sha256(path)


def _read_tensors(folder: Path, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    from ptg.pipeline.core.weights import read_weights

    path = fsio.plain_member(folder, entry.get("file") if isinstance(entry, dict) else None, "the weights file of the export")
    if not path.is_file():
        raise PtgError(f"the export {folder} lacks {entry['file']}; export the run again")
    if fsio.file_sha256(path) != entry.get("sha256"):
        raise PtgError(f"{path} does not match the SHA-256 recorded in {folder / EXPORT_CONFIG} (changed or damaged); "
                       "export the run again")
    if path.suffix != ".safetensors":
        raise PtgError(f"the export {folder} names {path.name} as its weights; an export's weights are .safetensors: "
                       "export the run again")
    return read_weights(path, "the export's weights file", "export the run again")  # header checked, bounded


def export_run(source: str | Path, out: str | Path, prefer: str = "best", force: bool = False,
               use_ema: bool = True, students: Sequence[str | Path] | None = None) -> dict[str, Any]:
    """Write the F and R of a run folder or checkpoint file into the export folder ``out``.

    Args:
        students: `ptg distill` folders, one per priors store of the run, in its order: copied in,
            so the export computes its priors without the foundation model.

    Returns:
        The content of ``out/config.json``.
    """
    f, r, info = read_checkpoint(source, prefer, use_ema=use_ema)
    if students:
        student_priors(students, info.priors)  # refuses a wrong count or another teacher's student
    out = fsio.claim_out_dir(out, "export", force)
    cfg: dict[str, Any] = {"format": EXPORT_FORMAT, "mode": info.mode, "step": info.step}
    cfg["baseline"] = _write_network(out, "baseline", info.baseline, True, f)
    cfg["refiner"] = None if r is None else _write_network(out, "refiner", info.refiner, False, r)
    cfg["priors"] = info.prior_entries()
    cfg["prior_transform"] = info.transform.settings()
    stats = info.transform.tensors()
    cfg["prior_stats"] = ({"file": "prior_stats.safetensors", "sha256": _write_tensors(out / "prior_stats.safetensors", stats)}
                          if stats else None)
    cfg["students"] = []
    for i, dist in enumerate(students or []):
        rel = f"students/{i}"
        for name in ("student.safetensors", "student.json"):  # student.json records the weights' SHA-256
            fsio.atomic_write_bytes(out / rel / name, (Path(dist) / name).read_bytes())
        cfg["students"].append(rel)
    cfg["source"] = {"checkpoint": info.source, "sha256": fsio.file_sha256(info.source), "step": info.step,
                     "weights": info.weights, "config": info.config}
    fsio.atomic_write_json(out / EXPORT_CONFIG, cfg)
    return cfg


def _write_network(out: Path, which: str, spec: NetworkSpec, with_interface: bool, net: nn.Module) -> dict[str, Any]:
    """One network's entry, its weights written as safetensors; a black box (a library's shipped
    weights) and cached outputs (no network) are written by name only (``file`` null)."""
    entry = spec.to_entry(with_interface)
    entry["network"] = {"kind": spec.kind, "weights_sha256": spec.weights_sha256}
    if spec.kind == "spandrel":  # the detected architecture and the original checkpoint's SHA-256
        entry["network"]["architecture"] = spec.args.get("architecture")
        entry["args"] = {k: v for k, v in entry["args"].items() if k != "weights"}  # the file is not needed any more
    if spec.kind in BY_NAME and not spec.args.get("weights"):
        return {**entry, "file": None, "sha256": None}
    name = f"{which}.safetensors"
    return {**entry, "file": name, "sha256": _write_tensors(out / name, net.state_dict())}


def _read_network(folder: Path, entry: dict[str, Any], spec: NetworkSpec) -> nn.Module:
    if entry.get("file") is None:
        if spec.kind not in BY_NAME:
            raise PtgError(f"the export {folder} names {spec.name!r} without its weights file; export the run again")
        return build_network(spec.name, spec.args)  # built with the weights its package ships
    return build_network(spec.name, spec.args, _read_tensors(folder, entry))


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is an export folder (it holds a config.json)."""
    p = Path(path)
    return p.is_dir() and (p / EXPORT_CONFIG).is_file()


def _check_config(cfg: dict[str, Any], where: Path) -> None:
    """Types and ranges of every field `read_export` reads, as one named error each."""
    from ptg.pipeline.core.limits import check_schema

    check_schema(cfg, _config_schema(), str(where))
    if cfg["mode"] not in ("joint", "baseline", "refine"):
        raise PtgError(f"{where}: 'mode' must be joint, baseline or refine, got {cfg['mode']!r:.40}; the file is damaged")
    dims = [e["dim"] for e in cfg.get("priors") or []] + list(cfg["prior_transform"]["dims"])
    bad = [d for d in dims if not 0 < d <= MAX_PRIOR_DIM]
    if bad:
        raise PtgError(f"{where}: a prior dimension of {bad[0]} is outside 1..{MAX_PRIOR_DIM:,}; the file is damaged or crafted")


def read_export(folder: str | Path) -> tuple[nn.Module, nn.Module | None, RunInfo]:
    """F, R and their `RunInfo` from an export folder (see the module docstring)."""
    from ptg.pipeline.core.limits import read_json

    folder = Path(folder)
    try:
        cfg = read_json(fsio.no_symlink(folder / EXPORT_CONFIG, "the export config"), "export config")
    except (OSError, ValueError) as exc:
        raise PtgError(f"cannot read {folder / EXPORT_CONFIG}: {exc}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT:
        raise PtgError(f"{folder} is not a `ptg export` folder (format {EXPORT_FORMAT})")
    _check_config(cfg, folder / EXPORT_CONFIG)
    stats = _read_tensors(folder, cfg["prior_stats"]) if cfg.get("prior_stats") else {}
    src = cfg.get("source") or {}
    info = RunInfo(source=str(folder), step=int(cfg["step"]), mode=cfg["mode"], weights=src.get("weights"),
                   baseline=NetworkSpec.from_entry(cfg["baseline"], True),
                   refiner=NetworkSpec.from_entry(cfg["refiner"], False) if cfg.get("refiner") else None,
                   priors=tuple(PriorStoreInfo.from_entry(e) for e in cfg.get("priors") or []),
                   transform=PriorTransform.from_settings(cfg["prior_transform"], stats),
                   config=src.get("config") or {}, exported_from=src.get("checkpoint"),
                   students=tuple(str(fsio.member_path(folder, d, "student folder")) for d in cfg.get("students") or []))
    f = _read_network(folder, cfg["baseline"], info.baseline)
    r = None
    if info.refiner is not None:
        r = build_network(info.refiner.name, info.refiner.args, _read_tensors(folder, cfg["refiner"]))
    return f, r, info
