"""The one weights reader (`ptg.pipeline.core.weights`) and the bounded spandrel path (issue 34,
item 1): crafted F files of a few KB that would make ptg allocate gigabytes end in one named line,
through `ptg models inspect`, `ptg train --baseline spandrel` and `ptg eval --run` of a teammate's
run — each checked to stay far below 1.5 GB and to print no traceback."""
from __future__ import annotations

import resource
import struct
import time
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from ptg.cli.app import main
from ptg.pipeline.core import limits
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.weights import read_state_dict, read_weights, state_dict_of

torch.set_num_threads(1)
GB = 1 << 30


def _rss_peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (Linux reports KiB)


class _Bounded:
    """Asserts a block raised no more than 1.5 GB of peak memory above the peak before it, quickly."""

    def __enter__(self):
        self.peak, self.t0 = _rss_peak(), time.perf_counter()

    def __exit__(self, *exc):
        assert _rss_peak() - self.peak < 1.5 * GB
        assert time.perf_counter() - self.t0 < 30


# ---------------------------------------------------------------------------------------------
# crafted files, tiny


def nafnet_keys(levels: int = 12, width: int = 16, block: int | None = None) -> dict[str, torch.Tensor]:
    """NAFNet's key names with ``levels`` encoder levels, one small tensor each (~3 KB in all):
    spandrel would build a network whose bottom level has width * 2^levels channels; with
    ``block``, one more key ``middle_blks.<block>.beta`` (spandrel builds block + 1 middle blocks)."""
    t = lambda *s: torch.zeros(*s)  # noqa: E731
    sd = {"intro.weight": t(width, 3, 3, 3), "ending.weight": t(3, width, 3, 3), "ups.0.0.weight": t(1),
          "downs.0.weight": t(1)}
    for name in ("beta", "gamma", "conv1.weight", "conv2.weight", "conv3.weight", "sca.1.weight", "conv4.weight",
                 "conv5.weight", "norm1.weight", "norm2.weight"):
        sd[f"middle_blks.0.{name}"] = t(1)
    if block is not None:
        sd[f"middle_blks.{block}.beta"] = t(1)
    for i in range(levels):
        sd[f"encoders.{i}.0.beta"] = t(1)
        sd[f"encoders.{i}.0.gamma"] = t(1)
        sd[f"decoders.{i}.0.beta"] = t(1)
        sd[f"decoders.{i}.0.gamma"] = t(1)
    return sd


