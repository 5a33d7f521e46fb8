"""Security suite: crafted files a teammate could share, run against the real loaders; checks that
each ends in a named error, that the harm did not happen, and (resource cases) how much memory the
refusing process used.

    .venv/bin/python benchmarks/security.py                 # every case (about a minute, 1 core)
    .venv/bin/python benchmarks/security.py --only tiff      # cases whose name contains "tiff"

Two parts:
- resource cases: each crafted file (a 144 Mpx PNG of a few KB, a 2000-page TIFF, an NPY header
  declaring 120 GB, a checkpoint with a 2 GiB deflated entry, a commit record with ``"n": 1e9``, a store declaring a dim of 2^27, an HDF5
  file declaring 8 GB, a UNet recorded with width 4000, a JSON nested 10^5 deep, a YAML alias
  bomb, a network whose recorded width overflows its sizes, an image store recording a 60000² image)
  is opened in a fresh process with the default limits; its peak resident memory is its own
  ``VmHWM`` and must stay under 2 GB, its last line must be a one-line `PtgError`.
- harm cases: the fast suite ``tests/test_security*.py`` (links written through, outside files
  opened, modules imported, damaged shards served), one row per test with its outcome.

Writes benchmarks/results/security.json and security.md (full runs only, not with --only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
RSS_LIMIT_MB = 2048

# name -> (what the crafted file claims, setup code run in this process (writes files under W),
#          code run in the measured child process; it must raise PtgError)
CASES: dict[str, tuple[str, str, str]] = {
    "png 144 Mpx": (
        "PNG of 12000x12000 (1-bit, a few KB)",
        "from PIL import Image; Image.new('1', (12000, 12000)).save(W / 'big.png', optimize=True)",
        "from ptg.pipeline.core.imageio import read_image; read_image(W / 'big.png')"),
    "tiff 2000 pages": (
        "TIFF of 2000 zlib pages of 1000x1000 (2 Gpx)",
        "import numpy as np, tifffile\n"
        "page = np.zeros((1000, 1000), np.uint8)\n"
        "tifffile.imwrite(W / 'pages.tif', (page for _ in range(2000)), shape=(2000, 1000, 1000), dtype=np.uint8,"
        " compression='zlib', photometric='minisblack')",
        "from ptg.pipeline.core.imageio import read_image; read_image(W / 'pages.tif')"),
    "npy header 120 GB": (
        "NPY header declaring 100000x100000x3 float32",
        "import numpy as np\n"
        "f = open(W / 'bomb.npy', 'wb')\n"
        "np.lib.format.write_array_header_1_0(f, {'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 3)})\n"
        "f.close()",
        "from ptg.pipeline.core.imageio import read_image; read_image(W / 'bomb.npy')"),
    "commit n 1e9": (
        "zarr store whose commit record says n = 10^9",
        "STORE\nimport json\np = W / 's.zarr' / 'commits' / 'shard-000001.json'\nr = json.loads(p.read_text())\n"
        "r['n'] = 10 ** 9\np.write_text(json.dumps(r))",
        "from ptg.pipeline.storage.store import open_priors; open_priors(W / 's.zarr', in_memory=True).get_all_views(KEYS)"),
    "store dim 2^27": (
        "zarr store (a few KB) declaring dim 2^27 (21 GB)",
        "STORE\nimport json\np = W / 's.zarr' / 'priors' / 'zarr.json'\nm = json.loads(p.read_text())\n"
        "m['shape'][-1] = 2 ** 27\np.write_text(json.dumps(m))",
        "from ptg.pipeline.storage.store import open_priors; open_priors(W / 's.zarr', in_memory=True).get_all_views(KEYS)"),
    "hdf5 8 GB declared": (
        "HDF5 export of a few KB declaring 2^31 x 1 x 2 float16 (gzip)",
        "import h5py, json, numpy as np\n"
        "with h5py.File(W / 'bomb.h5', 'w') as f:\n"
        "    f.create_dataset('keys', data=np.array([b'k'], dtype='S64'))\n"
        "    f.create_dataset('priors', shape=(2 ** 31, 1, 2), dtype='f2', chunks=(2 ** 16, 1, 2), compression='gzip')\n"
        "    f.attrs['metadata'] = json.dumps({'fingerprint': 'f', 'views': ['identity'], 'dim': 2})",
        "from ptg.pipeline.storage.store import open_priors; open_priors(W / 'bomb.h5')"),
    "unet width 4000": (
        "network recorded as unet with width 4000 (42 G parameters, 168 GB)",
        "pass",
        "from ptg.ptgrm.train.checkpoint import build_network; build_network('unet', {'width': 4000})"),
    "network width 1e9": (
        "network recorded as unet with width 10^9 (its weight sizes overflow int64)",
        "pass",
        "from ptg.ptgrm.train.checkpoint import build_network; build_network('unet', {'width': 10 ** 9})"),
    "image store 60000^2": (
        "image store whose commit record claims a 60000x60000x3 image (sparse 10.8 GB shard file)",
        "import json, numpy as np\nfrom PIL import Image\nfrom ptg.pipeline.storage import imagestore\n"
        "Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(W / 'a.png')\n"
        "imagestore.cache_images([W / 'a.png'], W / 'images')\n"
        "p = W / 'images' / 'commits' / 'shard-000000.json'\nr = json.loads(p.read_text())\n"
        "r['items'][0][1] = [60000, 60000, 3]\nr['bytes'] = 60000 * 60000 * 3 + (1 << 20)\np.write_text(json.dumps(r))\n"
        "open(imagestore.shard_path(W / 'images', 0), 'r+b').truncate(r['bytes'])\n"
        "(W / 'keys.json').write_text(json.dumps(imagestore.file_keys([W / 'a.png'])))",
        "from ptg.pipeline.storage.imagestore import ImageStore; ImageStore(W / 'images').image(KEYS[0])"),
    "checkpoint deflate 2 GiB": (
        "checkpoint whose data.pkl entry is 2 GiB of deflated zeros",
        "import zipfile\n"
        "with zipfile.ZipFile(W / 'bomb.pt', 'w', compression=zipfile.ZIP_DEFLATED) as z:\n"
        "    with z.open('bomb/data.pkl', 'w', force_zip64=True) as f:\n"
        "        block = bytes(1 << 24)\n"
        "        for _ in range(128):\n"
        "            f.write(block)\n"
        "    z.writestr('bomb/version', '3')",
        "from ptg.ptgrm.train.checkpoint import safe_load; safe_load(W / 'bomb.pt')"),
    "json depth 1e5": (
        "metadata JSON nested 100000 levels",
        "(W / 'deep.json').write_text('[' * 100000 + ']' * 100000)",
        "from ptg.pipeline.core.limits import read_json; read_json(W / 'deep.json', 'store metadata')"),
    "yaml alias bomb": (
        "config YAML of 9 alias levels (10^9 values if expanded)",
        "lines = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]']\n"
        "lines += [f'a{i}: &a{i} [' + ', '.join([f'*a{i - 1}'] * 10) + ']' for i in range(1, 10)]\n"
        "(W / 'bomb.yaml').write_text('\\n'.join(lines) + '\\n')",
        "from ptg.ptgrm.train.config import load_yaml; load_yaml(W / 'bomb.yaml')"),
    # -- issue 34, stores (round 2): hostile fields of a shared store's records and settings --------------
    "image store shape 1e400": (
        "image store whose commit record gives an image side of 1e400 (an OverflowError in int())",
        "IMAGES\nr['items'][0][1] = ['@@', 24, 3]\np.write_text(json.dumps(r).replace('\"@@\"', '1e400'))",
        "from ptg.pipeline.storage.imagestore import ImageStore; ImageStore(W / 'images').image(KEYS[0])"),
    "image store list key": (
        "image store whose commit record has a list as a key (unhashable)",
        "IMAGES\nr['keys'][0] = ['a', 'b']\np.write_text(json.dumps(r))",
        "from ptg.pipeline.storage.imagestore import ImageStore; ImageStore(W / 'images').image(KEYS[0])"),
    "image store shard_bytes 1e400": (
        "image store settings.json with shard_bytes 1e400, read by the writer",
        "IMAGES\ns = W / 'images' / 'settings.json'\nm = json.loads(s.read_text())\nm['shard_bytes'] = '@@'\n"
        "s.write_text(json.dumps(m).replace('\"@@\"', '1e400'))",
        "from ptg.pipeline.storage import imagestore; imagestore.cache_images([W / 'a.png'], W / 'images')"),
    "image store duplicate key": (
        "image store whose second shard commits the first shard's key with other pixels",
        "IMAGES\nimport shutil\nfrom PIL import Image\n"
        "Image.fromarray(np.full((24, 32, 3), 7, np.uint8)).save(W / 'b.png')\n"
        "imagestore.cache_images([W / 'b.png'], W / 'images')\n"
        "q = W / 'images' / 'commits' / 'shard-000001.json'\nr2 = json.loads(q.read_text())\n"
        "r2['keys'][0] = KEYS0[0]\nq.write_text(json.dumps(r2))",
        "from ptg.pipeline.storage.imagestore import ImageStore; ImageStore(W / 'images').image(KEYS[0])"),
    "image store swapped pixels": (
        "teammate's image store whose records are self-consistent but hold another image under a file's key",
        "IMAGES\nfrom PIL import Image\nImage.fromarray(np.full((24, 32, 3), 7, np.uint8)).save(W / 'b.png')\n"
        "import os, shutil\nshutil.rmtree(W / 'images')\nimagestore.cache_images([W / 'a.png', W / 'b.png'], W / 'images')\n"
        "r = json.loads(p.read_text())\nr['keys'].reverse()\np.write_text(json.dumps(r))",
        "import os; os.environ['PTG_CACHE'] = str(W / 'reader-cache')\n"
        "from ptg.pipeline.storage.imagestore import image_loader; image_loader(W / 'images')(W / 'a.png')"),
    "outputs settings [1,2]": (
        "F-outputs store whose settings.json says f_outputs: [1, 2]",
        "IMAGES\ns = W / 'images' / 'settings.json'\nm = json.loads(s.read_text())\nm['f_outputs'] = [1, 2]\n"
        "s.write_text(json.dumps(m))",
        "from ptg.pipeline.datasets.manifest import Sample\nfrom ptg.ptgrm.f_outputs import open_cached_outputs\n"
        "open_cached_outputs(W / 'images', [Sample('a', W / 'a.png', None, 'test', 1)])"),
    # -- end of issue 34 stores block ----------------------------------------------------------------------
}

# An image store of one 24x32 photo W/a.png, its commit record loaded as r (path p), KEYS0 its keys.
IMAGES_SETUP = textwrap.dedent("""
    import json, os, numpy as np
    from PIL import Image
    from ptg.pipeline.storage import imagestore
    os.environ["PTG_CACHE"] = str(W / "author-cache")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(W / "a.png")
    imagestore.cache_images([W / "a.png"], W / "images")
    KEYS0 = imagestore.file_keys([W / "a.png"])
    (W / "keys.json").write_text(json.dumps(KEYS0))
    p = W / "images" / "commits" / "shard-000000.json"
    r = json.loads(p.read_text())
