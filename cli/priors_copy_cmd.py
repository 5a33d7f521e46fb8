"""`ptg priors copy SRC DST`: publish or pull a priors store (local folder <-> bucket, bucket <-> bucket)."""
from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated

import typer

from .console import console, progress_bar


def copy(
    src: Annotated[str, typer.Argument(help="The store to copy: a folder or s3://bucket/prefix (gs://, az://).")],
    dst: Annotated[str, typer.Argument(help="Where to: a folder or a bucket URL; only the shards it lacks are sent.")],
    force: Annotated[bool, typer.Option("--force", help="Write into a DST that holds other files/objects (nothing of theirs is deleted).")] = False,
) -> None:
    """Copy every committed shard SRC has and DST lacks, verified against its commit record; resumable.

    Each shard object is stored before its commit record, so a copy cut at any moment leaves DST
    readable and the same command finishes it. Credentials and endpoints come from the service's
    environment (for S3: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION).
    """
    from ptg.pipeline.storage.storecopy import copy_store

    with ExitStack() as stack:
        state: dict = {}

        def on_plan(n: int) -> None:
            if n:
                state["advance"] = stack.enter_context(progress_bar(n, "copy", unit="shard"))

        def on_progress(n: int) -> None:
            if "advance" in state:
                state["advance"](n)

        summary = copy_store(src, dst, force=force, on_plan=on_plan, on_progress=on_progress)
    console.print(f"[bold green]done[/]: {summary.copied} shard(s) copied ({summary.nbytes} bytes), {summary.present} "
                  f"already at {dst}, in {summary.seconds:.1f} s", highlight=False, soft_wrap=True)
