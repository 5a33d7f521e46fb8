import numpy as np
import pytest
import tifffile
from PIL import Image

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.imageio import file_sha256, image_size, read_image, to_uint8, write_image


def test_png8_roundtrip_exact(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")
    assert x.dtype == np.float32 and x.shape == (7, 9, 3)
    np.testing.assert_array_equal(to_uint8(x), img)
    write_image(tmp_path / "b.png", x)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), img)


def test_png16_and_tiff16(tmp_path):
    g = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    x = read_image(tmp_path / "g16.png", channels=None)
    assert x.shape == (2, 2, 1)
    np.testing.assert_allclose(x[..., 0], g / 65535.0, rtol=1e-6)
    rgb = np.stack([g, g // 2, g // 3], -1)
    tifffile.imwrite(tmp_path / "c.tif", rgb)
    y = read_image(tmp_path / "c.tif")
    np.testing.assert_allclose(y, rgb / 65535.0, rtol=1e-6)
    assert image_size(tmp_path / "c.tif") == (2, 2)


def test_gray_replicated_and_alpha_dropped(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(g).save(tmp_path / "g.png")
    x = read_image(tmp_path / "g.png")
    assert x.shape == (3, 4, 3) and np.all(x[..., 0] == x[..., 2])
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 7  # nearly transparent: alpha must not change the colour
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    y = read_image(tmp_path / "a.png")
    assert y.shape == (3, 4, 3) and np.allclose(y[..., 0], 200 / 255)


def test_jpeg_reads(tmp_path):
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg").shape == (8, 8, 3)


@pytest.mark.parametrize("content", [b"", b"not an image at all"])
def test_corrupt_file_names_it(tmp_path, content):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(PtgError, match="bad.png"):
        read_image(p)


def test_truncated_png_names_it(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(PtgError, match="t.png"):
        read_image(tmp_path / "t.png")


def test_missing_file(tmp_path):
    with pytest.raises(PtgError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_sha256_changes_with_bytes(tmp_path):
    (tmp_path / "a").write_bytes(b"abc")
    assert file_sha256(tmp_path / "a") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_npy_frames(tmp_path):
    arr = np.linspace(0, 1, 24, dtype=np.float32).reshape(2, 4, 3)
    np.save(tmp_path / "f.npy", arr)
    np.testing.assert_allclose(read_image(tmp_path / "f.npy"), arr)
    assert image_size(tmp_path / "f.npy") == (2, 4)


@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_non_finite_float_input_is_an_error_naming_the_file(tmp_path, suffix):
    img = np.full((4, 5, 3), 0.5, np.float32)
    img[1, 2, 0] = np.nan
    img[3, 3, 1] = np.inf
    path = tmp_path / f"bad{suffix}"
    np.save(path, img) if suffix == ".npy" else tifffile.imwrite(path, img)
    with pytest.raises(PtgError, match=rf"bad{suffix} holds 2 non-finite value"):
        read_image(path)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif"])
def test_exif_orientation_applied_on_read_matching_pillow(tmp_path, orientation, suffix):
    r, c = np.mgrid[0:6, 0:10]  # smooth and asymmetric: JPEG keeps it, every orientation changes it
    stored = np.stack([r * 40, c * 25, (r * c * 4) % 256], -1).astype(np.uint8)
    path = tmp_path / f"o{orientation}{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, stored, extratags=[(0x0112, 3, 1, orientation, True)])
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(stored).save(path, exif=exif, **({"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}))
    # the reference: Pillow's exif_transpose on the stored pixels
    ref_im = Image.fromarray(stored)
    ex = ref_im.getexif()
    ex[0x0112] = orientation
    ref_im.info["exif"] = ex.tobytes()
    from PIL import ImageOps

    expected = np.asarray(ImageOps.exif_transpose(ref_im))
    x = read_image(path)
    assert x.shape[:2] == expected.shape[:2] == image_size(path)
    if suffix == ".jpg":  # lossy: close to the upright pixels, far from the stored ones
        err = np.abs(to_uint8(x).astype(int) - expected).mean()
        assert err < 25 and (orientation == 1 or x.shape[:2] != stored.shape[:2]
                             or np.abs(to_uint8(x).astype(int) - stored).mean() > 2 * err)
    else:
        np.testing.assert_array_equal(to_uint8(x), expected)
    # written back upright, without a tag: reading the copy gives the same pixels
    write_image(tmp_path / "copy.png", x)
    np.testing.assert_array_equal(read_image(tmp_path / "copy.png"), x)