""")

STORE_SETUP = textwrap.dedent("""
    import hashlib, numpy as np
    from ptg.pipeline.storage.store import allocate_shards, create_or_open_store, write_shard, writer_lock
    meta = {"encoder": {"name": "toy", "preprocessing": {"size": 32}, "pooling": "mean", "details": {}},
            "fingerprint": "f" * 64, "random_init": False, "dim": 8, "views": ["identity", "hflip"],
            "views_spec": "custom", "dtype": "float16"}
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(40)]
    vals = np.random.default_rng(0).standard_normal((40, 2, 8)).astype(np.float32)
    with writer_lock(W / "s.zarr"):
        create_or_open_store(W / "s.zarr", meta, rows_per_shard=16)
        for sid, lo in zip(allocate_shards(W / "s.zarr", 3), (0, 16, 32)):
            write_shard(W / "s.zarr", sid, keys[lo:lo + 16], vals[lo:lo + 16])
    (W / "keys.json").write_text(__import__("json").dumps(keys))
""")

CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    W = Path(sys.argv[1])
    KEYS = json.loads((W / "keys.json").read_text()) if (W / "keys.json").exists() else []
    from ptg.pipeline.core.errors import PtgError

    def peak_kib():  # VmHWM: this process's peak resident set since exec (ru_maxrss would include the parent's)
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return -1

    try:
        exec(sys.argv[2])
    except PtgError as exc:
        print(f"VmHWM {peak_kib()}")
        print("PtgError: " + str(exc).splitlines()[0])
        sys.exit(3)
    print(f"VmHWM {peak_kib()}")
    print("NO ERROR")
""")


