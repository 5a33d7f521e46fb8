"""Fast cases of benchmarks/faults.py as tests: end-to-end through `extract_priors` and the CLI.

The full suite (random-moment kills, every injected point, training) is `benchmarks/faults.py`.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from ptg.cli.app import main
from ptg.pipeline.encoders import EncoderSpec
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.priors.extract import extract_priors
from ptg.pipeline.storage.store import ARRAY, COMMITS, DamagedShardWarning, open_priors, quick_health

from .test_extract import _all, _images, _manifest

torch.set_num_threads(1)
SPEC = EncoderSpec("imagenet", size=64)
KW = dict(rows_per_shard=4, batch_size=4, loader_workers=0)


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """8 images and an uninterrupted reference store of them (2 shards of 4 rows)."""
    root = tmp_path_factory.mktemp("faults")
    m = _manifest(root / "m.jsonl", _images(root / "img", 8, side=32))
    s = extract_priors(m, SPEC, out=root / "ref.zarr", **KW)
    return m, s.store, _all(s.store)


def _flip(path, offset):
    b = bytearray(path.read_bytes())
    b[offset % len(b)] ^= 0xFF
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("damage", ["flip data", "delete shard", "lose zarr.json"])
def test_damaged_store_is_refused_then_repaired_by_re_extraction(ref, tmp_path, damage):
    import shutil

    m, store, (rkeys, rvals) = ref
    s = tmp_path / "s.zarr"
    shutil.copytree(store, s)
    shard = s / ARRAY / "c" / "1" / "0" / "0"
    {"flip data": lambda: _flip(shard, 30), "delete shard": shard.unlink,
     "lose zarr.json": (s / "zarr.json").unlink}[damage]()
    with pytest.raises(PtgError, match=str(s)):
        _all(s)  # never a wrong value
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = extract_priors(m, SPEC, out=s, **KW)
    damaged = damage != "lose zarr.json"
    assert (again.computed, again.reused) == ((4, 4) if damaged else (0, 8))
    assert any(issubclass(w.category, DamagedShardWarning) for w in caught) == damaged
    keys, vals = _all(s)
    assert keys == rkeys and vals.tobytes() == rvals.tobytes()
    assert open_priors(s).verify() == [] and quick_health(s)["problems"] == []
    if damaged:
        assert len(list((s / COMMITS / "quarantine").iterdir())) == 1  # the bad record is kept for inspection


def test_kill_after_shard_data_before_commit_then_rerun_is_identical(ref, tmp_path):
    m, _, (rkeys, rvals) = ref
    script = textwrap.dedent(f"""
        import os, signal, sys, torch
        torch.set_num_threads(1)
        import ptg.pipeline.storage.shardstore as engine
        from ptg.pipeline.encoders import EncoderSpec
        from ptg.pipeline.priors.extract import extract_priors
        orig = engine.write_commit  # the storage engine's commit step, shared by every store
        engine.write_commit = lambda st, i, rec: os.kill(os.getpid(), signal.SIGKILL) if i == 1 else orig(st, i, rec)
        extract_priors(sys.argv[1], EncoderSpec("imagenet", size=64), out=sys.argv[2], **{KW!r})
    """)
    s = tmp_path / "s.zarr"
    proc = subprocess.run([sys.executable, "-c", script, str(m), str(s)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert set(int(p.stem[6:]) for p in (s / COMMITS).glob("shard-*.json")) == {0}  # shard 1 written, not committed
    again = extract_priors(m, SPEC, out=s, **KW)
    assert (again.reused, again.computed) == (4, 4)
    keys, vals = _all(s)
    assert keys == rkeys and vals.tobytes() == rvals.tobytes()


def test_second_writer_refused_while_the_first_holds_the_lock(ref, tmp_path):
    m, _, _ = ref
    s = tmp_path / "s.zarr"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from ptg.pipeline.storage.store import writer_lock
        with writer_lock(Path({str(s)!r})):
            print("held", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PtgError, match=rf"in use by pid {holder.pid}"):
            extract_priors(m, SPEC, out=s, **KW)
    finally:
        holder.stdin.close()
        holder.wait()
    assert extract_priors(m, SPEC, out=s, **KW).computed == 8  # released with its holder


def test_failed_first_extraction_does_not_block_another_encoder(tmp_path, capsys):
    imgs = _images(tmp_path / "img", 3, side=32)
    bad = tmp_path / "img" / "broken.png"
    bad.write_bytes(imgs[0].read_bytes()[:60])
    m_bad = _manifest(tmp_path / "bad.jsonl", imgs + [bad])
    out = tmp_path / "s.zarr"
    with pytest.raises(PtgError, match=r"no shard holding one was written \(0 other shard\(s\) were committed"):
        extract_priors(m_bad, SPEC, out=out, **KW)
    m = _manifest(tmp_path / "m.jsonl", imgs)
    other = EncoderSpec("imagenet", size=64, random_init=True, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = extract_priors(m, other, out=out, **KW)
        assert s.computed == 3 and open_priors(out).random_init


def test_extract_out_refuses_an_unrelated_folder_and_deletes_nothing(ref, tmp_path, capsys):
    m, _, _ = ref
    d = tmp_path / "mine"
    (d / "priors").mkdir(parents=True)
    (d / "priors" / "important.txt").write_text("keep")
    args = ["extract-priors", "-m", str(m), "--out", str(d), "--size", "64", "--loader-workers", "0"]
    assert main(args) == 1
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 1  # forced, but priors/ holds a file ptg did not write
    assert (d / "priors" / "important.txt").read_text() == "keep"


def test_nan_input_stops_extraction_naming_the_file(tmp_path):
    x = np.full((32, 32, 3), 0.5, np.float32)
    x[3, 3, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    m = _manifest(tmp_path / "m.jsonl", [tmp_path / "nan.npy"])
    with pytest.raises(PtgError, match=r"nan.npy holds 1 non-finite value"):
        extract_priors(m, SPEC, out=tmp_path / "s.zarr", **KW)


def test_priors_info_shows_health_and_fails_on_damage(ref, tmp_path, capsys):
    import shutil

    _, store, _ = ref
    s = tmp_path / "s.zarr"
    shutil.copytree(store, s)
    assert main(["priors", "info", str(s)]) == 0
    assert "health" in capsys.readouterr().out
    (s / ARRAY / "c" / "0" / "0" / "0").write_bytes(b"")
    assert main(["priors", "info", str(s)]) == 1
    out = capsys.readouterr()
    assert "shard 0: 0 bytes on disk" in out.out and "extract-priors" in out.err
    assert json.loads((s / "settings.json").read_text())["rows_per_shard"] == 4


def test_a_partial_fault_run_refreshes_its_rows_and_keeps_the_others(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("faults", Path(__file__).parents[1] / "benchmarks" / "faults.py")
    faults = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faults)
    recorded = tmp_path / "faults.json"
    recorded.write_text(json.dumps({"meta": {}, "cases": {"a": {"passed": 1}, "b": {"passed": 1}}}))
    assert faults.with_recorded({"b": {"passed": 0}}, "b", recorded) == {"a": {"passed": 1}, "b": {"passed": 0}}
    assert faults.with_recorded({"b": {"passed": 0}}, None, recorded) == {"b": {"passed": 0}}  # a full run: its own
