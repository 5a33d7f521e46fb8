"""Fault injection: kill, interrupt, corrupt and race the real `ptg` commands; check nothing is lost
and no wrong value is ever served.

    .venv/bin/python benchmarks/faults.py                  # every case (a few minutes, 1 core)
    .venv/bin/python benchmarks/faults.py --only extract    # cases whose name contains "extract"

Resumable: each finished case is kept in WORK/results.json (default /tmp/ptg-faults) and skipped
by the next run (``--fresh`` starts over). Writes benchmarks/results/faults.json and faults.md.

Bucket cases start moto's S3 server on 127.0.0.1 in this process (the `dev` extra) and pass the
standard AWS_* variables to every command.

Workload: 24 real photos (scikit-image crops, 48x48) degraded by `ptg data synth`; priors of the
real EfficientNet-Lite0 (`--model imagenet --size 64`, weights shipped in a package, offline) in
shards of 4 rows; a tiny `ptg train` run (width 8, 40 steps) on those priors. Every process runs
with one thread. A reference uninterrupted run of each is made first and every outcome is compared
with it byte for byte (store rows) or by parameter digest (training).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
PTG = [sys.executable, "-m", "ptg.cli.app"]
EXTRACT = ["extract-priors", "--model", "imagenet", "--size", "64", "--rows-per-shard", "4", "--batch-size", "4",
           "--loader-workers", "0"]
TRAIN_SETS = ["data.crop=32", "data.batch_size=2", "model.baseline_args.width=8", "model.baseline_args.depth=2",
              "model.refiner_args.width=4", "model.refiner_args.long_blocks=1", "model.refiner_args.prior_hidden=8",
              "model.refiner_args.prior_embed=8", "run.threads=1", "data.val_max_images=1", "data.val_crop=48",
              "run.val_every=20", "run.checkpoint_every=5"]
TRAIN = ["train", "--baseline", "unet", "--mode", "joint", "--steps", "40", "--seed", "3", "--quiet"] + \
        [a for s in TRAIN_SETS for a in ("--set", s)]

# Runs `ptg` with a fault injected at a named point: the process SIGKILLs itself there.
INJECT = textwrap.dedent("""
    import os, pathlib, signal, sys, time
    point = os.environ["PTG_FAULT"]
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)
    import zarr
    import ptg.pipeline.storage.store as st
    if point == "after shard data, before its commit":
        import ptg.pipeline.storage.shardstore as engine  # the storage engine's commit step, shared by every store
        orig = engine.write_commit
        engine.write_commit = lambda store, i, rec: die() if i == 2 else orig(store, i, rec)
    elif point == "between commit temp file and rename":
        orig_replace = os.replace
        os.replace = lambda a, b, *x, **k: die() if str(b).endswith("shard-000002.json") else orig_replace(a, b, *x, **k)
    elif point == "zarr .partial of the metadata update not renamed":
        orig_preplace = pathlib.Path.replace
        def preplace(self, target):
            t = pathlib.Path(target)
            if self.name.endswith(".partial") and t.name == "zarr.json" and t.parent.name != "priors" and st._updating:
                die()
            return orig_preplace(self, target)
        pathlib.Path.replace = preplace
        st._updating = False
        orig_update = st.update_metadata
        def update(*a, **k):
            st._updating = True
            return orig_update(*a, **k)
        st.update_metadata = update
    elif point == "during the metadata update":
        st.update_metadata = lambda *a, **k: die()
    elif point == "before the array resize":
        zarr.Array.resize = lambda *a, **k: die()
    elif point.startswith("hold the writer lock"):
        orig_create = st.create_or_open_store
        def slow(*a, **k):
            time.sleep(float(point.split()[-1]))
            return orig_create(*a, **k)
        st.create_or_open_store = slow
    from ptg.cli.app import main
    sys.exit(main(sys.argv[1:]))