def _setup(work: Path, code: str) -> None:
    old = os.environ.get("PTG_CACHE")
    try:
        _setup_in(work, code)
    finally:  # a setup that writes a store keeps its verification ledger in its own folder, not the user's
        if old is None:
            os.environ.pop("PTG_CACHE", None)
        else:
            os.environ["PTG_CACHE"] = old


def _setup_in(work: Path, code: str) -> None:
    scope = {"W": work, "__name__": "setup"}
    if code.startswith("STORE\n"):
        exec(STORE_SETUP, scope)
        code = code[len("STORE\n"):]
    if code.startswith("IMAGES\n"):
        exec(IMAGES_SETUP, scope)
        code = code[len("IMAGES\n"):]
    exec(code, scope)


def run_resource_case(name: str, root: Path) -> dict:
    """Set the crafted file up, open it in a fresh process, measure that process's peak RSS."""
    claim, setup, child = CASES[name]
    work = root / name.replace(" ", "_").replace("^", "")
    work.mkdir(parents=True, exist_ok=True)
    _setup(work, setup)
    # bytes on disk: a sparse file counts what it occupies, not what it claims
    size = sum(min(p.stat().st_size, p.stat().st_blocks * 512) for p in work.rglob("*") if p.is_file())
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(work), child], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    proc.wait()
    hwm = [int(line.split()[1]) for line in out.splitlines() if line.startswith("VmHWM ")]
    rss_mb = hwm[-1] / 1024 if hwm else float("inf")  # a child killed for memory reports none
    last = (out.strip().splitlines() or ["(no output)"])[-1]
    ok = proc.returncode == 3 and last.startswith("PtgError") and rss_mb < RSS_LIMIT_MB
    return {"case": name, "claim": claim, "file_bytes": size, "rss_mb": round(rss_mb, 1), "seconds": round(time.perf_counter() - t0, 2),
            "exit": proc.returncode, "message": last[:300], "blocked": ok}


