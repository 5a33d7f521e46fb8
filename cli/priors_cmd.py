"""`ptg priors info|export|probe|copy`: inspect a priors store, export it to HDF5, probe what it carries, copy it."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from ptg.pipeline.core.errors import PtgError

from .console import console, err_console, human_bytes
from .options import AllowOutside, RootOpt

app = typer.Typer(help="Inspect and export priors stores.", no_args_is_help=True)

StoreArg = Annotated[str, typer.Argument(help="A priors store (.zarr directory or s3://bucket/prefix) or an HDF5 export.")]


def open_store_loudly(path: Path):
    """Open a store, showing its warnings (e.g. random-init weights) on stderr."""
    from ptg.pipeline.storage.store import open_priors

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reader = open_priors(path)
    for w in caught:
        err_console.print(f"[bold yellow]warning:[/] {w.message}", highlight=False)
    return reader


@app.command("info")
def info(
    store: StoreArg,
    verify: Annotated[bool, typer.Option(help="Re-hash every committed shard against its commit record.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full metadata as JSON.")] = False,
) -> None:
    """Print a store's encoder, weights fingerprint, preprocessing, views, dtype, rows, history and health.

    Health is a fast check (every committed shard's file has its recorded size); --verify also
    re-hashes every shard's rows against its commit digest.
    """
    from ptg.pipeline.storage.store import quick_health, store_nbytes

    reader = open_store_loudly(store)
    meta = reader.metadata
    health = quick_health(reader.path) if reader.format == "zarr" else {"shards": 0, "problems": []}
    if as_json:
        console.print_json(json.dumps({**meta, "rows": len(reader), "format": reader.format, "health": health}))
        return
    enc = meta.get("encoder", {})
    pp = enc.get("preprocessing", {})
    lines = [
        ("store", f"{store} ({reader.format}, {human_bytes(store_nbytes(reader.path))})"),
        ("rows", f"{len(reader)} committed"),
        ("encoder", f"{enc.get('name')} {json.dumps(enc.get('details', {}))}"),
        ("weights", f"{'RANDOM INIT' if reader.random_init else enc.get('source')}"),
        ("fingerprint", str(meta.get("fingerprint"))),
        ("prior", f"{meta.get('dim')}-d: {enc.get('pooling')}"),
        ("preprocessing", json.dumps(pp)),
        ("views", f"{meta.get('views_spec')} ({len(reader.views)}: {', '.join(reader.views[:8])}{'...' if len(reader.views) > 8 else ''})"),
        ("dtype", str(meta.get("dtype"))),
        ("schema", f"{meta.get('schema_version')}, ptg {meta.get('package_version')}, rows/shard {meta.get('rows_per_shard')}"),
        ("created", f"{meta.get('created')} (updated {meta.get('updated', '-')})"),
        ("libraries", ", ".join(f"{k} {v}" for k, v in meta.get("libraries", {}).items())),
        ("skipped", f"{len(meta.get('skipped', []))}" + "".join(f"\n  {s['id']} (line {s['line']}): {s['reason']}" for s in meta.get("skipped", [])[:20])),
        ("runs", f"{len(meta.get('runs', []))}" + "".join(
            f"\n  {r['time']}: {r['computed']} computed, {r['reused']} reused, {r['skipped']} skipped, {r['seconds']} s ({r['manifest']})"
            for r in meta.get("runs", [])[-5:])),
    ]
    lines.append(("health", "ok (shard sizes match their commits; --verify re-hashes the data)" if not health["problems"]
                  else "PROBLEMS" + "".join(f"\n  {p}" for p in health["problems"][:20])))
    for k, v in lines:
        console.print(f"[bold]{k:>13}[/]  {v}", highlight=False, soft_wrap=True)
    if health["problems"] and not all("temporary file" in p for p in health["problems"]):
        raise PtgError(f"the priors store {store} is damaged ({len(health['problems'])} problem(s) above); run "
                       f"`ptg extract-priors` again with --out {store} to re-compute damaged shards")
    if verify:
        bad = reader.verify()
        if bad:
            raise PtgError(f"{len(bad)} shard(s) of {store} do not match their commit digests: {bad[:20]}")
        console.print("[green]verified[/]: every committed shard matches its digest")


@app.command("export")
def export(
    store: StoreArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write.")],
    fmt: Annotated[str, typer.Option("--format", help="Export format: h5.")] = "h5",
) -> None:
    """Export every committed row to HDF5 (datasets keys, priors; metadata as a JSON attribute)."""
    from ptg.pipeline.storage.store import export_hdf5

    if fmt not in ("h5", "hdf5"):
        raise PtgError(f"--format {fmt!r} is not supported; use h5")
    open_store_loudly(store)  # shows the random-init warning once
    path = export_hdf5(store, out)
    console.print(f"wrote {path} ({human_bytes(path.stat().st_size)})")


@app.command("probe")
def probe(
    store: StoreArg,
    manifest: Annotated[Path, typer.Option("--manifest", "-m", help="Manifest whose rows record their degradation (ptg data synth/samples).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for probe.md, probe.json and probe.png.")] = None,
    train_split: Annotated[str, typer.Option(help="Rows the probes are fit on.")] = "train",
    test_split: Annotated[str, typer.Option(help="Rows the probes are scored on.")] = "test",
    view: Annotated[str, typer.Option(help="The store's view to read.")] = "identity",
    root: RootOpt = None,
    allow_outside: AllowOutside = False,
) -> None:
    """Does a prior carry the degradation? Linear probes train -> test (R², accuracy vs chance), cosines, variance split."""
    from ptg.pipeline.core.fsio import atomic_write_json, atomic_write_text
    from ptg.pipeline.priors.probe import plot_report, probe_store

    open_store_loudly(store)  # shows the random-init warning once
    report = probe_store(store, manifest, train_split=train_split, test_split=test_split, view=view, root=root,
                         outside="allow" if allow_outside else "refuse")
    console.print(report.to_markdown(), highlight=False, soft_wrap=True, markup=False)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "probe.md", report.to_markdown())
        atomic_write_json(out / "probe.json", report.to_dict())
        plot_report(report, out / "probe.png")
        console.print(f"wrote {out / 'probe.md'}, probe.json, probe.png", highlight=False)


from .priors_copy_cmd import copy  # noqa: E402  (its own module; registered in this command group)

app.command("copy")(copy)