""")


def ptg(args: list, timeout: float = 600, fault: str | None = None, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", INJECT] if fault else PTG
    env = {**(env or ENV), "PTG_FAULT": fault} if fault else (env or ENV)
    return subprocess.run(cmd + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=timeout, **kw)


def start(args: list, fault: str | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-c", INJECT] if fault else PTG
    env = {**ENV, "PTG_FAULT": fault} if fault else ENV
    return subprocess.Popen(cmd + [str(a) for a in args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, marker: Path) -> float:
    """Wait until `marker` exists (the command has started its work) or the process ends; return the time."""
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.01)
    return time.time()


def stop_after(proc: subprocess.Popen, marker: Path, seconds: float, sig: int) -> tuple[int, str, bool]:
    """Send `sig` `seconds` after `marker` appears (if still running); return (exit code, stderr, sent).

    Moments count from the marker, not from the start: on a loaded machine the imports alone can
    outlast a whole idle run, and kills during imports test nothing.
    """
    _wait_for(proc, marker)
    sent = False
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        sent = True
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err, sent


def active_seconds(args: list, marker: Path, progress: Callable[[], int]) -> float:
    """Seconds from `marker` appearing to the last change of `progress()` (e.g. the commit count) in
    an uninterrupted run, measured now: the window in which work is being written."""
    proc = start(args)
    t0 = _wait_for(proc, marker)
    last, seen = t0, progress()
    while proc.poll() is None:
        now = progress()
        if now != seen:
            last, seen = time.time(), now
        time.sleep(0.005)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"calibration run failed: {err[-2000:]}")
    return last - t0


# ---------------------------------------------------------------------------------------------
# Workload and references


class Work:
    """The workload folder: data set, reference store and run (made once, reused by every case)."""

    def __init__(self, root: Path):
        self.root = root
        self.manifest = root / "data" / "manifest.jsonl"
        self.ref_store = root / "ref.zarr"
        self.ref_run = root / "ref-run"
        self.timing: dict[str, float] = {}

    def trial(self, name: str) -> Path:
        d = self.root / "trials" / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def setup(self) -> None:
        from PIL import Image
        import skimage.data as data

        t_file = self.root / "timing.json"
        if t_file.is_file() and self.ref_run.joinpath("final.json").is_file():
            self.timing = json.loads(t_file.read_text())
            return
        shutil.rmtree(self.root, ignore_errors=True)
        clean = self.root / "clean"
        clean.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "immunohistochemistry"):
            img = data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)()
            for j in range(4):
                y, x = rng.integers(0, img.shape[0] - 160), rng.integers(0, img.shape[1] - 160)
                crop = Image.fromarray(img[y : y + 160, x : x + 160]).resize((48, 48), Image.LANCZOS)
                crop.save(clean / f"{name}_{j}.png")
        check(ptg(["data", "synth", "--src", clean, "--out", self.root / "data", "--split", "train"]), "synth")
        rows = [json.loads(r) for r in self.manifest.read_text().splitlines()]
        for r in rows[-4:]:
            r["split"] = "test"
        self.manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        t0 = time.time()
        check(ptg(EXTRACT + ["-m", self.manifest, "--out", self.ref_store]), "reference extraction")
        self.timing["extract"] = time.time() - t0
        t0 = time.time()
        check(ptg(TRAIN + ["-m", self.manifest, "--priors", self.ref_store, "--out", self.ref_run]), "reference training")
        self.timing["train"] = time.time() - t0
        t_file.write_text(json.dumps(self.timing))

    def ref_rows(self) -> tuple[list[str], np.ndarray]:
        return store_rows(self.ref_store)

    def ref_digest(self) -> str:
        return json.loads((self.ref_run / "final.json").read_text())["digest"]


def check(res: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if res.returncode != 0:
        raise SystemExit(f"{what} failed (exit {res.returncode}):\n{res.stderr[-3000:]}")
    return res


def store_rows(path: Path, in_memory: bool = False) -> tuple[list[str], np.ndarray]:
    """Every committed row of a store, sorted by key (raises PtgError for a damaged store)."""
    import warnings

    from ptg.pipeline.storage.store import open_priors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = open_priors(path, in_memory=in_memory)
    keys = sorted(r.keys())
    return keys, r.get_all_views(keys)


def same_as_reference(w: Work, store: Path) -> str | None:
    """None when `store` holds exactly the reference rows, verified and with no leftovers; else why not."""
    from ptg.pipeline.core.errors import PtgError
    from ptg.pipeline.storage.store import open_priors, quick_health

    try:
        keys, vals = store_rows(store)
    except PtgError as exc:
        return f"error reading: {str(exc)[:200]}"
    rk, rv = w.ref_rows()
    if keys != rk:
        return f"{len(keys)} keys, reference {len(rk)}"
    if vals.tobytes() != rv.tobytes():
        return "values differ from the reference"
    if open_priors(store, in_memory=False).verify():
        return "verify() found damaged shards"
    if quick_health(store)["problems"]:
        return "; ".join(quick_health(store)["problems"])
    return None


# ---------------------------------------------------------------------------------------------
# Cases: each returns {"trials": n, "passed": k, "outcome": text, "details": [...]}


def _result(details: list[dict], outcome: str) -> dict:
    return {"trials": len(details), "passed": sum(d["ok"] for d in details), "outcome": outcome, "details": details}


def extract_signal(w: Work, sig: int, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    details = []
    cal = w.trial(f"extract-{signal.Signals(sig).name}-calibration")
    span = active_seconds(EXTRACT + ["-m", w.manifest, "--out", cal / "s.zarr"], cal / "s.zarr" / "zarr.json",
                          lambda: len(list((cal / "s.zarr" / "commits").glob("shard-*.json"))))
    for i in range(n):
        d = w.trial(f"extract-{signal.Signals(sig).name}-{i}")
        moment = rng.uniform(0.0, 1.0) * span  # between opening the store and its last commit
        rc, err, sent = stop_after(start(EXTRACT + ["-m", w.manifest, "--out", d / "s.zarr"]), d / "s.zarr" / "zarr.json",
                                   moment, sig)
        committed = len(list((d / "s.zarr" / "commits").glob("shard-*.json")))
        complete = committed == 6
        rerun = ptg(EXTRACT + ["-m", w.manifest, "--out", d / "s.zarr"])
        why = rerun.stderr[-300:] if rerun.returncode else same_as_reference(w, d / "s.zarr")
        honest = rc != 0 or (complete and not sent)  # an interrupted run never reports success
        if sig == signal.SIGINT:
            # 130 from ptg's handler; -SIGINT when the signal lands while the interpreter shuts down,
            # after Python's handler is gone (a shell reports both as 130): neither claims success
            honest = honest and rc in (0, 130, -signal.SIGINT)
        details.append({"moment_s": round(moment, 2), "span_s": round(span, 2), "signal_sent": sent, "exit": rc,
                        "shards_before_rerun": committed,
                        "ok": why is None and honest, "why": why or ("" if honest else f"exit {rc}: {err[-200:]}")})
    return _result(details, "rerun bit-identical to the uninterrupted run; committed shards kept")


INJECTED = ("after shard data, before its commit", "between commit temp file and rename",
            "zarr .partial of the metadata update not renamed", "during the metadata update", "before the array resize")


def extract_injected(w: Work) -> dict:
    details = []
    for point in INJECTED:
        d = w.trial("inject-" + point.replace(" ", "-").replace(",", "").replace(".", ""))
        res = ptg(EXTRACT + ["-m", w.manifest, "--out", d / "s.zarr"], fault=point)
        rerun = ptg(EXTRACT + ["-m", w.manifest, "--out", d / "s.zarr"])
        why = rerun.stderr[-300:] if rerun.returncode else same_as_reference(w, d / "s.zarr")
        details.append({"point": point, "exit": res.returncode, "ok": res.returncode == -9 and why is None, "why": why or ""})
    return _result(details, "killed at the point; rerun bit-identical, leftovers removed")


def _flip(f: Path, offset: int) -> None:
    b = bytearray(f.read_bytes())
    for i in range(offset, offset + 4):
        b[i % len(b)] ^= 0xFF
    f.write_bytes(bytes(b))


def _shard(store: Path, i: int = 2) -> Path:
    return store / "priors" / "c" / str(i) / "0" / "0"


def _edit_rows(store: Path) -> None:
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"]["rows_per_shard"] = 8
    (store / "zarr.json").write_text(json.dumps(meta))


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "4 bytes flipped in shard data": lambda s: _flip(_shard(s), 40),
    "4 bytes flipped in a shard index": lambda s: _flip(_shard(s), -8),
    "shard truncated to 0 bytes": lambda s: _shard(s).write_bytes(b""),
    "shard truncated to half": lambda s: _shard(s).write_bytes(_shard(s).read_bytes()[: _shard(s).stat().st_size // 2]),
    "shard deleted": lambda s: _shard(s).unlink(),
    "rows_per_shard edited in zarr.json": _edit_rows,
    "zarr.json lost": lambda s: (s / "zarr.json").unlink(),
}


def corruption(w: Work, name: str) -> dict:
    """Damage a copy of the reference store; every reader gets a named error or exact values; a
    re-extraction repairs it to the reference."""
    from ptg.pipeline.core.errors import PtgError

    d = w.trial("corrupt-" + name.replace(" ", "-").replace(".", ""))
    store = d / "s.zarr"
    shutil.copytree(w.ref_store, store)
    CORRUPTIONS[name](store)
    rk, rv = w.ref_rows()
    served = []
    for in_memory in (True, False):
        try:
            keys, vals = store_rows(store, in_memory=in_memory)
            served.append("exact" if keys == rk and vals.tobytes() == rv.tobytes() else "WRONG VALUES")
        except PtgError as exc:
            named = str(store) in str(exc) and ("shard 2 (rows 8..11)" in str(exc) or "zarr.json" in str(exc))
            served.append("named error" if named else f"unnamed error: {exc}")
        except Exception as exc:  # a raw traceback is a failure of the case
            served.append(f"RAW {type(exc).__name__}")
    info = ptg(["priors", "info", store])
    train = ptg(TRAIN + ["-m", w.manifest, "--priors", store, "--out", d / "run", "--steps", "2"])
    rerun = ptg(EXTRACT + ["-m", w.manifest, "--out", store])
    why = rerun.stderr[-300:] if rerun.returncode else same_as_reference(w, store)
    ok = all(s in ("named error", "exact") for s in served) and "WRONG" not in str(served) and why is None \
        and (train.returncode != 0 or served == ["exact", "exact"])
    detail = {"corruption": name, "reader": served, "priors_info_exit": info.returncode, "train_exit": train.returncode,
              "train_error": (train.stderr.strip().splitlines() or [""])[-1][:300], "repaired_by_rerun": why is None,
              "ok": ok, "why": why or ""}
    return _result([detail], f"reader: {served[0]}; train exit {train.returncode}; re-extraction repairs")


def _image_bytes(store: Path) -> dict[str, bytes]:
    from ptg.pipeline.storage.imagestore import ImageStore

    st = ImageStore(store)
    return {k: st.array(k).tobytes() for k in sorted(st._index)}


def image_store_corruption(w: Work) -> dict:
    """Flip 4 bytes inside an image shard: `ptg data info --verify` and training with data.images=store
    stop with an error naming the store and shard (never wrong pixels); `ptg data cache` re-decodes the
    shard, and training from the repaired store gives the reference run's digest."""
    d = w.trial("image-store-corrupt")
    store = d / "images"
    images = ["--set", "data.images=store", "--set", f"data.image_store={store}"]
    check(ptg(["data", "cache", "-m", w.manifest, "--store", store, "--shard-mb", "0.05"]), "image cache")
    ref = _image_bytes(store)
    _flip(store / "shards" / "shard-000001.bin", 100)
    named = f"the image store {store}: shard 1"
    info = ptg(["data", "info", store, "--verify"])
    train = ptg(TRAIN + ["-m", w.manifest, "--priors", w.ref_store, "--out", d / "bad-run", "--steps", "2"] + images)
    rerun = ptg(["data", "cache", "-m", w.manifest, "--store", store])
    repaired = rerun.returncode == 0 and _image_bytes(store) == ref
    run = ptg(TRAIN + ["-m", w.manifest, "--priors", w.ref_store, "--out", d / "run"] + images)
    digest = json.loads((d / "run" / "final.json").read_text())["digest"] if run.returncode == 0 else None
    ok = (info.returncode != 0 and "shard 1" in info.stdout + info.stderr and train.returncode != 0
          and named in train.stderr and repaired and digest == w.ref_digest())
    detail = {"info_exit": info.returncode, "train_exit": train.returncode,
              "train_error": (train.stderr.strip().splitlines() or [""])[-1][:300], "repaired_by_rerun": repaired,
              "digest_after_repair_matches": digest == w.ref_digest(), "ok": ok,
              "why": "" if ok else (run.stderr[-300:] or rerun.stderr[-300:])}
    return _result([detail], "info and training name the damaged shard; `ptg data cache` repairs; same training digest")


