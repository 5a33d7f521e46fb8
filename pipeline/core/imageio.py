"""Image reading and writing, in one place.

Policy (every stage goes through these functions, so it holds everywhere):
- Images are float32 arrays, H×W×C, values in [0, 1]. 8-bit files are divided by 255, 16-bit
  files (PNG, TIFF) by 65535.
- Gray inputs: with ``channels=3`` (the default) a gray image is replicated to three equal
  channels; with ``channels=None`` it stays H×W×1.
- Alpha is discarded, never composited: restoration pairs carry no meaningful transparency, and
  compositing onto a colour would invent pixel values.
- A file that cannot be decoded (corrupt, truncated, not an image) raises `PtgError` naming it;
  so does a float file (``.npy``, float TIFF) holding NaN or Inf: a non-finite pixel would turn
  into a black or saturated output without any error.
- EXIF orientation is applied on read (JPEG, PNG, WebP through Pillow's ``exif_transpose``; TIFF
  through its Orientation tag): every stage sees the photo upright, as a viewer shows it. Written
  files carry no orientation tag: their pixels are already upright, so a viewer shows the same.
- Writing rounds to integers the way BasicSR's ``tensor2img`` does: clip to [0, 1], scale, round.
- A file is input a teammate may have crafted: every decoder (Pillow formats, TIFF with all its
  pages, NPY) checks the size its header declares against one pixel limit
  (`limits.check_pixels`, ``PTG_MAX_PIXELS``) before it allocates, and TIFF files are read as
  single files: OME/multi-file references to other files are never followed.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import PtgError
from .fsio import atomic_write_bytes, file_sha256  # noqa: F401  (re-exported: the key of an image's row in a priors store)
from .limits import check_pixels

# tifffile flags: never open the other files an OME-TIFF or multi-file series names (they may lie
# outside the data root), read this file's own pages only.
_TIFF_SINGLE = {"_multifile": False, "is_ome": False}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy")
_TIFF = (".tif", ".tiff")
ORIENTATION_TAG = 0x0112  # EXIF/TIFF Orientation: 1 upright; 5-8 swap height and width


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an H×W[×C] array, as Pillow's ``exif_transpose`` does."""
    ops = {
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transpose
        6: lambda a: np.rot90(a, -1),  # stored rotated 90 counter-clockwise
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # transverse
        8: lambda a: np.rot90(a, 1),  # stored rotated 90 clockwise
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(arr)) if op else arr


