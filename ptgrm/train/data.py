"""Training and validation data: (degraded crop, target crop, prior vectors) from a manifest and
one or several priors stores.

Every random choice of a training sample (crop position, dihedral view, prior dropout and noise)
is drawn from ``numpy.random.default_rng((seed, epoch, index))``: the same sample gets the same
crop whichever DataLoader worker loads it and whether or not the run was resumed. The sampler
yields ``(epoch, index)`` pairs so the dataset never needs to be told the epoch.

Views. A store may cache priors of several views of each image (`ptg.pipeline.datasets.views`). A crop is
cut from the image as stored, then the drawn dihedral view is applied to the crop with
`apply_view`, the same function the extractor used, and the prior of that view is read; for a
``tiles:N`` store the prior is that of the tile under the crop's centre. When the store lacks the
view drawn, the identity (or tile) prior is used and the run warns once at start.

Prior vectors of the images in use are read from the stores once, at start, for the views that
can be drawn: lookups during training are array indexing.

Pixels come from an `ImageSource` (``data.images``): decoded from the files, or served from the
image store (`ptg.pipeline.storage.imagestore`) as read-only views of its memory map, shared by every
DataLoader worker through the page cache. A crop and its flips are views of the map; the only copy
is the one into the sample's row of a batch (`TrainDataset.fill`; the trainer's batches live in the
shared slots of `ptg.ptgrm.train.ring`): the uint8 crop as stored (turned later by `to_float`), or
the float32 CHW values computed with the very cast and division of `read_image`, so both sources
give the same bits.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.fsio import file_sha256
from ptg.pipeline.storage import imagestore
from ptg.pipeline.core.imageio import image_size, read_image
from ptg.pipeline.datasets.manifest import Sample
from ptg.pipeline.storage.priorcache import prior_vectors
from ptg.pipeline.datasets.views import VIEW_SETS, apply_view, parse_tile_view, tile_grid, tile_view_for

from ..priors import PriorTransform, derangement  # noqa: F401  (derangement: re-exported for callers)
from .config import DataConfig, PriorConfig
from .pixels import VIEW_CODES, to_tensor, write_float


class PriorFallbackWarning(UserWarning):
    """A crop's view is not cached in a store; the identity view's prior stands in for it."""


@dataclass
class PriorTable:
    """One store's priors for the dataset's images, in memory.

    Attributes:
        path: the store.
        dim: prior dimension.
        views: the store's view names.
        metadata: the store's metadata (encoder name, arguments, fingerprint, preprocessing, ...).
        tiles: N of a ``tiles:N`` store, else 0.
        vectors: view name -> float32 ``[n_images, dim]``, rows in the order of the samples.
    """

    path: str
    dim: int
    views: tuple[str, ...]
    metadata: dict[str, Any]
    tiles: int
    vectors: dict[str, np.ndarray]

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records about this store (enough to recompute its priors)."""
        return {"path": self.path, "dim": self.dim, "views": list(self.views), "metadata": self.metadata}


def store_tiles(views: Sequence[str]) -> int:
    """N of a ``tiles:N`` view set (0 when the store holds no tiles): `ptg.pipeline.datasets.views.tile_grid`."""
    return tile_grid(views)


def augment_views(augment: str, first_store_views: Sequence[str] | None) -> tuple[str, ...]:
    """The dihedral views a training crop is drawn from.

    ``store`` means the dihedral views cached in the first store (identity only for a store of
    tiles or without stores), so every crop gets an exact prior.
    """
    if augment == "none":
        return ("identity",)
    if augment == "store":
        if not first_store_views:
            return ("identity",)
        dihedral = set(VIEW_SETS["d4"]) | set(VIEW_SETS["flips"])
        return tuple(v for v in first_store_views if v in dihedral) or ("identity",)
    return VIEW_SETS[augment]


