"""F's outputs computed once into a store: `ptg extract-outputs` as a function.

(Priors are extracted by `ptg.pipeline.priors.extract.extract_priors`, re-exported by this package.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ptg.pipeline.core.errors import PtgError

from .reporter import QUIET, Reporter


def extract_outputs(manifest: str | Path, baseline: str, out: str | Path, *, baseline_weights: str | Path | None = None,
                    baseline_args: Mapping[str, Any] | None = None, views: str = "identity", dtype: str = "float16",
                    split: str | None = None, shard_mb: float = 32.0, root: str | Path | None = None,
                    device: str = "auto", allow_outside: bool = False, reporter: Reporter = QUIET) -> Any:
    """Run the frozen F over a manifest's inputs (and views) once; returns `ptg.ptgrm.f_outputs.ExtractResult`.

    Re-running computes only the outputs not committed yet (also after a crash).
    """
    from ptg.pipeline.datasets.manifest import load_manifest
    from ptg.pipeline.datasets.views import parse_views

    from ..f_outputs import extract_outputs as run
    from ..frozen_f import build_frozen_f
    from ..runtime import resolve_device

    m = load_manifest(manifest, root=root, outside="allow" if allow_outside else "refuse")
    samples: Sequence[Any] = m.split(split) if split else list(m.samples)
    if not samples:
        raise PtgError(f"the manifest {manifest} has no rows{f' in split {split!r}' if split else ''}")
    view_names = parse_views(views)
    dev = str(resolve_device(device))
    f = build_frozen_f(baseline, baseline_weights, baseline_args).to(dev)
    n = len(dict.fromkeys(s.input for s in samples)) * len(view_names)
    with reporter.progress(n, f"outputs ({baseline})", "img") as advance:
        return run(f, baseline, samples, view_names, out, dtype=dtype, device=dev, shard_bytes=int(shard_mb * 2**20),
                   on_progress=advance)
