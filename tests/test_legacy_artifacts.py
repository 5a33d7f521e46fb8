"""Old artifacts still load: a run, an export and a student written by an earlier ptg (see
`tests/fixtures/legacy/made_by.txt` for the commit) restore bit-identically with today's code."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.pipeline.imageio import read_image
from ptg.ptgrm.artifacts import load, load_student
from ptg.ptgrm.infer import image_to_tensor, run_padded_tiled

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
IDS = ("chelsea", "coffee")


@pytest.fixture(scope="module")
def expected():
    with np.load(LEGACY / "expected.npz") as z:
        return dict(z)


@pytest.mark.parametrize("name", ["run", "export"])
def test_an_old_run_and_export_restore_bit_identically(expected, name):
    r, _ = load(LEGACY / name)
    for sid in IDS:
        x = image_to_tensor(read_image(LEGACY / "inputs" / f"{sid}.png"))
        prior = torch.from_numpy(np.load(LEGACY / "inputs" / f"{sid}.prior.npy"))
        ihat, ibar = run_padded_tiled(lambda t: r.restore(t, [prior]), x, r.multiple)
        np.testing.assert_array_equal(ihat.numpy(), expected[f"{sid}.{name}.f"])
        np.testing.assert_array_equal(ibar.numpy(), expected[f"{sid}.{name}.r"])


@pytest.mark.parametrize("folder", ["student", "export/students/0"])
def test_an_old_student_gives_the_same_priors(expected, folder):
    student = load_student(LEGACY / folder)
    for sid in IDS:
        x = image_to_tensor(read_image(LEGACY / "inputs" / f"{sid}.png"))
        np.testing.assert_array_equal(student(x).numpy(), expected[f"{sid}.student_prior"])