def check_missing(samples: Sequence[Sample], keys: Sequence[str], stores: Sequence[Any], allow_missing: bool
                  ) -> list[int]:
    """Indices of the samples that every store has a prior for.

    Raises:
        PtgError: some samples have no prior and ``allow_missing`` is off (gives the count and the
            first ids).
    """
    missing: set[int] = set()
    for store in stores:
        absent = set(store.missing(keys))
        missing.update(i for i, k in enumerate(keys) if k in absent)
    if missing and not allow_missing:
        ids = [samples[i].id for i in sorted(missing)]
        raise PtgError(
            f"{len(ids)} of {len(samples)} manifest rows have no prior in the store(s) "
            f"{', '.join(str(s.path) for s in stores)} (first ids: {', '.join(ids[:5])}). "
            "Run `ptg extract-priors` on this manifest with the same --out, or pass --allow-missing-priors to drop them."
        )
    if missing:
        warnings.warn(f"dropping {len(missing)} of {len(samples)} manifest rows that have no prior "
                      "(--allow-missing-priors)", stacklevel=2)
    return [i for i in range(len(samples)) if i not in missing]


def load_tables(stores: Sequence[Any], keys: Sequence[str], aug: Sequence[str], in_memory: bool | str = "auto"
                ) -> list[PriorTable]:
    """Read, for each store, the priors of ``keys`` for every view training can ask for.

    Warns once per store whose views do not cover the drawn dihedral views.
    """
    tables = []
    for store in stores:
        views = tuple(store.views)
        tiles = store_tiles(views)
        if tiles:
            wanted = [v for v in views if parse_tile_view(v) is not None] + ["identity"]
            if any(v != "identity" for v in aug):
                warnings.warn(f"the priors store {store.path} holds tiles of the unaugmented image only: crops "
                              f"drawn with views {', '.join(v for v in aug if v != 'identity')} get the prior of the "
                              "unflipped tile under them", PriorFallbackWarning, stacklevel=2)
        else:
            lacking = [v for v in aug if v not in views]
            if lacking:
                warnings.warn(f"the priors store {store.path} has no priors for the views {', '.join(lacking)} "
                              f"(it holds {', '.join(views)}); crops in those views get the identity view's prior. "
                              "Re-extract with --views d4 (or flips), or set data.augment=store", PriorFallbackWarning,
                              stacklevel=2)
            wanted = ["identity"] + [v for v in aug if v in views and v != "identity"]
        if "identity" not in views:
            raise PtgError(f"the priors store {store.path} has no identity view (it holds {', '.join(views[:8])})")
        # in RAM, or lazily from the store's memory-mapped row cache (same bits), by data.priors_in_memory
        vectors = prior_vectors(store, list(keys), list(dict.fromkeys(wanted)), setting=in_memory)
        tables.append(PriorTable(str(store.path), int(store.dim), views, dict(store.metadata), tiles, vectors))
    return tables


def fit_transform(tables: Sequence[PriorTable], cfg: PriorConfig, seed: int) -> PriorTransform:
    """The run's prior transform, its statistics fitted on the training rows (identity view)."""
    return PriorTransform.fit([t.dim for t in tables], cfg.normalize, cfg.control, seed,
                              [t.vectors["identity"] for t in tables])