def run_harm_suite(root: Path, only: str | None) -> list[dict]:
    """Run tests/test_security*.py and return one row per test (name, outcome, seconds)."""
    xml = root / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
           "tests/test_security.py", "tests/test_security_store.py",
           "tests/test_security_shared.py", "tests/test_security_stores2.py"] + (["-k", only] if only else [])
    subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    rows = []
    for tc in ET.parse(xml).getroot().iter("testcase"):
        failed = tc.find("failure") is not None or tc.find("error") is not None
        rows.append({"test": f"{tc.get('classname').rsplit('.', 1)[-1]}::{tc.get('name')}",
                     "outcome": "FAILED" if failed else ("skipped" if tc.find("skipped") is not None else "blocked"),
                     "seconds": round(float(tc.get("time", 0)), 2)})
    return rows


def write_results(resource: list[dict], harm: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (RESULTS / "security.json").write_text(json.dumps({"env": env, "resource": resource, "harm": harm}, indent=2) + "\n")
    lines = ["# Security suite (`benchmarks/security.py`)", "",
             f"{env['date']}, Python {env['python']}, {env['cpus']} CPUs. Default limits (PTG_MAX_PIXELS 64 Mpx, "
             "PTG_MAX_PARAMS 500 M, JSON 64 MiB / depth 64).", "",
             "## Resource cases (fresh process each; peak RSS = the child's VmHWM; must stay < 2 GB and end in a named error)", "",
             "| case | crafted file | file bytes | peak RSS MB | s | blocked | message |", "|---|---|---:|---:|---:|---|---|"]
    for r in resource:
        msg = r["message"].replace("|", "\\|")
        lines.append(f"| {r['case']} | {r['claim']} | {r['file_bytes']:,} | {r['rss_mb']} | {r['seconds']} | "
                     f"{'yes' if r['blocked'] else 'NO'} | {msg[:160]} |")
    n_ok = sum(r["outcome"] == "blocked" for r in harm)
    lines += ["", f"## Harm cases: tests/test_security*.py ({n_ok}/{len(harm)} blocked)", "",
              "| test | outcome | s |", "|---|---|---:|"]
    lines += [f"| {r['test']} | {r['outcome']} | {r['seconds']} |" for r in harm]
    (RESULTS / "security.md").write_text("\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="run only cases whose name contains this")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ptg-security-") as tmp:
        root = args.work or Path(tmp)
        resource = [run_resource_case(n, root) for n in CASES if not args.only or args.only in n]
        for r in resource:
            print(f"{r['case']:20s} rss {r['rss_mb']:7.1f} MB  {'blocked' if r['blocked'] else 'NOT BLOCKED'}  {r['message'][:100]}")
        harm = run_harm_suite(root, args.only)
        print(f"harm cases: {sum(r['outcome'] == 'blocked' for r in harm)}/{len(harm)} blocked")
    if not args.only:  # a partial run does not replace the recorded results
        write_results(resource, harm)
    bad = [r for r in resource if not r["blocked"]] + [r for r in harm if r["outcome"] == "FAILED"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
