"""Crash safety: SIGKILL an extraction midway, run it again, get exactly an uninterrupted run's store."""
from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import torch

from ptg.pipeline.encoders import EncoderSpec
from ptg.pipeline.priors.extract import extract_priors
from ptg.pipeline.storage.store import COMMITS, open_priors

from .test_extract import _all, _images, _manifest

torch.set_num_threads(1)


KILL_SCRIPT = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from ptg.pipeline.encoders import EncoderSpec
    from ptg.pipeline.priors.extract import extract_priors
    extract_priors(sys.argv[1], EncoderSpec("imagenet", size=96), out=sys.argv[2], rows_per_shard=16, batch_size=8,
                   loader_workers=0, views="flips")
""")


def test_sigkill_midway_then_rerun_equals_uninterrupted_run(tmp_path):
    imgs = _images(tmp_path / "img", 48, side=32)
    m = _manifest(tmp_path / "m.jsonl", imgs)
    killed = tmp_path / "killed.zarr"
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(m), str(killed)])
    deadline = time.time() + 120
    commits = killed / COMMITS
    while proc.poll() is None and time.time() < deadline:
        if commits.is_dir() and any(commits.glob("shard-*.json")):
            break  # kill right after the first commit, while the next shard is being computed
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list((killed / COMMITS).glob("shard-*.json")))
    assert 1 <= done < 3, f"the kill should land midway; {done} of 3 shards were committed"
    assert (killed / "writer.lock").exists()  # the killed writer's lock is left behind, and taken over below

    resumed = extract_priors(m, EncoderSpec("imagenet", size=96), out=killed, batch_size=8, loader_workers=0, views="flips")
    assert resumed.reused == 16 * done and resumed.computed == 48 - 16 * done
    clean = extract_priors(m, EncoderSpec("imagenet", size=96), out=tmp_path / "clean.zarr", rows_per_shard=16, batch_size=8,
                           loader_workers=0, views="flips")
    assert clean.computed == 48
    k1, v1 = _all(killed)
    k2, v2 = _all(clean.store)
    assert k1 == k2
    np.testing.assert_array_equal(v1, v2)  # exactly the values of an uninterrupted run
    assert open_priors(killed).verify() == []