def _prior_vectors(tables: Sequence[PriorTable], row: int, view: str, crop_box: tuple[int, int, int, int, int, int] | None,
                   cfg: PriorConfig, shuffle: np.ndarray | None, rng: np.random.Generator | None,
                   transform: PriorTransform | None = None) -> list[torch.Tensor]:
    """The prior vectors of one training sample, one per store: the run's transform (normalisation,
    control), then the training-only regularisers (dropout, noise) when ``rng`` is given."""
    if transform is None:  # no fitted statistics: only the stateless settings work
        transform = PriorTransform([t.dim for t in tables], cfg.normalize, cfg.control)
    if shuffle is not None:
        row = int(shuffle[row])
    drop = rng is not None and cfg.dropout > 0 and rng.random() < cfg.dropout
    raw = []
    for t in tables:
        if t.tiles and crop_box is not None:
            key = tile_view_for(*crop_box[:2], t.tiles, *crop_box[2:])
        else:
            key = view if view in t.vectors else "identity"
        raw.append(torch.from_numpy(t.vectors[key][row : row + 1]))
    out = [g[0] for g in transform(raw)]
    if drop:
        return [torch.zeros_like(g) for g in out]
    if rng is not None and cfg.noise > 0 and cfg.control != "zero":
        out = [g + torch.from_numpy(rng.normal(0.0, cfg.noise, size=g.shape).astype(np.float32)) for g in out]
    return out


class InputGuard:
    """Stops training on an input image whose bytes changed after its prior's key was taken.

    Keys are the SHA-256 of each input file, taken once at start; every later read compares the
    file's size and modification time with those seen just before hashing and re-hashes only when
    they differ, so a `touch` passes and an edited or replaced image is an error, never a crop
    trained with the prior of its old content.
    """

    def __init__(self, samples: Sequence[Sample] = (), paths: Sequence[Path] | None = None,
                 base: "InputGuard | None" = None):
        """Guard the inputs of `samples`, or `paths`; files `base` already guards keep its keys."""
        if paths is None:
            paths = [s.input for s in samples]
        known = base._key if base is not None else {}
        todo = [p for p in dict.fromkeys(paths) if p not in known]
        self._seen = {p: self._stat(p) for p in todo}  # before hashing: a change during it is caught
        self._key = dict(zip(todo, imagestore.file_keys(todo)))
        for p in dict.fromkeys(paths):
            if p in known:
                self._seen[p], self._key[p] = base._seen[p], known[p]
        self.keys = [self._key[p] for p in paths]

    @staticmethod
    def _stat(path: Path) -> tuple[int, int]:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns

    def check(self, path: Path) -> None:
        """Raise if ``path`` no longer holds the bytes its key was computed from."""
        now = self._stat(path)
        if now == self._seen[path]:
            return
        if file_sha256(path) != self._key[path]:
            raise PtgError(f"the image {path} changed on disk after training started: its cached prior and stored pixels "
                           "belong to its old content. Restore the file, or re-run `ptg extract-priors` (and `ptg data "
                           "cache`) on the manifest and start the run again (or resume it from its last checkpoint)")
        self._seen[path] = now  # same bytes (e.g. touched): keep going


class ImageSource:
    """Where a dataset's pixels come from: decoded files, or the image store's memory map.

    `array(path)` returns an H×W×3 block: a float32 decoded image (files) or the stored integer
    block, a read-only view of the map (store); `to_tensor` turns either into the same float32.
    """

    def __init__(self, store: "imagestore.ImageStore | None" = None, guard: "InputGuard | None" = None,
                 keyed_guard: "InputGuard | None" = None, cache: bool = False):
        self.store = store  # None: decode files
        self.guard = guard  # store: every file served (inputs and targets) -> its key, checked per read
        self.keyed_guard = keyed_guard  # files: the priors' guard, checked on input reads
        # Decoded images kept per process (each DataLoader worker has its own): decoding a PNG per
        # crop, not the network, bounds the step time of small models on a GPU (the store shares one copy).
        self._cache: dict[Path, np.ndarray] | None = {} if cache and store is None else None

    @property
    def kind(self) -> str:
        return "files" if self.store is None else "store"

    def uint8_only(self, paths: Sequence[Path]) -> bool:
        """Whether every one of `paths` is served as a stored uint8 block (so batches can stay uint8)."""
        return self.store is not None and all(self.store.entry(self.guard._key[p]).dtype == "uint8" for p in paths)

    def array(self, path: Path, keyed: bool = False) -> np.ndarray:
        """The pixels of `path` (keyed: an input whose prior was looked up by its key)."""
        if self.store is not None:
            self.guard.check(path)  # the row belongs to the bytes hashed at start: a changed file is an error
            return self.store.array(self.guard._key[path])
        if self._cache is not None and path in self._cache:
            return self._cache[path]  # the pixels read (and checked) first, which match the prior
        img = read_image(path)
        if keyed and self.keyed_guard is not None:
            self.keyed_guard.check(path)  # after the read: a change during it is seen too
        if self._cache is not None:
            self._cache[path] = img
        return img