def concurrent_writers(w: Work, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    details = []
    for i in range(n):
        d = w.trial(f"concurrent-{i}")
        gap = rng.uniform(0.1, 1.0)
        a = start(EXTRACT + ["-m", w.manifest, "--out", d / "s.zarr"], fault="hold the writer lock 2.0")
        time.sleep(gap)
        b = ptg(EXTRACT + ["-m", w.manifest, "--out", d / "s.zarr"], fault="hold the writer lock 0.5")
        _, a_err = a.communicate(timeout=300)
        admitted = (a.returncode == 0) + (b.returncode == 0)
        refused = "in use by pid" in (b.stderr if b.returncode else a_err)  # whichever reached the lock second
        why = same_as_reference(w, d / "s.zarr")  # the admitted writer's store: every row, exact
        details.append({"gap_s": round(gap, 2), "admitted": admitted, "other_refused_naming_pid": refused,
                        "ok": admitted == 1 and refused and why is None, "why": why or ""})
    return _result(details, "one writer admitted, the other refused naming its pid; no row lost")


def out_folders(w: Work) -> dict:
    details = []

    def case(name: str, args: list, folder: Path, keep: dict[str, str], want_rc: int) -> None:
        res = ptg(args)
        intact = all((folder / k).is_file() and (folder / k).read_text() == v for k, v in keep.items())
        details.append({"case": name, "exit": res.returncode, "intact": intact, "ok": intact and res.returncode == want_rc,
                        "message": (res.stderr.strip().splitlines() or [""])[-1][:300]})

    def mine(name: str, files: dict[str, str]) -> Path:
        d = w.trial("out-" + name)
        for k, v in files.items():
            (d / k).parent.mkdir(parents=True, exist_ok=True)
            (d / k).write_text(v)
        return d

    keep = {"priors/important.txt": "keep"}
    d = mine("extract", keep)
    case("extract-priors into an unrelated folder", EXTRACT + ["-m", w.manifest, "--out", d], d, keep, 1)
    case("extract-priors --force, foreign files in priors/", EXTRACT + ["-m", w.manifest, "--out", d, "--force"], d, keep, 1)
    keep2 = {"notes.txt": "mine"}
    d = mine("extract-force", keep2)
    case("extract-priors --force into a folder with notes", EXTRACT + ["-m", w.manifest, "--out", d, "--force"], d, keep2, 0)
    keep3 = {"clean/holiday.png": "not really a png"}
    d = mine("samples", keep3)
    case("data samples into an unrelated folder", ["data", "samples", "--out", d, "--max-side", "64", "--no-opencv"], d, keep3, 1)
    case("data samples --force, foreign image in clean/",
         ["data", "samples", "--out", d, "--max-side", "64", "--no-opencv", "--force"], d, keep3, 1)
    keep4 = {"config.yaml": "mine", "log.csv": "mine", "final.json": "{}"}
    d = mine("synth", keep4)
    case("data synth into an unrelated folder", ["data", "synth", "--src", w.root / "clean", "--out", d], d, keep4, 1)
    d = mine("train", keep4)
    case("train into an unrelated folder", TRAIN + ["-m", w.manifest, "--priors", w.ref_store, "--out", d, "--steps", "1"],
         d, keep4, 1)
    return _result(details, "refused with a message naming --force; nothing deleted")


def path_ids(w: Work) -> dict:
    d = w.trial("path-ids")
    rows = [json.loads(r) for r in w.manifest.read_text().splitlines()]
    bad = dict(rows[-1], id="../../../escape")  # eval writes OUT/images/<model>/<id>.png: this id points above OUT
    for k in ("input", "target"):
        bad[k] = str((w.manifest.parent / bad[k]).resolve())
    (d / "m.jsonl").write_text(json.dumps(bad) + "\n")
    chk = ptg(["manifest", "check", d / "m.jsonl"])
    out = d / "eval" / "out"
    ev = ptg(["eval", "--run", w.ref_run, "-m", d / "m.jsonl", "--out", out, "--grids", "0"])
    escaped = [str(p) for p in d.rglob("escape*") if not p.resolve().is_relative_to((out / "images").resolve())]
    detail = {"manifest_check_exit": chk.returncode, "eval_exit": ev.returncode, "written_outside": escaped,
              "ok": chk.returncode == 1 and not escaped and ev.returncode == 1,
              "message": ((chk.stdout + chk.stderr).strip().splitlines() or [""])[-1][:300]}
    return _result([detail], "an id with ../ is refused by manifest check and eval; nothing written outside --out")


def bad_inputs(w: Work) -> dict:
    from PIL import Image

    from ptg.pipeline.core.imageio import read_image

    d = w.trial("inputs")
    details = []
    nan = np.full((48, 48, 3), 0.5, np.float32)
    nan[5, 5] = np.nan
    np.save(d / "nan.npy", nan)
    row = json.loads(w.manifest.read_text().splitlines()[0])
    row.update(id="nan", input=str(d / "nan.npy"), target=str((w.manifest.parent / row["target"]).resolve()))
    (d / "m.jsonl").write_text(json.dumps(row) + "\n")
    ex = ptg(EXTRACT + ["-m", d / "m.jsonl", "--out", d / "s.zarr"])
    rs = ptg(["restore", "--ckpt", w.ref_run, "--input", d / "nan.npy", "--output", d / "restored"])
    details.append({"case": "NaN .npy input", "extract_exit": ex.returncode, "restore_exit": rs.returncode,
                    "ok": ex.returncode == 1 and "non-finite" in ex.stderr and rs.returncode == 1 and "non-finite" in rs.stderr
                    and not list((d / "restored").glob("*.png")), "message": (rs.stderr.strip().splitlines() or [""])[-1][:200]})
    # EXIF: a photo stored sideways with Orientation 6 is restored upright, like its upright copy
    stored = np.asarray(Image.open(w.root / "clean" / "chelsea_0.png").resize((64, 48)))
    exif = Image.Exif()
    exif[0x0112] = 6
    (d / "exif").mkdir()
    Image.fromarray(stored).save(d / "exif" / "tagged.jpg", exif=exif, quality=95)
    upright = read_image(d / "exif" / "tagged.jpg")
    Image.fromarray((upright * 255).round().astype(np.uint8)).save(d / "upright.png")
    r1 = ptg(["restore", "--ckpt", w.ref_run, "--input", d / "exif" / "tagged.jpg", "--output", d / "o1"])
    r2 = ptg(["restore", "--ckpt", w.ref_run, "--input", d / "upright.png", "--output", d / "o2"])
    ok = r1.returncode == 0 == r2.returncode and upright.shape[:2] == (64, 48)
    if ok:
        a, b = read_image(d / "o1" / "tagged.png"), read_image(d / "o2" / "upright.png")
        ok = a.shape == b.shape == upright.shape and np.array_equal(a, b)
    details.append({"case": "EXIF orientation 6 JPEG", "exit": [r1.returncode, r2.returncode], "ok": bool(ok),
                    "message": (r1.stderr.strip().splitlines() or [""])[-1][:200]})
    return _result(details, "NaN input: error naming the file; EXIF: restored upright, same as the upright copy")


def huge_image(w: Work) -> dict:
    helptext = ptg(["restore", "--help"]).stdout
    if "--max-memory" not in helptext:
        return {"trials": 0, "passed": 0, "pending": True, "details": [],
                "outcome": "PENDING (no --max-memory yet): expected `ptg restore` of a 6000x6000 photo without --tile "
                           "to tile automatically under the memory budget, or stop with a clear message; never a raw "
                           "allocation error"}
    d = w.trial("huge")
    img = np.random.default_rng(0).integers(0, 256, (6000, 6000, 3), dtype=np.uint8)
    from PIL import Image

    Image.fromarray(img).save(d / "huge.png")
    res = ptg(["restore", "--ckpt", w.ref_run, "--input", d / "huge.png", "--output", d / "o", "--max-memory", "2GB"])
    ok = res.returncode == 0 or (res.returncode == 1 and "Traceback" not in res.stderr)
    return _result([{"exit": res.returncode, "ok": ok, "message": res.stderr[-300:]}], "tiled automatically or a clear message")


def train_signal(w: Work, sig: int, n: int, seed: int) -> dict:
    from ptg.ptgrm.train.checkpoint import load_checkpoint

    rng = random.Random(seed)
    ref = w.ref_digest()
    details = []
    args = TRAIN + ["-m", w.manifest, "--priors", w.ref_store]
    cal = w.trial(f"train-{signal.Signals(sig).name}-calibration")
    span = active_seconds(args + ["--out", cal / "run"], cal / "run",
                          lambda: sum(p.stat().st_mtime_ns for p in (cal / "run").rglob("*") if p.is_file()))
    for i in range(n):
        d = w.trial(f"train-{signal.Signals(sig).name}-{i}")
        moment = rng.uniform(0.0, 1.0) * span  # between the run folder appearing and its last write
        rc, err, sent = stop_after(start(args + ["--out", d / "run"]), d / "run", moment, sig)
        last = d / "run" / "checkpoints" / "last.pt"
        ck_step = load_checkpoint(last)["step"] if last.is_file() else None
        finished = (d / "run" / "final.json").is_file()
        # the steps the interrupted run logged, read before the resume appends its own rows
        logged = [int(r.split(",")[0]) for r in (d / "run" / "log.csv").read_text().splitlines()[1:]] \
            if (d / "run" / "log.csv").is_file() else []
        res = ptg(args + ["--out", d / "run", "--resume"])
        digest = json.loads((d / "run" / "final.json").read_text())["digest"] if res.returncode == 0 else None
        # exit 0 is honest only for a run that completed every step (a signal landing during the
        # final validation and save is answered by finishing: nothing is lost, final.json is written)
        ok = digest == ref and (rc != 0 or (finished and ck_step == int(TRAIN[TRAIN.index("--steps") + 1])))
        if sig == signal.SIGINT and not finished:
            ok = ok and rc == 130 and (ck_step or 0) >= max(logged, default=0)
        details.append({"moment_s": round(moment, 2), "span_s": round(span, 2), "exit": rc, "checkpoint_step": ck_step,
                        "finished": finished, "signal_sent": sent,
                        "resume_exit": res.returncode, "same_digest": digest == ref, "ok": bool(ok),
                        "why": "" if ok else (res.stderr[-200:] if res.returncode else err[-200:])})
    expected = ("exit 130, checkpoint at the current step, --resume gives the uninterrupted final.json digest"
                if sig == signal.SIGINT else "--resume gives the uninterrupted final.json digest")
    return _result(details, expected)


# ---------------------------------------------------------------------------------------------
# Stores in a bucket: an S3 API on 127.0.0.1 (moto's threaded server, started by this process)

_S3: dict = {}


def _bucket(d: Path) -> str:
    """A fresh bucket on the loopback S3 server (started once; AWS_* reach every command through ENV),
    and ``$PTG_CACHE`` (stage and mirror) in the trial folder ``d``."""
    import logging

    import boto3

    if "server" not in _S3:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        _S3.update(server=server, endpoint=f"http://{host}:{port}", n=0)
    aws = {"AWS_ENDPOINT_URL": _S3["endpoint"], "AWS_ACCESS_KEY_ID": "faults", "AWS_SECRET_ACCESS_KEY": "faults",
           "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true", "PTG_CACHE": str(d / "cache")}
    ENV.update(aws)
    os.environ.update(aws)
    _S3["n"] += 1
    boto3.client("s3").create_bucket(Bucket=f"faults-{_S3['n']}")
    return f"s3://faults-{_S3['n']}/priors"


def _bucket_same(w: Work, url: str, d: Path) -> str | None:
    """None when the bucket store holds exactly the reference rows (pulled, verified, into a new folder)."""
    from ptg.pipeline.core.errors import PtgError
    from ptg.pipeline.storage.storecopy import copy_store

    pulled = d / f"pulled-{time.time_ns()}.zarr"
    try:
        copy_store(url, pulled)
    except PtgError as exc:
        return f"pull failed: {str(exc)[:200]}"
    return same_as_reference(w, pulled)


def _commits_in(url: str) -> Callable[[], int]:
    from ptg.pipeline.storage.remote import RemoteStore

    remote = RemoteStore(url)
    return lambda: len(remote.listing("commits/"))


def bucket_signal(w: Work, n: int, seed: int) -> dict:
    """SIGKILL of `extract-priors --out s3://...` at random moments (stage or upload), then the same command."""
    from ptg.pipeline.storage.storecopy import _cache_folder, parse_location

    rng = random.Random(seed)
    cal = w.trial("bucket-kill-calibration")
    url = _bucket(cal)
    stage = _cache_folder("stage", parse_location(url))
    span = active_seconds(EXTRACT + ["-m", w.manifest, "--out", url], stage / "zarr.json", _commits_in(url))
    details = []
    for i in range(n):
        d = w.trial(f"bucket-kill-{i}")
        url = _bucket(d)
        moment = rng.uniform(0.0, 1.0) * span
        rc, err, sent = stop_after(start(EXTRACT + ["-m", w.manifest, "--out", url]),
                                   _cache_folder("stage", parse_location(url)) / "zarr.json", moment, signal.SIGKILL)
        in_bucket = _commits_in(url)()
        rerun = ptg(EXTRACT + ["-m", w.manifest, "--out", url])
        why = rerun.stderr[-300:] if rerun.returncode else _bucket_same(w, url, d)
        honest = rc != 0 or not sent
        details.append({"moment_s": round(moment, 2), "span_s": round(span, 2), "signal_sent": sent, "exit": rc,
                        "bucket_shards_before_rerun": in_bucket, "ok": why is None and honest,
                        "why": why or ("" if honest else f"exit {rc}: {err[-200:]}")})
    return _result(details, "rerun (lease of the killed writer taken over) equals the uninterrupted run")


def bucket_dropped(w: Work) -> dict:
    """Every shard upload loses its connection mid-shard (a loopback proxy): named error; rerun completes."""
    sys.path.insert(0, str(REPO))
    from tests.s3_fixtures import CutProxy

    d = w.trial("bucket-dropped")
    url = _bucket(d)
    proxy = CutProxy(_S3["endpoint"])
    try:
        proxy.cut_match = b"/priors/c/"
        cut = ptg(EXTRACT + ["-m", w.manifest, "--out", url], env={**ENV, "AWS_ENDPOINT_URL": proxy.endpoint})
        named = cut.returncode == 1 and "failed" in cut.stderr and "run the same command again" in cut.stderr
        proxy.cut_match = None
        rerun = ptg(EXTRACT + ["-m", w.manifest, "--out", url], env={**ENV, "AWS_ENDPOINT_URL": proxy.endpoint})
    finally:
        proxy.close()
    why = rerun.stderr[-300:] if rerun.returncode else _bucket_same(w, url, d)
    msg = cut.stderr.strip().splitlines()[-1][:300] if cut.stderr.strip() else ""
    return _result([{"exit": cut.returncode, "connections_cut": proxy.cuts, "named_error": named, "message": msg,
                     "ok": named and why is None, "why": why or ("" if named else msg)}],
                   "named error naming the object; rerun completes with the uninterrupted rows")


def bucket_two_writers(w: Work, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    details = []
    for i in range(n):
        d = w.trial(f"bucket-two-writers-{i}")
        url = _bucket(d)
        gap = rng.uniform(0.1, 1.0)
        a = start(EXTRACT + ["-m", w.manifest, "--out", url], fault="hold the writer lock 3.0")
        time.sleep(gap)
        b = ptg(EXTRACT + ["-m", w.manifest, "--out", url], fault="hold the writer lock 0.5")
        _, a_err = a.communicate(timeout=300)
        admitted = (a.returncode == 0) + (b.returncode == 0)
        refused = "is being written by pid" in (b.stderr if b.returncode else a_err)
        why = _bucket_same(w, url, d)
        details.append({"gap_s": round(gap, 2), "admitted": admitted, "other_refused_naming_holder": refused,
                        "ok": admitted == 1 and refused and why is None, "why": why or ""})
    return _result(details, "one writer admitted, the other refused naming the lease holder; no row lost")


def bucket_expired_lease(w: Work) -> dict:
    """A writer that stalls past its lease: the next writer takes over, the stale one cannot commit."""
    from ptg.pipeline.core.errors import PtgError
    from ptg.pipeline.storage.lease import Lease
    from ptg.pipeline.storage.remote import RemoteStore
    from ptg.pipeline.storage.storecopy import _LocalSide, _RemoteSide, transfer

    d = w.trial("bucket-expired-lease")
    url = _bucket(d)
    remote = RemoteStore(url)
    stale = Lease(remote, ttl=2.0, renew=False).acquire()  # stalls: never renews
    time.sleep(2.5)
    fresh = ptg(EXTRACT + ["-m", w.manifest, "--out", url])
    try:
        transfer(_LocalSide(w.ref_store), _RemoteSide(remote, stale))  # the stale writer tries to publish
        fenced, msg = False, "the stale writer committed"
    except PtgError as exc:
        fenced, msg = "taken over" in str(exc), str(exc)[:200]
    why = fresh.stderr[-300:] if fresh.returncode else _bucket_same(w, url, d)
    return _result([{"taken_over": fresh.returncode == 0, "stale_fenced": fenced, "message": msg,
                     "ok": fresh.returncode == 0 and fenced and why is None, "why": why or ""}],
                   "taken over; the stale writer cannot commit; the store equals the uninterrupted run")


def bucket_damaged_shard(w: Work) -> dict:
    """4 bytes flipped in a shard object inside the bucket: every reader (another machine: a fresh
    ``$PTG_CACHE``) gets a named error, `ptg train` stops, re-extraction repairs the bucket in place."""
    from ptg.pipeline.core.errors import PtgError
    from ptg.pipeline.storage.remote import RemoteStore
    from ptg.pipeline.storage.storecopy import copy_store

    d = w.trial("bucket-damaged-shard")
    url = _bucket(d)
    copy_store(w.ref_store, url)  # the reference, published
    remote, key = RemoteStore(url), "priors/c/2/0/0"
    data = bytearray(remote.get(key, limit=1 << 30))
    for i in range(10, 14):
        data[i % len(data)] ^= 0xFF
    remote.put(key, bytes(data))
    served = []
    for in_memory in (True, False):
        try:
            store_rows(url, in_memory=in_memory)  # type: ignore[arg-type]
            served.append("WRONG VALUES: served")
        except PtgError as exc:
            named = url in str(exc) and "shard 2 (rows 8..11)" in str(exc)
            served.append("named error" if named else f"unnamed error: {exc}")
        except Exception as exc:  # a raw traceback is a failure of the case
            served.append(f"RAW {type(exc).__name__}")
    train = ptg(TRAIN + ["-m", w.manifest, "--priors", url, "--out", d / "run", "--steps", "2"])
    rerun = ptg(EXTRACT + ["-m", w.manifest, "--out", url])
    moved = [k for k in remote.listing() if k.startswith("commits/quarantine/shard-000002.json.")]
    ENV["PTG_CACHE"] = os.environ["PTG_CACHE"] = str(d / "cache-after")  # a third machine reads the repaired store
    why = rerun.stderr[-300:] if rerun.returncode else _bucket_same(w, url, d)
    ok = served == ["named error", "named error"] and train.returncode != 0 and bool(moved) and why is None
    return _result([{"reader": served, "train_exit": train.returncode, "record_quarantined_in_bucket": bool(moved),
                     "train_error": (train.stderr.strip().splitlines() or [""])[-1][:300], "ok": ok, "why": why or ""}],
                   "reader: named error (URL, shard, rows); train exit 1; re-extraction quarantines the record in the "
                   "bucket and recomputes the shard: the store equals the uninterrupted run")


def cases(w: Work, n: int, seed: int) -> dict[str, Callable[[], dict]]:
    out = {
        "extract: SIGKILL at random moments": lambda: extract_signal(w, signal.SIGKILL, n, seed),
        "extract: SIGINT at random moments": lambda: extract_signal(w, signal.SIGINT, n, seed + 1),
        "extract: SIGKILL at injected points": lambda: extract_injected(w),
    }
    for name in CORRUPTIONS:
        out[f"store: {name}"] = lambda name=name: corruption(w, name)
    out.update({
        "image store: 4 bytes flipped in a shard": lambda: image_store_corruption(w),
        "store: concurrent writers, injected delay": lambda: concurrent_writers(w, max(3, n // 3), seed + 2),
        "--out: existing folders not made by ptg": lambda: out_folders(w),
        "path: manifest id with ../": lambda: path_ids(w),
        "input: NaN .npy, EXIF-rotated JPEG": lambda: bad_inputs(w),
        "input: 6000x6000 photo without --tile": lambda: huge_image(w),
        "train: SIGKILL at random moments": lambda: train_signal(w, signal.SIGKILL, n, seed + 3),
        "train: SIGINT at random moments": lambda: train_signal(w, signal.SIGINT, n, seed + 4),
        "bucket: extract SIGKILL at random moments": lambda: bucket_signal(w, n, seed + 5),
        "bucket: connection dropped mid-shard": lambda: bucket_dropped(w),
        "bucket: two writers": lambda: bucket_two_writers(w, max(3, n // 3), seed + 6),
        "bucket: expired lease": lambda: bucket_expired_lease(w),
        "bucket: 4 bytes flipped in a shard inside the bucket": lambda: bucket_damaged_shard(w),
    })
    return out


def with_recorded(results: dict, only: str | None, recorded: Path) -> dict:
    """The cases to write: with ``--only``, this run's cases over the recorded table's others (a
    partial run refreshes its rows; it never drops the rest of the suite's results)."""
    if not only or not recorded.is_file():
        return results
    return {**json.loads(recorded.read_text(encoding="utf-8")).get("cases", {}), **results}


def write_tables(results: dict, meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "faults.json").write_text(json.dumps({"meta": meta, "cases": results}, indent=1) + "\n")
    lines = ["# Fault injection", "", f"`{meta['command']}` — {meta['date']}, {meta['machine']}, "
             f"{meta['seconds']:.0f} s of cases.", "", "| fault | trials | passed | outcome |", "| --- | ---: | ---: | --- |"]
    for name, r in results.items():
        status = "pending" if r.get("pending") else f"{r['passed']}/{r['trials']}"
        outcome = r["outcome"]
        failed = [d for d in r["details"] if not d["ok"]]
        if failed:  # say what happened, not only what was expected
            seen = {k: v for k, v in failed[0].items() if k not in ("ok", "why", "message") and v not in ("", None, [])}
            outcome = f"expected: {outcome}. **Fails** in {len(failed)}, e.g. {json.dumps(seen)[:220]}"
        lines.append(f"| {name} | {r['trials']} | {status} | {outcome} |")
    (RESULTS / "faults.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/ptg-faults"), help="workload and resume folder")
    p.add_argument("--trials", type=int, default=10, help="random moments per signal case")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="run only cases whose name contains this")
    p.add_argument("--fresh", action="store_true", help="forget finished cases")
    a = p.parse_args(argv)
    # a shell's background job inherits SIGINT ignored, and so would every command started here:
    # restore the default so the SIGINT cases really interrupt
    signal.signal(signal.SIGINT, signal.default_int_handler)
    ENV["PTG_CACHE"] = str(a.work / "cache")  # row caches and the default image store stay in the workload folder
    w = Work(a.work)
    w.setup()
    saved = a.work / "results.json"
    results = json.loads(saved.read_text()) if saved.is_file() and not a.fresh else {}
    todo = cases(w, a.trials, a.seed)
    for name, run in todo.items():
        if (a.only and a.only not in name) or name in results:
            continue
        t = time.time()
        results[name] = {**run(), "seconds": round(time.time() - t, 1)}
        saved.write_text(json.dumps(results, indent=1))
        r = results[name]
        print(f"{name}: {r['passed']}/{r['trials']} passed ({r['seconds']} s) — {r['outcome']}", flush=True)
    meta = {"command": "python benchmarks/faults.py" + (f" --trials {a.trials}" if a.trials != 10 else "")
            + (f" --only '{a.only}' (the other rows as recorded)" if a.only else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "seconds": sum(r.get("seconds", 0) for r in results.values()),  # the cases, over resumed runs
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 1 thread per process", "timing": w.timing}
    results = with_recorded(results, a.only, RESULTS / "faults.json")
    results = {k: results[k] for k in [*todo, *results] if k in results}  # the suite's order
    write_tables(results, meta)
    failed = [k for k, r in results.items() if not r.get("pending") and r["passed"] < r["trials"]]
    print(f"{len(results) - len(failed)}/{len(results)} cases passed" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
