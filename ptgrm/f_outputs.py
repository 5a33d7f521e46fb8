"""F's outputs as ``Ihat`` for R: a folder written by any tool, or a store ptg extracted itself.

Two sources, one reader (`open_cached_outputs` -> `CachedOutputs`): a folder of one image per
manifest id (below), or an image store written by `extract_outputs` (``ptg extract-outputs``:
a frozen F run once over every input and view; keys `output_key`, F's `f_fingerprint`
recorded). ``ptg train --f-outputs`` trains R on either with no F in memory
(`ptg.ptgrm.models.cached_f`), ``ptg eval --f-outputs`` scores with them.

``--f-outputs DIR`` is the bluntest black-box F: a folder where some other program (a released
model's own test script, a commercial denoiser, a MATLAB pipeline) wrote its restoration of every
input, as ``DIR/<id>.<ext>`` (any suffix of `ptg.pipeline.core.imageio`; 16-bit TIFF keeps the
most). A folder of outputs has no network to run: it cannot restore a new photo
(``runs_on_new_photos`` is False), and R is trained on it in refine mode only.

Validation happens once, at `open_f_outputs`, before any training: every requested id has exactly
one file, no file resolves outside ``DIR`` (a link out of the folder is refused), and every
file's header says the same height and width as its input — so decoding one later allocates
exactly an input's worth of pixels, and an output of another size (a crop, an upscale) is never
cropped against ``Id``. `FOutputs.read` decodes through `ptg.pipeline.core.imageio.read_image` and checks
the decoded size again.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.fsio import file_sha256
from ptg.pipeline.core.imageio import IMAGE_SUFFIXES, image_size, read_image
from ptg.pipeline.datasets.manifest import Sample

_SHOWN = 5  # ids named in an error
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FOutputs:
    """A validated folder of F's outputs for a set of manifest rows.

    Attributes:
        folder: the folder the user named.
        files: manifest id -> the output file (inside ``folder``).
        sizes: manifest id -> (height, width), equal to the input's.
    """

    folder: Path
    files: dict[str, Path]
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    runs_on_new_photos: ClassVar[bool] = False  # outputs exist only for the manifest's own inputs

    def read(self, sample_id: str) -> np.ndarray:
        """``Ihat`` of one row: float32 H×W×3 in [0, 1], the size of its input.

        Raises:
            PtgError: an id this folder was not opened for, or a file changed since it was opened.
        """
        try:
            path = self.files[sample_id]
        except KeyError:
            raise PtgError(f"--f-outputs {self.folder} was not opened for manifest id {sample_id!r}") from None
        img = read_image(path)
        if img.shape[:2] != self.sizes[sample_id]:
            raise PtgError(f"--f-outputs file {path} decodes to {img.shape[1]}x{img.shape[0]}, not the "
                           f"{self.sizes[sample_id][1]}x{self.sizes[sample_id][0]} of its input (was it replaced?)")
        return img

    def describe(self) -> dict[str, object]:
        """Provenance for a run's record: the folder and how many outputs it served."""
        return {"kind": "f-outputs", "folder": str(self.folder), "images": len(self.files)}


def open_f_outputs(folder: str | Path, samples: Sequence[Sample]) -> FOutputs:
    """Index and validate ``folder`` against the manifest rows ``samples``.

    Args:
        folder: the folder of outputs, ``<id>.<ext>`` per row (named by the user).
        samples: the rows R trains or is scored on; each needs its output.

    Raises:
        PtgError: not a folder; an id with no file or several; a file that is a link out of the
            folder; a size different from the input's (naming the first few offenders).
    """
    root = Path(folder)
    if not root.is_dir():
        raise PtgError(f"--f-outputs {root}: not a folder; pass the folder holding one output <id>.png per manifest id")
    real_root = root.resolve()
    files: dict[str, Path] = {}
    missing, multiple, outside, wrong = [], [], [], []
    for s in samples:
        found = [root / f"{s.id}{sfx}" for sfx in IMAGE_SUFFIXES if (root / f"{s.id}{sfx}").is_file()]
        if not found:
            missing.append(s.id)
        elif len(found) > 1:
            multiple.append(f"{s.id} ({', '.join(p.name for p in found)})")
        elif not found[0].resolve().is_relative_to(real_root):
            outside.append(f"{found[0].name} -> {found[0].resolve()}")
        else:
            files[s.id] = found[0]
    _raise_if(missing, root, "no output for manifest id(s)", "write one <id>.png per input (or drop those rows)")
    _raise_if(multiple, root, "several outputs for id(s)", "keep one file per id")
    _raise_if(outside, root, "file(s) that lead outside the folder", "copy the outputs into the folder itself")
    sizes = {}
    for s in samples:
        out_hw, in_hw = image_size(files[s.id]), image_size(s.input)
        if out_hw != in_hw:
            wrong.append(f"{s.id} ({out_hw[1]}x{out_hw[0]}, input {in_hw[1]}x{in_hw[0]})")
        sizes[s.id] = in_hw
    _raise_if(wrong, root, "output(s) whose size differs from the input's",
              "outputs must be 1x restorations of the manifest's inputs, uncropped")
    return FOutputs(root, files, sizes)


