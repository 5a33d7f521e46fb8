"""F's constructor arguments reach `ptg extract-outputs` and its cache fingerprint.

FFDNet given another σ map computes another output from the same weights: a cache made at σ 25
must not pass for one at σ 30.
"""
from __future__ import annotations

import pytest

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.f_outputs import f_fingerprint
from ptg.ptgrm.frozen_f import build_frozen_f
from ptg.ptgrm.train.config import parse_set


def _f(*args: str):
    """F as `ptg extract-outputs --baseline ffdnet --baseline-arg ...` builds it."""
    return build_frozen_f("ffdnet", None, parse_set(list(args), "--baseline-arg", "key=value (e.g. --baseline-arg sigma=30)"))


def test_ffdnet_sigma_changes_the_fingerprint_and_the_weights_do_not_move():
    a = _f("pretrained=true", "sigma=30")
    b = _f("pretrained=true", "sigma=25")
    assert a.config.sigma == 30.0 and b.config.sigma == 25.0
    for (ka, ta), (kb, tb) in zip(sorted(a.state_dict().items()), sorted(b.state_dict().items())):
        assert ka == kb and ta.equal(tb)  # the same real weights ...
    assert f_fingerprint("ffdnet", a) != f_fingerprint("ffdnet", b)  # ... yet another F
    assert f_fingerprint("ffdnet", a) == f_fingerprint("ffdnet", _f("pretrained=true", "sigma=30"))


def test_a_bad_baseline_arg_is_a_named_error():
    with pytest.raises(PtgError, match="--baseline-arg .sigma. must look like key=value"):
        _f("sigma")


def test_an_unknown_baseline_arg_names_the_argument():
    with pytest.raises(PtgError, match="sigmaa"):
        _f("sigmaa=30")