def save_safetensors(sd: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file(sd, str(path))
    return path


def deflated_pth(path: Path, inflates_to: int = 64 << 20) -> Path:
    """A torch file whose storage entry is ``inflates_to`` bytes of deflated zeros (a zip bomb)."""
    good = path.with_suffix(".good.pth")
    torch.save({"w": torch.zeros(4)}, good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("/data/0"):
                entry = zipfile.ZipInfo(info.filename)
                entry.compress_type = zipfile.ZIP_DEFLATED
                with dst.open(entry, "w", force_zip64=True) as f:
                    block = bytes(1 << 22)
                    for _ in range(inflates_to >> 22):
                        f.write(block)
            else:
                dst.writestr(info.filename, src.read(info.filename))
    return path


def lying_pth(path: Path, declares: int = 2 * GB - 1) -> Path:
    """A stored (not compressed) torch file whose storage entry declares ``declares`` bytes in the
    zip directory, in a file of a few hundred bytes."""
    torch.save({"w": torch.zeros(4)}, path)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        name = next(i.filename for i in z.infolist() if i.filename.endswith("/data/0")).encode()
    at = raw.find(b"PK\x01\x02")  # central-directory records
    while at >= 0:
        n = struct.unpack_from("<H", raw, at + 28)[0]
        if raw[at + 46: at + 46 + n] == name:
            struct.pack_into("<II", raw, at + 20, declares, declares)  # compressed and uncompressed sizes
        at = raw.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(raw))
    return path


# ---------------------------------------------------------------------------------------------
# the reader


@pytest.mark.parametrize("with_spandrel", [False, True])
def test_wrappers_and_prefixes_unwrap_as_spandrel_does(monkeypatch, with_spandrel):
    import sys

    if with_spandrel:
        pytest.importorskip("spandrel")  # loaded: its canonicalize_state_dict unwraps
    else:
        monkeypatch.delitem(sys.modules, "spandrel", raising=False)  # ptg's own copy of the rules
    sd = {"a.weight": torch.ones(2), "b.bias": torch.zeros(1)}
    other = {"c": torch.zeros(1)}
    for obj in (sd, {"params_ema": sd, "params": other}, {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
                {"model": {"generator": sd}}, {"only": sd}, {"params": {**sd, "epoch": 3}},
                {"state_dict": sd, "params_ema": other}, {"netG.a.weight": sd["a.weight"], "netG.b.bias": sd["b.bias"]}):
        got = state_dict_of(obj, "x")
        assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)  # order kept
    with pytest.raises(PtgError, match="holds no tensors"):
        state_dict_of({"params": {"a": 1}}, "x")


def test_legacy_format_pickle_is_bounded_before_loading(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "PICKLE_BYTES_SLACK", 0)
    base = torch.zeros(3000)
    p = tmp_path / "legacy.pth"  # torch < 1.6's format: pickles, then the storages (package weights still use it)
    torch.save({f"k{i}": base[i:i + 1] for i in range(3000)}, p, _use_new_zipfile_serialization=False)
    with pytest.raises(PtgError, match="has a pickle of more than 25,600 bytes, more than 100 tensors need"):
        read_weights(p, max_keys=100)
    assert len(read_weights(p, max_keys=3000)) == 3000


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_reader_round_trip_and_missing(tmp_path, suffix):
    sd = {"w": torch.arange(6.0).reshape(2, 3)}
    p = tmp_path / f"w{suffix}"
    save_safetensors(sd, p) if suffix == ".safetensors" else torch.save({"params": sd}, p)
    assert torch.equal(read_state_dict(p, "--baseline-weights")["w"], sd["w"])
    with pytest.raises(PtgError, match=r"--baseline-weights .*missing\.pth: no such file; "):
        read_weights(tmp_path / "missing.pth", "--baseline-weights")


def test_a_fifo_is_not_read(tmp_path):
    import os

    os.mkfifo(tmp_path / "f.pth")
    with pytest.raises(PtgError, match="is not a regular file"):
        read_weights(tmp_path / "f.pth")


def test_key_count_bound_before_and_after_loading(tmp_path, monkeypatch):
    monkeypatch.setenv("PTG_MAX_WEIGHTS_KEYS", "1000")
    own = tmp_path / "own.pth"  # 2000 storages: refused from the zip's end record, before torch.load
    torch.save({f"k{i}": torch.zeros(1) for i in range(2000)}, own)
    with pytest.raises(PtgError, match="2,0\\d\\d zip entries.*PTG_MAX_WEIGHTS_KEYS"):
        read_weights(own)
    base = torch.zeros(2000)
    shared = tmp_path / "shared.pth"  # 2000 views of one storage: one entry, counted after loading
    torch.save({f"k{i}": base[i:i + 1] for i in range(2000)}, shared)
    with pytest.raises(PtgError, match="2,000 tensors, over the limit of 1,000.*PTG_MAX_WEIGHTS_KEYS=2000"):
        read_weights(shared)
    st = save_safetensors({f"k{i}": torch.zeros(1) for i in range(2000)}, tmp_path / "k.safetensors")
    with pytest.raises(PtgError, match="2,000 tensors, over the limit"):
        read_weights(st)
    assert len(read_weights(st, max_keys=5000)) == 2000  # a parameter overrides the environment


def test_pickle_larger_than_the_key_bound_needs_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "PICKLE_BYTES_SLACK", 0)
    p = tmp_path / "big.pth"
    torch.save({"config": "x" * 50_000, "w": torch.zeros(1)}, p)
    with pytest.raises(PtgError, match="has a pickle of .* bytes, more than 10 tensors need"):
        read_weights(p, max_keys=10)


