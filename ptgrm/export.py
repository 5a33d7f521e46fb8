"""`ptg export`: a trained F and R as safetensors plus one JSON config, the format a team shares.

Layout of an export folder::

    config.json              format "ptg-export/1"; mode; baseline/refiner {name, args, kind, file, sha256};
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

from pathlib import Path
from typing import Any

import torch

from ptg.pipeline import fsio
from ptg.pipeline.errors import PtgError

from .infer import Restorer
from .priors import PriorTransform

EXPORT_FORMAT = "ptg-export/1"
EXPORT_CONFIG = "config.json"


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    fsio.atomic_write_bytes(path, data)
    return fsio.file_sha256(path)


def _read_tensors(folder: Path, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = fsio.plain_member(folder, entry.get("file") if isinstance(entry, dict) else None, "the weights file of the export")
    if not path.is_file():
        raise PtgError(f"the export {folder} lacks {entry['file']}; export the run again")
    if fsio.file_sha256(path) != entry.get("sha256"):
        raise PtgError(f"{path} does not match the SHA-256 recorded in {folder / EXPORT_CONFIG} (changed or damaged); "
                       "export the run again")
    try:
        return load_file(str(path))
    except Exception as exc:
        raise PtgError(f"cannot read {path} as safetensors: {exc}") from None


def export_run(source: str | Path, out: str | Path, prefer: str = "best", force: bool = False,
               use_ema: bool = True, students: list[str | Path] | None = None) -> dict[str, Any]:
    """Write the F and R of a run folder or checkpoint file into the export folder ``out``.

    Args:
        students: `ptg distill` folders, one per priors store of the run, in its order: copied in,
            so the export computes its priors without the foundation model.

    Returns:
        The content of ``out/config.json``.
    """
    restorer = Restorer.from_checkpoint(source, "cpu", prefer, use_ema=use_ema)
    if students:
        from .distill import student_priors

        student_priors(students, restorer.info["priors"])  # refuses a wrong count or another teacher's student
    out = fsio.claim_out_dir(out, "export", force)
    info = restorer.info
    cfg: dict[str, Any] = {"format": EXPORT_FORMAT, "mode": info["mode"], "step": info["step"]}
    cfg["baseline"] = {**info["baseline"], "kind": restorer.f_kind, "file": "baseline.safetensors",
                       "sha256": _write_tensors(out / "baseline.safetensors", restorer.f.state_dict())}
    cfg["refiner"] = None
    if restorer.r is not None:
        cfg["refiner"] = {**info["refiner"], "file": "refiner.safetensors",
                          "sha256": _write_tensors(out / "refiner.safetensors", restorer.r.state_dict())}
    cfg["priors"] = info["priors"]
    cfg["prior_transform"] = restorer.transform.settings()
    stats = restorer.transform.tensors()
    cfg["prior_stats"] = ({"file": "prior_stats.safetensors", "sha256": _write_tensors(out / "prior_stats.safetensors", stats)}
                          if stats else None)
    cfg["students"] = []
    for i, dist in enumerate(students or []):
        rel = f"students/{i}"
        for name in ("student.safetensors", "student.json"):  # student.json records the weights' SHA-256
            fsio.atomic_write_bytes(out / rel / name, (Path(dist) / name).read_bytes())
        cfg["students"].append(rel)
    cfg["source"] = {"checkpoint": info["source"], "sha256": fsio.file_sha256(info["source"]), "step": info["step"],
                     "weights": info["weights"], "config": info["config"]}
    fsio.atomic_write_json(out / EXPORT_CONFIG, cfg)
    return cfg


def load_export(folder: str | Path, device: str | torch.device = "cpu") -> Restorer:
    """A `Restorer` from an export folder (see the module docstring)."""
    from ptg.pipeline.limits import read_json

    from .train.checkpoint import build_network

    folder = Path(folder)
    try:
        cfg = read_json(fsio.no_symlink(folder / EXPORT_CONFIG, "the export config"), "export config")
    except (OSError, ValueError) as exc:
        raise PtgError(f"cannot read {folder / EXPORT_CONFIG}: {exc}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT:
        raise PtgError(f"{folder} is not a `ptg export` folder (format {EXPORT_FORMAT})")
    f = build_network(cfg["baseline"]["name"], cfg["baseline"]["args"], _read_tensors(folder, cfg["baseline"]))
    r = None
    if cfg.get("refiner"):
        r = build_network(cfg["refiner"]["name"], cfg["refiner"]["args"], _read_tensors(folder, cfg["refiner"]))
    stats = _read_tensors(folder, cfg["prior_stats"]) if cfg.get("prior_stats") else {}
    transform = PriorTransform.from_settings(cfg["prior_transform"], stats)
    src = cfg.get("source") or {}
    info = {"source": str(folder), "step": int(cfg["step"]), "mode": cfg["mode"], "weights": src.get("weights"),
            "config": src.get("config") or {}, "priors": list(cfg.get("priors") or []),
            "baseline": {k: cfg["baseline"][k] for k in ("name", "args", "kind")},
            "refiner": None if r is None else {k: cfg["refiner"][k] for k in ("name", "args")},
            "exported_from": src.get("checkpoint"), "students": [str(fsio.member_path(folder, d, "student folder")) for d in cfg.get("students") or []]}
    return Restorer(f, r, transform, cfg["baseline"].get("kind", "restorer"), info=info).to(device).eval()