def _note(text: str) -> None:
    print(f"data.images: {text}", file=sys.stderr, flush=True)


def open_images(cfg: DataConfig, samples: Sequence[Sample], guard: "InputGuard | None" = None,
                main: bool = True) -> ImageSource:
    """The image source of ``data.images`` for `samples` (train and val).

    auto: the store when it holds every image; else (main process only) build it now when the
    decoded images fit half the free disk; else decode files. One line on stderr says which.

    Raises:
        PtgError: ``store`` and the store is absent or lacks some image (names the count and the fix).
    """
    if cfg.images == "files":
        return ImageSource(keyed_guard=guard, cache=cfg.cache_images)
    path = imagestore.store_arg(cfg.image_store)  # a folder, or s3://... read through its verified mirror
    paths = imagestore.manifest_paths(samples)
    files_guard = InputGuard(paths=paths, base=guard)
    try:
        store: imagestore.ImageStore | None = imagestore.ImageStore(path)
    except PtgError:
        if cfg.images == "store":
            raise
        store = None
    missing = [p for p, k in zip(paths, files_guard.keys) if store is None or k not in store]
    if missing and cfg.images == "store":
        raise PtgError(f"{len(missing)} of {len(paths)} images (e.g. {missing[0]}) are not in the image store {path}: "
                       f"run `ptg data cache --manifest M --store {path}`, or set data.images=auto|files")
    if missing:
        need = imagestore.decoded_bytes(missing)
        if not (main and imagestore.fits_disk(path, need)):
            _note(f"auto: decoding image files ({len(missing)} images are not in the image store {path}"
                  f"{'' if main else '; only the main process builds it'}; `ptg data cache` builds it)")
            return ImageSource(keyed_guard=guard, cache=cfg.cache_images)
        _note(f"auto: building the image store {path} once ({len(missing)} images, {need / 2**30:.2f} GiB); "
              "later runs read it")
        try:
            imagestore.cache_images(paths, path, keys=files_guard.keys)
        except PtgError as exc:
            _note(f"auto: decoding image files (the image store could not be built: {exc})")
            return ImageSource(keyed_guard=guard, cache=cfg.cache_images)
        store = imagestore.ImageStore(path)
    elif cfg.images == "auto" and main:
        _note(f"auto: reading pixels from the image store {path}")
    decoded = store.vouch(paths, files_guard.keys)  # records not known true of their files: decoded once, compared
    if decoded and main:
        _note(f"verified {decoded} image(s) of the store {path} against their files (decoded once; remembered, so "
              "later runs decode none)")
    return ImageSource(store, files_guard)


