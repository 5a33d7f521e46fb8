"""`ptg.pipeline.priors.normalize`: one list of normalisations, one default, one floor, one ridge read-out,
shared by the trainer's prior transform, `ptg distill` and `ptg priors probe`."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.normalize import (DEFAULT_NORMALIZE, NORMALIZE, check_normalize, floor_std, normalize_rows, ridge_r2,
                                    row_norms, standardize_stats)
from ptg.pipeline.priors.probe import NORMALIZATIONS
from ptg.ptgrm.artifacts.student import Normalizer
from ptg.ptgrm.distill import DistillConfig
from ptg.ptgrm.priors import PriorTransform
from ptg.ptgrm.train.config import PRIOR_NORMALIZE, PriorConfig


def test_one_list_and_one_default_everywhere():
    assert NORMALIZATIONS == PRIOR_NORMALIZE == NORMALIZE and DEFAULT_NORMALIZE in NORMALIZE
    assert PriorConfig().normalize == DistillConfig("p", "m", "o").normalize == PriorTransform((4,)).normalize \
        == DEFAULT_NORMALIZE
    with pytest.raises(PtgError, match="priors.normalize='zscore' is not one of none, l2, standardize"):
        check_normalize("zscore")


def test_row_norms_are_one_dot_product_per_row_in_float32():
    x = np.random.default_rng(0).normal(size=(5, 3, 37)).astype(np.float32)
    want = np.array([np.sqrt(np.dot(v, v)) for v in x.reshape(-1, 37)], np.float32).reshape(5, 3, 1)
    assert row_norms(x).dtype == np.float32 and np.array_equal(row_norms(x), want)
    assert row_norms(np.zeros((1, 4), np.float32))[0, 0] == np.float32(1e-12)


def test_a_constant_dimension_is_centred_not_divided_and_every_user_floors_alike():
    rows = np.random.default_rng(1).normal(size=(9, 4)).astype(np.float32)
    rows[:, 2] = 3.0  # never varies
    mean, std = standardize_stats(rows)
    assert std[2] == 1.0 and np.allclose(mean, rows.astype(np.float64).mean(0))
    z = normalize_rows(rows.astype(np.float64), "standardize", rows)
    assert np.allclose(z[:, 2], 0.0) and np.allclose(z.std(0)[[0, 1, 3]], 1.0)
    t = PriorTransform.fit((4,), "standardize", "real", 0, [rows])
    student = Normalizer.fit("standardize", rows)
    assert float(t.std[0][2]) == 1.0 and float(student.std[2]) == 1.0
    np.testing.assert_allclose(t.std[0].numpy(), std, rtol=1e-6)  # trainer and student share the statistics
    np.testing.assert_allclose(student.std.numpy(), std, rtol=1e-6)
    assert np.array_equal(floor_std(np.array([0.0, 1e-9, 0.5])), np.array([1.0, 1.0, 0.5]))


def test_l2_of_the_transform_is_the_shared_one():
    g = torch.from_numpy(np.random.default_rng(2).normal(size=(3, 16)).astype(np.float32))
    out = PriorTransform((16,), "l2")([g])[0]
    assert torch.equal(out, g / torch.from_numpy(row_norms(g.numpy())))


def test_ridge_reads_a_linear_field_and_refuses_constant_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    y = x @ rng.normal(size=6)
    assert ridge_r2(x[:30], y[:30], x[30:], y[30:], alpha=1e-3) > 0.99
    assert ridge_r2(x[:30], y[:30], x[30:], np.ones(10)) is None