def test_declared_bytes_bound(tmp_path):
    p = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1000)}, p)
    with pytest.raises(PtgError, match="PTG_MAX_WEIGHTS_BYTES"):
        read_weights(p, max_bytes=1000)
    st = save_safetensors({"w": torch.zeros(1000)}, tmp_path / "w.safetensors")
    with pytest.raises(PtgError, match="4,000 bytes of tensors, over the limit of 1,000"):
        read_weights(st, max_bytes=1000)


def test_zip_bomb_and_lying_entry_are_refused_before_torch_load(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with _Bounded():
        bomb = deflated_pth(tmp_path / "bomb.pth")
        assert bomb.stat().st_size < 1 << 20  # 64 MiB of zeros, deflated
        with pytest.raises(PtgError, match=r"holds compressed entries \([^/]+/data/0"):
            read_weights(bomb, "--baseline-weights")
        with pytest.raises(PtgError, match="entries declaring 2,147,48.,... bytes in a file of"):
            read_weights(lying_pth(tmp_path / "lie.pth"), "--baseline-weights")
    assert not calls


@pytest.mark.parametrize("header", [
    {"w": {"dtype": "F32", "shape": [10 ** 12], "data_offsets": [0, 4]}},
    {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4 * 10 ** 12]}},
    {"w": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}},
    {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
    {"w": [1]},
    [1, 2],
])
def test_crafted_safetensors_headers_are_named_errors(tmp_path, header):
    import json

    body = json.dumps(header).encode()
    p = tmp_path / "h.safetensors"
    p.write_bytes(struct.pack("<Q", len(body)) + body + bytes(4))
    with pytest.raises(PtgError, match=r"cannot read weights file .*h\.safetensors as safetensors: "):
        read_weights(p)
    p.write_bytes(struct.pack("<Q", 10 ** 15) + body)
    with pytest.raises(PtgError, match="header length"):
        read_weights(p)


# ---------------------------------------------------------------------------------------------
# the bounded builder


def test_build_on_meta_stops_a_builder_at_the_bounds(monkeypatch):
    with _Bounded():
        with pytest.raises(PtgError, match="more than 500,000,000 parameters and buffers"):
            limits.build_on_meta(lambda: nn.Linear(100_000, 100_000), "F", "fix")  # 10^10 parameters, 40 GB
        monkeypatch.setenv("PTG_MAX_MODULES", "1000")
        endless = (nn.Sequential(nn.Conv2d(1, 1, 1)) for _ in range(10 ** 30))
        with pytest.raises(PtgError, match=r"F would build a network of more than 1,000 submodules and tensors.*refused before allocating it\. fix"):
            limits.build_on_meta(lambda: nn.Sequential(*endless), "F", "fix")
    with pytest.raises(PtgError, match=r"F cannot be built \(MemoryError: x\); fix"):
        limits.build_on_meta(lambda: (_ for _ in ()).throw(MemoryError("x")), "F", "fix")


def test_a_block_index_under_the_key_check_is_stopped_by_the_module_bound(tmp_path, monkeypatch):
    pytest.importorskip("spandrel")
    from ptg.ptgrm.models import create_model

    monkeypatch.setenv("PTG_MAX_MODULES", "3000")
    path = save_safetensors(nafnet_keys(2, block=2999), tmp_path / "f.safetensors")  # 3000 NAFBlocks, ~90k modules
    with _Bounded(), pytest.raises(PtgError, match=r"\(NAFNet\) would build a network of more than 3,000 submodules"):
        create_model("spandrel", weights=str(path))


def test_build_on_meta_allocates_nothing_big_and_keeps_the_rng():
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    net = limits.build_on_meta(lambda: nn.Sequential(nn.Linear(4000, 4000), nn.LayerNorm(8)), "F", "fix")
    assert net[0].weight.is_meta  # 64 MB: meta
    assert not net[1].weight.is_meta  # small helpers stay real (a builder may call .item() on them)
    assert torch.equal(torch.rand(3), want)