class TrainDataset(Dataset):
    """Random crops of the training images with their priors.

    Indexed by ``(epoch, index)``; ``index`` runs over ``len(samples) * repeat`` so that an epoch
    holds at least one global batch even on a handful of images.
    """

    def __init__(self, samples: Sequence[Sample], tables: Sequence[PriorTable], cfg: DataConfig, prior_cfg: PriorConfig,
                 views: Sequence[str], seed: int, repeat: int = 1, need_target: bool = True,
                 transform: PriorTransform | None = None, guard: "InputGuard | None" = None,
                 images: ImageSource | None = None, raw: bool = False, f_outputs: Any = None):
        self.samples = list(samples)
        self.f_outputs = f_outputs  # `ptg.ptgrm.f_outputs.CachedOutputs`: Ihat cropped with Id, as "ihat"
        self.images = images if images is not None else ImageSource(keyed_guard=guard, cache=cfg.cache_images)
        # raw: crops leave as uint8 HWC, unturned (a quarter of the bytes to copy, pin and move); `to_float` on
        # the device gives the float32 bits. Only when every image is a stored uint8 block.
        self.raw = raw and self.images.uint8_only([p for s in self.samples for p in (s.input, s.target) if p is not None])
        self.tables = list(tables)
        self.transform = transform if transform is not None or not tables else fit_transform(tables, prior_cfg, seed)
        self.crop = cfg.crop
        self.prior_cfg = prior_cfg
        self.views = tuple(views)
        self.seed = seed
        self.repeat = repeat
        self.need_target = need_target
        shuffled = self.transform is not None and self.transform.control == "shuffle"
        self.shuffle = self.transform.order(len(self.samples), training=True) if shuffled else None
        sides = {s.id: min(image_size(s.input)) for s in self.samples}
        small = [sid for sid, side in sides.items() if side < self.crop]
        if small:
            fits = min(sides.values()) // 8 * 8 or min(sides.values())
            raise PtgError(f"{len(small)} of {len(self.samples)} training image(s) are smaller than the crop {self.crop} "
                           f"(first ids: {', '.join(small[:5])}; the smallest side is {min(sides.values())} px): "
                           f"train with --crop {fits} (or drop those rows from the manifest)")
        self.guard = guard

    def __len__(self) -> int:
        return len(self.samples) * self.repeat

    def draw(self, epoch: int, index: int, h: int, w: int) -> tuple[int, int, str, np.random.Generator]:
        """The crop's top-left corner and view of sample ``index`` in ``epoch`` (for an h×w image),
        and the generator positioned after those draws (it then draws the prior regularisers)."""
        rng = np.random.default_rng([self.seed, epoch, index])
        top = int(rng.integers(0, h - self.crop + 1))
        left = int(rng.integers(0, w - self.crop + 1))
        view = self.views[int(rng.integers(0, len(self.views)))]
        return top, left, view, rng

    def fields(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """The shape and dtype of each of one sample's tensors (every crop has the size ``data.crop``,
        every prior its store's dim): the layout of a batch slot of `ptg.ptgrm.train.ring.BatchRing`.

        ``x``, ``y``: uint8 H×W×C crops still to be turned (raw), else float32 C×H×W; ``y`` is empty
        (0 values) when some sample has no target and the loss needs none. ``prior<i>``: store i's
        vector. ``view``: the crop's index into `VIEW_CODES` (raw only). ``ihat``: F's cached output.
        """
        c = self.crop
        image = ((c, c, 3), torch.uint8) if self.raw else ((3, c, c), torch.float32)
        with_y = self.need_target or all(s.target is not None for s in self.samples)
        out = {"x": image, "y": image if with_y else ((0,), torch.float32)}
        out.update({f"prior{i}": ((t.dim,), torch.float32) for i, t in enumerate(self.tables)})
        if self.raw:
            out["view"] = ((), torch.int64)
        if self.f_outputs is not None:
            out["ihat"] = ((3, c, c), torch.float32)
        return out

    def fill(self, key: tuple[int, int], out: dict[str, np.ndarray]) -> None:
        """Write sample ``key`` = (epoch, index) into `out`: one sample's rows of a batch (numpy views,
        shaped as `fields` says). A crop is copied once, straight from the image (a view of the store's
        memory map, or the decoded file) into its row."""
        epoch, index = key
        row = index % len(self.samples)
        s = self.samples[row]
        x = self.images.array(s.input, keyed=True)  # store: a view of the memory map, nothing read yet
        h, w = x.shape[:2]
        c = self.crop
        top, left, view, rng = self.draw(epoch, index, h, w)
        self._put(out["x"], x[top : top + c, left : left + c], view)
        if s.target is not None:
            y = self.images.array(s.target)
            if y.shape != (h, w, 3):
                raise PtgError(f"sample {s.id!r}: target {s.target} is {y.shape[1]}x{y.shape[0]} but the input is {w}x{h}")
            if out["y"].size:  # empty when some other sample has no target (and the loss needs none)
                self._put(out["y"], y[top : top + c, left : left + c], view)
        elif self.need_target:
            raise PtgError(f"sample {s.id!r} (line {s.line}) has no target; supervised losses need one (or use loss.kind=zero-dce)")
        priors = _prior_vectors(self.tables, row, view, (h, w, top, left, c, c), self.prior_cfg, self.shuffle, rng,
                                self.transform)
        for i, g in enumerate(priors):
            out[f"prior{i}"][...] = g.numpy()
        if self.raw:  # the crops left unturned: `to_float` applies the view on the device
            out["view"][...] = VIEW_CODES.index(view)
        if self.f_outputs is not None:  # F's output of this view, cut at the same box, in the same view
            ihat = self.f_outputs.array(s, view, box=(top, left, c))  # float32, the conversion eval uses too
            write_float(out["ihat"], apply_view(ihat, view))

    def _put(self, out: np.ndarray, crop: np.ndarray, view: str) -> None:
        if self.raw:  # uint8 H×W×C, unturned (`to_float` turns it): the one copy, whole rows of the map
            np.copyto(out, crop)
        else:
            write_float(out, apply_view(crop, view))

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        """One sample as a dict: ``x``, ``y``, ``priors`` (a list, one per store), ``view`` (raw), ``ihat``."""
        item = {name: torch.empty(shape, dtype=dtype) for name, (shape, dtype) in self.fields().items()}
        self.fill(key, {name: t.numpy() for name, t in item.items()})
        item["priors"] = [item.pop(f"prior{i}") for i in range(len(self.tables))]
        return item


class ValDataset(Dataset):
    """Whole validation images (or centre crops) with the identity view's raw prior; no randomness.

    The priors are returned raw, already reordered by the control (under shuffle image i gets
    image ``order[i]``'s prior, as `ptg eval` does over its set); `Restorer.restore` transforms them.
    """

    def __init__(self, samples: Sequence[Sample], tables: Sequence[PriorTable], order: np.ndarray | None = None,
                 crop: int = 0, guard: "InputGuard | None" = None, images: ImageSource | None = None,
                 f_outputs: Any = None):
        self.samples = list(samples)
        self.f_outputs = f_outputs  # cached Ihat: returned as channels 3..5 of "x" (see `ptg.ptgrm.models.cached_f`)
        self.guard = guard
        self.images = images if images is not None else ImageSource(keyed_guard=guard)
        self.tables = list(tables)
        self.order = np.arange(len(self.samples)) if order is None else order
        self.crop = crop

    def __len__(self) -> int:
        return len(self.samples)

    def _centre(self, img: np.ndarray) -> np.ndarray:
        if not self.crop:
            return img
        h, w = img.shape[:2]
        c_h, c_w = min(self.crop, h), min(self.crop, w)
        t, l = (h - c_h) // 2, (w - c_w) // 2
        return img[t : t + c_h, l : l + c_w]

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        x = self._centre(self.images.array(s.input, keyed=True))
        y = to_tensor(self._centre(self.images.array(s.target))) if s.target is not None else torch.zeros(0)
        # The identity prior describes the whole image, which is what is restored here.
        j = int(self.order[index])
        priors = [torch.from_numpy(t.vectors["identity"][j].copy()) for t in self.tables]
        xt = to_tensor(x)
        if self.f_outputs is not None:
            xt = torch.cat([xt, to_tensor(self._centre(self.f_outputs.array(s)))])
        return {"x": xt, "y": y, "priors": priors, "index": index}