def _raise_if(bad: list[str], root: Path, what: str, fix: str) -> None:
    if bad:
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise PtgError(f"--f-outputs {root}: {what} {', '.join(bad[:_SHOWN])}{more}; {fix}")


# ---------------------------------------------------------------------------------------------
# F's outputs cached like priors: `ptg extract-outputs` writes them into an image store

OUTPUT_DTYPES = ("float16", "float32")
SETTINGS_KEY = "f_outputs"  # the entry of the store's settings.json that says which F made its images
OUTPUT_SHARD_BYTES = 32 << 20  # smaller than the image store's: a crash loses at most one shard of F's work
# The inverse of each dihedral view (an output computed on view(Id) is stored in Id's orientation).
_INVERSE = {"rot90": "rot270", "rot270": "rot90"}


def f_fingerprint(name: str, f: Any) -> str:
    """SHA-256 of what F computes with: its registry name, its weights (every tensor of its state
    dict: name, dtype, shape, bytes), the arguments that change its output besides the weights
    (``output_args``, e.g. FFDNet's σ map) and, for a black box, its options and library version.

    The same F gives the same fingerprint whether it was built from its file, a run's checkpoint
    or an export, so a cache is matched to a run's F without the original weights file.
    """
    import torch

    h = hashlib.sha256(f"ptg-f/1 {name}\n".encode())
    for key, t in sorted(f.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{key} {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    args = getattr(f, "output_args", None)
    if args:  # absent for most Fs, so their fingerprints are those recorded before this line existed
        h.update(f"args {json.dumps(args, sort_keys=True)}\n".encode())
    cfg = getattr(f, "config", None)
    if getattr(f, "black_box_library", None):  # a compiled library's weights are its version
        h.update(f"{f.black_box_library} {_version(f.black_box_library)} {cfg}\n".encode())
    return h.hexdigest()


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def output_key(input_sha256: str, fingerprint: str, view: str) -> str:
    """The image-store key of F's output of one input in one view."""
    return f"f-output/{input_sha256}/{fingerprint}/{view}"


@dataclass(frozen=True)
class ExtractResult:
    """What an `extract_outputs` run did."""

    store: Path
    written: int  # outputs computed by this run
    reused: int  # outputs already committed (a resumed run)
    fingerprint: str
    dtype: str


def output_meta(root: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The ``f_outputs`` entry of an outputs store's settings.json, checked (a shared store is input):
    F's name, its 64-hex fingerprint, a dtype of `OUTPUT_DTYPES`, a list of dihedral views.

    Raises:
        PtgError: no such entry (a store of decoded images), or a field of the wrong type or value (named).
    """
    from ptg.pipeline.datasets.views import _DIHEDRAL

    meta = settings.get(SETTINGS_KEY)
    if meta is None:
        raise PtgError(f"{root} is an image store of decoded images, not F's outputs; make one with "
                       "`ptg extract-outputs --manifest M --out OUTS`")
    checks = {
        "": isinstance(meta, dict),
        "f": isinstance(meta, dict) and isinstance(meta.get("f"), str) and len(meta["f"]) <= 200,
        "fingerprint": isinstance(meta, dict) and isinstance(meta.get("fingerprint"), str)
        and bool(_HEX64.match(meta["fingerprint"])),
        "dtype": isinstance(meta, dict) and meta.get("dtype") in OUTPUT_DTYPES,
        "views": isinstance(meta, dict) and isinstance(meta.get("views"), list) and 0 < len(meta["views"]) <= 8
        and all(isinstance(v, str) and v in _DIHEDRAL for v in meta["views"]),
    }
    bad = next((k for k, ok in checks.items() if not ok), None)
    if bad is not None:
        value = meta if bad == "" else meta.get(bad)
        raise PtgError(f"{root}/settings.json: {SETTINGS_KEY}{'.' + bad if bad else ''} is {str(value)[:60]!r}, not "
                       + {"": "an object", "f": "F's name", "fingerprint": "a 64-hex weights fingerprint",
                          "dtype": f"one of {', '.join(OUTPUT_DTYPES)}", "views": "a list of dihedral view names"}[bad]
                       + "; the store is damaged or crafted: extract the outputs again with `ptg extract-outputs`")
    return meta


def _check_settings(out: Path, meta: dict[str, Any]) -> None:
    """Refuse to mix two Fs (or dtypes) in one outputs store."""
    from ptg.pipeline.storage import imagestore

    if not (out / imagestore.SETTINGS).is_file():
        return
    if SETTINGS_KEY not in imagestore.ImageStore(out).settings:
        raise PtgError(f"--out {out} is an image store of decoded images, not of F's outputs; choose another --out")
    have = output_meta(out, imagestore.ImageStore(out).settings)
    for k in ("f", "fingerprint", "dtype"):
        if have.get(k) != meta[k]:
            raise PtgError(f"--out {out} holds outputs with {k}={str(have.get(k))[:24]!r}, not {str(meta[k])[:24]!r}; "
                           "one outputs store per F: choose another --out")


def extract_outputs(f: Any, name: str, samples: Sequence[Sample], views: Sequence[str], out: str | Path,
                    dtype: str = "float16", device: str = "cpu", shard_bytes: int = OUTPUT_SHARD_BYTES,
                    on_progress: Callable[[int], None] | None = None) -> ExtractResult:
    """Run a frozen F once over every input and view and store ``Ihat`` in an image store.

    Keys are `output_key` (input SHA-256, F's fingerprint, view). The output of ``view(Id)`` is
    stored in Id's own orientation, so a trainer crops it where it crops ``Id`` and applies the
    view to both crops. Resumable: outputs committed by an earlier (killed) run are verified and kept.

    Args:
        f: F, in eval mode (any ``F(x[1,3,H,W]) -> [1,3,H,W]``).
        name: F's registry name (recorded, and part of the fingerprint).
        samples: the manifest rows; duplicate inputs are computed once.
        views: dihedral view names.
        out: the store folder.
        dtype: float16 (half the bytes; ~1e-3 relative rounding) or float32 (exact).
        device: where F runs.
        shard_bytes: target shard size.
        on_progress: called with the number of outputs done, as they are.

    Raises:
        PtgError: a bad dtype or view, a store of another F, an output of another size.
    """
    from ptg.pipeline.storage import imagestore
    from ptg.pipeline.datasets.views import _DIHEDRAL

    if dtype not in OUTPUT_DTYPES:
        raise PtgError(f"--dtype {dtype!r}: choose one of {', '.join(OUTPUT_DTYPES)}")
    bad = [v for v in views if v not in _DIHEDRAL]
    if bad:
        raise PtgError(f"--views: {', '.join(bad)} cannot be cached as F outputs (dihedral views only: {', '.join(_DIHEDRAL)})")
    out = Path(out).expanduser()
    fp = f_fingerprint(name, f)
    meta = {"f": name, "fingerprint": fp, "dtype": dtype, "views": list(views), "record": getattr(f, "record", {})}
    _check_settings(out, meta)
    paths = list(dict.fromkeys(s.input for s in samples))
    shas = imagestore.file_keys(paths)
    jobs = {output_key(sha, fp, v): (p, sha, v) for p, sha in zip(paths, shas) for v in views}

    make = _output_maker(f, name, jobs, device, dtype, on_progress)
    res = imagestore.store_arrays(list(jobs), make, out, shard_bytes, settings={SETTINGS_KEY: meta})
    if on_progress and res.reused:
        on_progress(res.reused)
    verify_outputs(out, list(jobs))
    return ExtractResult(out, res.written, res.reused, fp, dtype)


def _output_maker(f: Any, name: str, jobs: dict[str, tuple[Path, str, str]], device: str, dtype: str,
                  on_progress: Callable[[int], None] | None) -> Callable[[str], np.ndarray]:
    """``make(key)``: F's output of the job's input in its view, stored in the input's orientation."""
    import torch

    from ptg.pipeline.datasets.views import apply_view

    def make(key: str) -> np.ndarray:
        path, sha, view = jobs[key]
        img = read_image(path)
        if file_sha256(path) != sha:
            raise PtgError(f"the image {path} changed during extraction; run again when it is stable")
        x = apply_view(img, view)
        with torch.no_grad():
            y = f(torch.from_numpy(x.transpose(2, 0, 1).copy())[None].to(device))[0].float().permute(1, 2, 0).cpu().numpy()
        if y.shape != x.shape:
            raise PtgError(f"F {name!r} returned {y.shape[1]}x{y.shape[0]} for the {x.shape[1]}x{x.shape[0]} input "
                           f"{path}: F must be a 1x restoration network")
        if on_progress:
            on_progress(1)
        return apply_view(y, _INVERSE.get(view, view)).astype(dtype)

    return make


def verify_outputs(out: Path, keys: Sequence[str]) -> None:
    """Every key committed, every shard's bytes its committed SHA-256 (a store that lost data is an error)."""
    from ptg.pipeline.storage import imagestore

    st = imagestore.ImageStore(out)
    missing = st.missing(keys)
    damaged = st.verify()
    if missing or damaged:
        raise PtgError(f"the outputs store {out} lacks {len(missing)} output(s) and has {len(damaged)} damaged shard(s) "
                       "after writing; run `ptg extract-outputs` again (it recomputes what is missing)")


class CachedOutputs:
    """F's cached outputs for a set of manifest rows, from an `extract_outputs` store or a folder.

    `array(sample, view)` is the output for ``view(Id)`` in Id's orientation (float16/float32
    H×W×3): crop it where ``Id`` is cropped, then apply the view. A folder holds the identity
    view only; other views fall back to it (``view(F(Id))`` for ``F(view(Id))``), and
    `fallback_views` names them so the trainer can say so.

    Attributes:
        source: the store or folder.
        kind: "store" or "folder".
        f: registry name of the F that made them ("" for a folder).
        fingerprint: that F's `f_fingerprint` ("" for a folder).
        views: the views held.
    """

    def __init__(self, source: Path, kind: str, meta: dict[str, Any], keys: dict[Path, str], store: Any = None,
                 folder: FOutputs | None = None):
        self.source, self.kind, self.store, self.folder, self.keys = source, kind, store, folder, keys
        self.f = str(meta.get("f", ""))
        self.fingerprint = str(meta.get("fingerprint", ""))
        self.views = tuple(meta.get("views") or ("identity",))
        self.dtype = str(meta.get("dtype", "float32"))
        self._finite: set[str] = set()  # keys whose output was seen finite (once per key per process)

    def record(self) -> dict[str, str]:
        """The `ptg.ptgrm.models.cached_f.CachedFConfig` of a run trained on these outputs."""
        return {"f": self.f, "fingerprint": self.fingerprint, "source": str(self.source), "kind": self.kind}

    def fallback_views(self, views: Sequence[str]) -> list[str]:
        return [v for v in views if v not in self.views]

    def array(self, sample: Sample, view: str = "identity", box: tuple[int, int, int] | None = None) -> np.ndarray:
        """``Ihat`` of one row as float32 H×W×3 (or its ``box`` = (top, left, size) crop): the one
        conversion of a stored output, for training and scoring alike (`imagestore.as_float`).

        Raises:
            PtgError: a stored output holding NaN or Inf (named by row and view).
        """
        if self.folder is not None:
            img = self.folder.read(sample.id)  # read_image: float32, non-finite values refused
        else:
            v = view if view in self.views else "identity"
            key = output_key(self.keys[sample.input], self.fingerprint, v)
            img = self.store.array(key)
            if key not in self._finite:
                if not np.isfinite(img).all():
                    bad = int(img.size - np.isfinite(img).sum())
                    raise PtgError(f"--f-outputs {self.source}: F's output of manifest id {sample.id!r} (view {v}) holds "
                                   f"{bad} non-finite value(s) (NaN or Inf); F diverged or the store is crafted: "
                                   "extract the outputs again, or drop that row")
                self._finite.add(key)
        if box is not None:
            top, left, size = box
            img = img[top : top + size, left : left + size]
        from ptg.pipeline.storage.imagestore import as_float

        return as_float(img)


def open_cached_outputs(source: str | Path, samples: Sequence[Sample], keys: Sequence[str] | None = None
                        ) -> CachedOutputs:
    """Open ``--f-outputs``: an `extract_outputs` store, else a folder of ``<id>.<ext>`` files.

    Args:
        source: the store or folder (named by the user).
        samples: the rows that need outputs.
        keys: SHA-256 of each sample's input file, if already known.

    Raises:
        PtgError: rows without an output (count, first ids, the command that makes them), an output
            whose size is not its input's.
    """
    from ptg.pipeline.storage import imagestore

    root = Path(source).expanduser()
    if not (root / imagestore.SETTINGS).is_file():
        return CachedOutputs(root, "folder", {}, {}, folder=open_f_outputs(root, samples))
    st = imagestore.ImageStore(root)
    meta = output_meta(Path(f"--f-outputs {root}"), st.settings)
    keys = list(keys) if keys is not None else imagestore.file_keys([s.input for s in samples])
    by_path = dict(zip([s.input for s in samples], keys))
    out = CachedOutputs(root, "store", meta, by_path, store=st)
    missing, wrong = [], []
    for s in samples:
        if output_key(by_path[s.input], out.fingerprint, "identity") not in st:
            missing.append(s.id)
            continue
        hw = image_size(s.input)
        for v in out.views:  # every view held: F's 1x output, stored in the input's orientation, in the settings' dtype
            key = output_key(by_path[s.input], out.fingerprint, v)
            e = st.entry(key) if key in st else None
            if e is not None and (e.dtype != out.dtype or e.shape != (*hw, 3)):
                wrong.append(f"{s.id} ({v}: {e.dtype} {e.shape[1]}x{e.shape[0]}x{e.shape[2]}, expected {out.dtype} "
                             f"{hw[1]}x{hw[0]}x3)")
                break
    _raise_if(missing, root, f"no output of F {out.f!r} for the current content of manifest id(s)",
              f"run `ptg extract-outputs --manifest M --out {root}` with the same F on this manifest")
    _raise_if(wrong, root, "output(s) whose dtype or size differs from settings.json and the input",
              "extract the outputs again")
    return out


def stand_in_for(f: Any, name: str, recorded_fingerprint: str | None, outs: CachedOutputs) -> Any:
    """The `CachedF` that replaces a run's F by ``outs``, once they are known to be that F's outputs.

    Args:
        f: the run's F as loaded (a live network, or the `CachedF` of a run trained on a cache).
        name: its registry name.
        recorded_fingerprint: for a run trained on a cache, the fingerprint it recorded.
        outs: the cached outputs (of an outputs store, which names its F; a folder names none).

    Raises:
        PtgError: outputs of another F (names both fingerprints and the fix).
    """
    from .models import create_model

    expected = recorded_fingerprint if name == "f-outputs" else f_fingerprint(name, f)
    if outs.kind == "store" and expected and outs.fingerprint != expected:
        raise PtgError(f"--f-outputs {outs.source} holds outputs of F {outs.f!r} (fingerprint {outs.fingerprint[:16]}), "
                       f"not of this run's F (fingerprint {expected[:16]}); extract them with the run's own F")
    return create_model("f-outputs", **outs.record())


def check_live(name: str, f: Any, recorded_fingerprint: str | None) -> None:
    """A live F given for a run trained on a cache must be the F that made it (same fingerprint).

    Raises:
        PtgError: another F (or other weights) than the one whose outputs R was trained on.
    """
    fp = f_fingerprint(name, f)
    if recorded_fingerprint and fp != recorded_fingerprint:
        raise PtgError(f"--baseline {name} has fingerprint {fp[:16]}, but this run's R was trained on the outputs of an F "
                       f"with fingerprint {recorded_fingerprint[:16]}; pass that F's own weights")
