"""Inference memory: a budget parsed from the user, an estimate that is not below the real peak,
and automatic tiling (with a warning) instead of a raw allocation error."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from ptg.pipeline.core.errors import PtgError
from ptg.ptgrm.infer import Restorer, memory_budget, plan_tile, restore_image, run_padded_tiled
from ptg.ptgrm.models import create_model
from ptg.ptgrm.priors import PriorTransform

torch.set_num_threads(1)


def _restorer() -> Restorer:
    torch.manual_seed(0)
    f = create_model("unet", width=8)
    r = create_model("ptgrm", prior_dims=(16,))
    t = PriorTransform.fit([16], "l2", "real", 0, [np.random.default_rng(0).random((4, 16), dtype=np.float32)])
    return Restorer(f, r, t).eval()


def test_memory_budget_parses_sizes_and_names_bad_ones():
    assert memory_budget("8GiB") == 8 * 2**30
    assert memory_budget("500 MB") == 500 * 10**6
    assert memory_budget("1.5g") == int(1.5 * 2**30)
    assert memory_budget("auto", "cpu") > 0
    with pytest.raises(PtgError, match=r"--max-memory '8 parsecs' is not a size; use auto or e.g. 8GiB"):
        memory_budget("8 parsecs")
    with pytest.raises(PtgError, match="must be positive"):
        memory_budget("0MiB")


def test_plan_tile_picks_the_largest_fitting_multiple():
    assert plan_tile(1000.0, 100, 100, 4, 32, 10**8) is None  # fits whole
    side = plan_tile(1000.0, 4000, 4000, 4, 32, 10**8)
    assert side % 4 == 0 and 1000.0 * side * side <= 10**8 < 1000.0 * (side + 4) ** 2
    with pytest.raises(PtgError, match="even a 68-pixel tile exceeds the memory budget"):
        plan_tile(1000.0, 4000, 4000, 4, 32, 10**6)


def test_over_budget_image_is_tiled_with_a_warning_and_equals_that_tiling():
    rest = _restorer()
    x = torch.rand(1, 3, 96, 128)
    g = [torch.rand(1, 16)]
    with pytest.warns(UserWarning, match=r"photo.png \(128x96\) needs about .* restoring it in \d+-pixel tiles"):
        outs, tile = restore_image(rest, x, g, overlap=8, budget=2 * 2**20, name="photo.png")
    assert tile is not None and tile < 128
    ref = run_padded_tiled(lambda t: rest.restore(t, g), x, rest.multiple, tile, 8)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref))
    whole, none = restore_image(rest, x, g, budget=2**34)  # fits: untiled, no warning
    assert none is None
    assert torch.equal(whole[1], run_padded_tiled(lambda t: rest.restore(t, g), x, rest.multiple)[1])


def test_allocation_failure_is_a_clear_error(monkeypatch):
    rest = _restorer()

    def boom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr("ptg.ptgrm.infer.run_padded_tiled", boom)
    with pytest.raises(PtgError, match=r"out of memory restoring big.png \(64x64\): pass a smaller --tile"):
        restore_image(rest, torch.rand(1, 3, 64, 64), [torch.rand(1, 16)], name="big.png")


def test_estimate_is_not_below_the_real_peak():
    """The peak resident-set growth of a real 512² restore (fresh process) stays under the estimate."""
    code = textwrap.dedent("""
        import torch, numpy as np
        torch.set_num_threads(1)
        from ptg.ptgrm.infer import Restorer, bytes_per_pixel, run_padded_tiled
        from ptg.ptgrm.models import create_model
        from ptg.ptgrm.priors import PriorTransform
        t = PriorTransform.fit([16], "l2", "real", 0, [np.ones((2, 16), dtype=np.float32)])
        rest = Restorer(create_model("unet"), create_model("ptgrm", prior_dims=(16,)), t).eval()
        g = [torch.rand(1, 16)]
        fn = lambda x: rest.restore(x, g)
        bpp = bytes_per_pixel(fn, rest.multiple, rest, "cpu")
        x = torch.rand(1, 3, 512, 512)

        def status(field):
            line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
            return int(line.split()[1]) * 1024

        open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current resident set
        before = status("VmRSS")
        run_padded_tiled(fn, x, rest.multiple)
        print(status("VmHWM") - before, bpp * 512 * 512)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    grew, estimate = float(out[0]), float(out[1])
    assert 0 < grew <= estimate, (grew, estimate)
