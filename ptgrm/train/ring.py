"""Training batches written in place into a ring of preallocated shared-memory slots.

Why: torch's DataLoader collates each batch in its worker into fresh shared memory and sends the
batch's file descriptors and pickled tensors through a queue. Allocating and first touching the
3.1 MB of a uint8 batch (8 pairs of 256² crops) costs ~1 ms on a small CPU against ~0.1 ms for
writing memory touched before, and that cost was most of what a worker added to a batch
(benchmarks/results/loader.md). Here the slots are allocated once, before the workers start, and
mapped by every process; a worker writes batch ``b``'s crops straight into slot ``b % N`` and
returns only the int ``b``; the training process hands out views of that slot.

The batches, their bits and their order are those of `TrainDataset` items stacked by torch's
collate: each sample is `TrainDataset.fill`'s, and the DataLoader delivers in order.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from .data import TrainDataset

Key = tuple[int, int]  # a sample: (epoch, index), as `TrainDataset` takes it


def ring_slots(workers: int, prefetch: int) -> int:
    """How many slots a ring needs so that no slot is rewritten while its batch may still be read.

    The DataLoader delivers batches in order and sends one new batch number to its workers per
    batch delivered, so at most ``workers × prefetch`` batches after the last one delivered are
    being written. The consumer reads at most two: the batch it trains on and the one before it
    (a batch may still be on its way to the device while the next is fetched). In process (no
    workers) a batch is written only when asked for: those two slots suffice.
    """
    return workers * prefetch + 2 if workers else 2


class BatchRing(Dataset):
    """Batches of a `TrainDataset`, each written into one of ``slots`` preallocated shared buffers.

    Indexed by ``(b, keys)``: fills slot ``b % slots`` with the samples ``keys`` and returns ``b``.
    `batch(b)` is then the trainer's batch dict of views of that slot: valid until ``slots - 1``
    further batches have been asked for (`ring_slots` sizes it for the DataLoader's prefetch).
    Memory: ``slots`` batches, two more than torch's own batching keeps in flight with workers.
    """

    def __init__(self, dataset: TrainDataset, batch_size: int, slots: int):
        self.dataset = dataset
        self.slots = [{name: torch.empty((batch_size, *shape), dtype=dtype).share_memory_()
                       for name, (shape, dtype) in dataset.fields().items()} for _ in range(slots)]
        self.n_priors = len(dataset.tables)

    def __getitem__(self, task: tuple[int, Sequence[Key]]) -> int:
        b, keys = task
        # numpy views made here, in the process that writes: a numpy array would be pickled as a copy
        rows = {name: t.numpy() for name, t in self.slots[b % len(self.slots)].items()}
        for i, key in enumerate(keys):
            self.dataset.fill(key, {name: r[i, ...] for name, r in rows.items()})  # [i, ...]: a view, even 0-d
        return b

    def batch(self, b: int, pin: bool = False) -> dict[str, Any]:
        """Batch ``b`` as `TrainDataset` items stacked: ``x``, ``y``, ``priors`` (a list), ``view``, ``ihat``.

        pin: copy it into page-locked memory for a non-blocking copy to a GPU (what the DataLoader's
        ``pin_memory`` did). The copy frees the slot at once, and torch's pinned-memory allocator
        reuses a block only after the device copies from it have finished.
        """
        slot = self.slots[b % len(self.slots)]
        out = {name: t.pin_memory() if pin else t for name, t in slot.items()}
        out["priors"] = [out.pop(f"prior{i}") for i in range(self.n_priors)]
        return out


def ring_batches(ring: BatchRing, keys: Sequence[Key], batch_size: int, workers: int, prefetch: int,
                 worker_init: Callable[[int], None] | None = None, pin: bool = False) -> Iterator[dict[str, Any]]:
    """The batches of ``keys`` (whole batches only, in order) through `ring`, in process or by ``workers``.

    A worker's error is raised here as the DataLoader raises it (same type, its message and traceback).
    """
    assert len(ring.slots) >= ring_slots(workers, prefetch), (len(ring.slots), workers, prefetch)
    tasks = [(b, tuple(keys[i : i + batch_size])) for b, i in enumerate(range(0, len(keys) - batch_size + 1, batch_size))]
    if not workers:
        for task in tasks:
            yield ring.batch(ring[task], pin)
        return
    loader = DataLoader(ring, batch_size=None, sampler=tasks, num_workers=workers, prefetch_factor=prefetch,
                        worker_init_fn=worker_init)
    for want, b in enumerate(loader):
        assert b == want, (b, want)  # in order: `ring_slots`'s bound rests on it
        yield ring.batch(b, pin)