def _tiff_orientation(tf) -> int:
    tag = tf.pages[0].tags.get(ORIENTATION_TAG)
    return int(tag.value) if tag is not None else 1


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _decode_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path, **_TIFF_SINGLE) as tf:
        page = tf.pages[0]
        h, w, spp = int(page.imagelength), int(page.imagewidth), max(1, int(page.samplesperpixel))
        check_pixels(path, h, w)
        elements = int(np.prod(tf.series[0].shape, dtype=np.int64))
        check_pixels(path, h, w, pages=max(1, elements // max(1, h * w * spp)))  # every page it would stack
        arr = tf.asarray()
        orientation = _tiff_orientation(tf)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W) layout
    return _orient(arr, orientation)


def _decode_pil(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        check_pixels(path, im.height, im.width)  # before decoding: the header may lie about nothing else
        im.load()  # decode now, so a truncated file fails here and not later
        im = ImageOps.exif_transpose(im)  # upright, as viewers show it (module policy)
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            return np.asarray(im, dtype=np.uint16) if im.mode != "I" else np.asarray(im).astype(np.int64)
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("CMYK", "YCbCr", "HSV", "LAB", "1"):
            im = im.convert("RGB" if im.mode != "1" else "L")
        return np.asarray(im)


def _npy_shape(path: Path) -> tuple[int, ...]:
    """The shape an ``.npy`` header declares, read without touching the array."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return tuple(shape)


def _check_npy_header(path: Path) -> None:
    shape = _npy_shape(path)
    if len(shape) not in (2, 3) or (len(shape) == 3 and shape[-1] > 4):
        raise PtgError(f"unsupported image shape {shape} in {path}: expected H×W or H×W×C with C <= 4")
    check_pixels(path, int(shape[0]), int(shape[1]))


def read_image(path: str | Path, channels: int | None = 3) -> np.ndarray:
    """Read an image file as float32 H×W×C in [0, 1].

    Args:
        path: the file.
        channels: 3 to always return RGB (gray replicated), None to keep 1 or 3 channels.

    Raises:
        PtgError: the file is missing, unreadable, or not a decodable image.
    """
    path = Path(path)
    if not path.is_file():
        raise PtgError(f"image not found: {path}")
    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":  # SNR-Aware's SID release stores frames as arrays
            _check_npy_header(path)
            arr = np.load(path, allow_pickle=False)
        else:
            arr = _decode_tiff(path) if suffix in _TIFF else _decode_pil(path)
    except PtgError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PtgError(f"cannot decode image {path}: {exc}. Is the file corrupt or truncated?") from exc
    except Exception as exc:  # tifffile raises its own types for broken files
        raise PtgError(f"cannot decode image {path}: {exc}") from exc

    if arr.dtype == np.uint8:
        scale = 255.0
    elif arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        scale = 65535.0
    elif arr.dtype.kind in "iu":
        scale = 255.0
    elif arr.dtype.kind == "f":
        scale = 1.0
    else:
        raise PtgError(f"unsupported pixel type {arr.dtype} in {path}; save it as 8- or 16-bit PNG")
    img = arr.astype(np.float32) / np.float32(scale)
    if arr.dtype.kind == "f" and not np.isfinite(img).all():
        bad = int((~np.isfinite(img)).sum())
        raise PtgError(f"image {path} holds {bad} non-finite value(s) (NaN or Inf); fix or re-export the file "
                       "(e.g. np.nan_to_num) or leave it out of the manifest")

    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4):
        raise PtgError(f"unsupported image shape {arr.shape} in {path}: expected gray or RGB(A)")
    if img.shape[-1] in (2, 4):  # gray+alpha or RGBA: alpha discarded (module policy)
        img = img[..., :-1]
    if channels == 3 and img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    elif channels not in (None, 3):
        raise ValueError(f"channels must be 3 or None, got {channels!r}")
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0))


def to_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] float → uint8 exactly as BasicSR's ``tensor2img``: clip, ×255, round."""
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def write_image(path: str | Path, img: np.ndarray, bits: int = 8) -> Path:
    """Write a float [0, 1] H×W×C (C = 1 or 3) or H×W image as PNG/JPEG/TIFF, 8 or 16 bits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if bits == 8:
        data = to_uint8(img) if img.dtype != np.uint8 else img
    elif bits == 16:
        data = (np.clip(img, 0.0, 1.0) * 65535.0).round().astype(np.uint16)
    else:
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    buf = io.BytesIO()  # encoded in memory, then written atomically: a symlink planted at `path` is replaced, never followed
    if path.suffix.lower() in _TIFF:
        import tifffile

        tifffile.imwrite(buf, data)
    elif bits == 16:
        if data.ndim != 2:
            raise PtgError(f"16-bit RGB is written as TIFF only; use a .tif name instead of {path.name}")
        Image.fromarray(data).save(buf, format=_pil_format(path))
    else:
        Image.fromarray(data).save(buf, format=_pil_format(path))
    return atomic_write_bytes(path, buf.getvalue())


def _pil_format(path: Path) -> str:
    """Pillow's format name for a file name (it cannot guess one when saving to a buffer)."""
    from PIL import Image as _I

    _I.init()
    fmt = _I.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise PtgError(f"cannot write {path.name}: unknown image suffix; use .png, .jpg or .tif")
    return fmt


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image without decoding its pixels where the format allows."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            shape = _npy_shape(path)
            return shape[0], shape[1]
        if path.suffix.lower() in _TIFF:
            import tifffile

            with tifffile.TiffFile(path, **_TIFF_SINGLE) as tf:
                shape = tf.pages[0].shape
                orientation = _tiff_orientation(tf)
            hw = (shape[1], shape[2]) if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4) else (shape[0], shape[1])
        else:
            with Image.open(path) as im:
                # Pillow's PNG getexif decodes the whole image to reach metadata stored after the pixels;
                # when there is none (`_png_meta_after_pixels`), the header's own metadata is all of it
                cheap = im.format == "PNG" and not _png_meta_after_pixels(path)
                exif = Image.Image.getexif(im) if cheap else im.getexif()
                hw, orientation = (im.height, im.width), exif.get(ORIENTATION_TAG, 1)
        return (hw[1], hw[0]) if orientation in (5, 6, 7, 8) else hw  # as `read_image` returns it
    except Exception as exc:
        raise PtgError(f"cannot read image header of {path}: {exc}") from exc


_PNG_META = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")  # chunks that can carry an orientation (EXIF, XMP)


def _png_meta_after_pixels(path: Path, max_chunks: int = 100_000) -> bool:
    """Whether a PNG holds an EXIF or text chunk after its first IDAT (read by chunk headers only,
    seeking over the pixel data). True when unsure (a damaged file: the exact, slower path decides)."""
    import struct

    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return True
        seen_pixels = False
        for _ in range(max_chunks):
            head = f.read(8)
            if len(head) < 8:
                return True
            n, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                return False
            seen_pixels = seen_pixels or kind == b"IDAT"
            if seen_pixels and kind in _PNG_META:
                return True
            f.seek(n + 4, 1)  # the chunk's data and CRC
    return True


_GRAY_MODES = ("1", "L", "LA", "La", "PA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def image_header(path: str | Path) -> tuple[int, int, int]:
    """(height, width, channels) as `read_image(path, channels=None)` would return them, from the header
    only (Pillow's lazy open, tifffile's first page, the NPY header): channels is 1 for gray files
    (alpha dropped), else 3."""
    path = Path(path)
    h, w = image_size(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            shape = _npy_shape(path)
            c = shape[2] if len(shape) == 3 else 1
        elif suffix in _TIFF:
            import tifffile

            with tifffile.TiffFile(path, **_TIFF_SINGLE) as tf:
                c = max(1, int(tf.pages[0].samplesperpixel))
        else:
            with Image.open(path) as im:
                c = 1 if im.mode in _GRAY_MODES else 3
    except Exception as exc:
        raise PtgError(f"cannot read image header of {path}: {exc}") from exc
    return h, w, 1 if c in (1, 2) else 3
