"""Old artifacts still load: a run, an export and a student written by an earlier ptg (see
`tests/fixtures/legacy/made_by.txt` for the commit) restore with today's code to the last bits of
float32 (`same_bits`): the outputs of the old code on the machine that wrote the fixture.

Bit equality across machines is not a property of the code: on an AMD EPYC host (2026-12-02) the
very same code and files gave outputs differing by 1 float32 ulp in 18 % of F's pixels (max |Δ|
1.19e-7; the same with torch 2.13.0, 2.14.0 and 2.14.1, oneDNN off, one thread), where the fixture's
host had matched bit for bit. Any change to weights, keys or layers moves outputs by orders more."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.pipeline.core.imageio import read_image
from ptg.ptgrm.artifacts import load, load_student
from ptg.ptgrm.infer import image_to_tensor, run_padded_tiled

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
ATOL = 2.0**-21  # 4 float32 ulps at 1.0: kernel rounding on another CPU, nothing a code change could stay under
IDS = ("chelsea", "coffee")


def same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=ATOL)


@pytest.fixture(scope="module")
def expected():
    with np.load(LEGACY / "expected.npz") as z:
        return dict(z)


@pytest.mark.parametrize("name", ["run", "export"])
def test_an_old_run_and_export_restore_to_float32_rounding(expected, name):
    r, _ = load(LEGACY / name)
    for sid in IDS:
        x = image_to_tensor(read_image(LEGACY / "inputs" / f"{sid}.png"))
        prior = torch.from_numpy(np.load(LEGACY / "inputs" / f"{sid}.prior.npy"))
        ihat, ibar = run_padded_tiled(lambda t: r.restore(t, [prior]), x, r.multiple)
        same_bits(ihat.numpy(), expected[f"{sid}.{name}.f"])
        same_bits(ibar.numpy(), expected[f"{sid}.{name}.r"])


@pytest.mark.parametrize("folder", ["student", "export/students/0"])
def test_an_old_student_gives_the_same_priors(expected, folder):
    student = load_student(LEGACY / folder)
    for sid in IDS:
        x = image_to_tensor(read_image(LEGACY / "inputs" / f"{sid}.png"))
        same_bits(student(x).numpy(), expected[f"{sid}.student_prior"])
