import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.metrics import psnr, rgb_to_y, ssim
from tests.conftest import small_photo


@pytest.fixture
def pair():
    clean = small_photo("astronaut", 64)
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).round().astype(np.uint8)
    return noisy, clean


def test_psnr_rgb_matches_skimage(pair):
    a, b = pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=255), abs=1e-10)


def test_ssim_matches_skimage_gaussian(pair):
    a, b = pair
    ref = structural_similarity(b, a, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)


def test_float_inputs_rounded_to_uint8_first(pair):
    a, b = pair
    af = a / 255.0 + 0.4 / 255.0  # rounds back to a
    assert psnr(af, b) == psnr(a, b)


def test_y_channel_matlab_formula():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0]]], np.float64)
    y = rgb_to_y(rgb)[..., 0]
    # MATLAB rgb2ycbcr: Y of pure red/green/blue/white/black
    np.testing.assert_allclose(y, [[16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0]], atol=1e-9)
    assert rgb_to_y(np.full((1, 1, 3), 100.0), matlab_round=True)[0, 0, 0] == np.round(16 + 219 * 100 / 255)


def test_y_psnr_peak_255_float_y(pair):
    a, b = pair
    ya, yb = rgb_to_y(a.astype(np.float64)), rgb_to_y(b.astype(np.float64))
    expected = 10 * np.log10(255**2 / np.mean((ya - yb) ** 2))
    assert psnr(a, b, y_channel=True) == pytest.approx(expected, abs=1e-10)


def test_crop_border_removes_pixels_first(pair):
    a, b = pair
    a2 = a.copy()
    a2[:4] = 0  # damage only the border
    assert psnr(a2, b, crop_border=4) == psnr(a, b, crop_border=4) < 100
    assert psnr(a2, b) < psnr(a, b)
    assert ssim(a2, b, crop_border=4) == ssim(a, b, crop_border=4)


def test_identical_and_errors(pair):
    a, _ = pair
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    with pytest.raises(PtgError, match="shapes differ"):
        psnr(a, a[:-1])
    with pytest.raises(PtgError, match="crop_border"):
        psnr(a, a, crop_border=40)