# ---------------------------------------------------------------------------------------------
# the crafted F files through the three commands


def _hostile(tmp_path: Path) -> dict[str, Path]:
    return {
        "nafnet 12 levels": save_safetensors(nafnet_keys(12), tmp_path / "levels.safetensors"),
        "block 10^30": save_safetensors(nafnet_keys(2, block=10 ** 30), tmp_path / "deep.safetensors"),
        "zip bomb": deflated_pth(tmp_path / "bomb.pth"),
        "entry declares 2 GiB": lying_pth(tmp_path / "lie.pth"),
    }


EXPECT = {"nafnet 12 levels": "more than 500,000,000 parameters", "block 10^30": "indexes block 100000000000...",
          "zip bomb": "compressed entries", "entry declares 2 GiB": "entries declaring 2,147,48"}


def _no_traceback(capsys) -> str:
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text
    return " ".join(text.split())


def test_models_inspect_refuses_each_crafted_file(tmp_path, capsys):
    pytest.importorskip("spandrel")
    for name, path in _hostile(tmp_path).items():
        with _Bounded():
            assert main(["models", "inspect", str(path)]) == 1, name
        assert EXPECT[name] in _no_traceback(capsys), name


def test_models_inspect_counts_parameters_on_meta(tmp_path, capsys):
    pytest.importorskip("spandrel")
    from .spandrel_zoo import RESTORATION, build, save

    net = build(*RESTORATION["nafnet"][:3])
    path = save(net, tmp_path / "n.safetensors", None)
    assert main(["models", "inspect", str(path)]) == 0
    assert f"{sum(p.numel() for p in net.parameters()):,}" in _no_traceback(capsys)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.test_restore import build_run

    return build_run(tmp_path_factory.mktemp("weights_run"))


@pytest.mark.filterwarnings("ignore::ptg.pipeline.storage.store.RandomInitWarning")
def test_train_baseline_spandrel_refuses_each_crafted_file(run, tmp_path, capsys):
    pytest.importorskip("spandrel")
    for name, path in _hostile(tmp_path).items():
        args = ["train", "--out", str(tmp_path / "out"), "--mode", "refine", "--manifest", str(run["manifest"]),
                "--priors", str(run["store"]), "--baseline", "spandrel", "--baseline-weights", str(path),
                "--steps", "1", "--crop", "32", "-q", "--set", "run.threads=1"]
        with _Bounded():
            assert main(args) == 1, name
        assert EXPECT[name] in _no_traceback(capsys), name


def test_eval_of_a_teammates_run_holding_a_crafted_f_is_refused(run, tmp_path, capsys):
    """A run folder whose checkpoint records spandrel F with a crafted state dict (eval rebuilds F
    from the recorded weights, never from the file the run names)."""
    pytest.importorskip("spandrel")
    import shutil

    for name, sd in {"nafnet 12 levels": nafnet_keys(12), "block 10^30": nafnet_keys(2, block=10 ** 30)}.items():
        dst = tmp_path / name.replace(" ", "_").replace("^", "")
        shutil.copytree(run["run"], dst)
        for ck_path in (dst / "checkpoints").glob("*.pt"):
            ck = torch.load(ck_path, weights_only=True)
            ck["mode"] = "refine"
            ck["baseline"] = {"name": "spandrel", "args": {"weights": str(tmp_path / "evil.safetensors"),
                                                           "architecture": "NAFNet", "sha256": "0" * 64},
                              "state_dict": {f"net.{k}": v for k, v in sd.items()}}
            ck.pop("ema", None)
            torch.save(ck, ck_path)
        with _Bounded():
            assert main(["eval", "--run", str(dst), "--manifest", str(run["manifest"]), "--out",
                         str(tmp_path / f"ev-{dst.name}")]) == 1, name
        assert EXPECT[name] in _no_traceback(capsys), name
