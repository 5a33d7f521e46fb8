"""The budget chosen on validation only, by study v3's frozen rule (docs/RESULTS.md).

With one extra seed (never reported) and two arms, R on the first real prior ("main") and its
constant control, over a grid of lr × crop up to ``steps``: crop is the smallest at which the
constant control does not end below F on validation (crops tried in ascending order, larger ones
trained only when needed); lr is the main arm's best final validation score there; steps is the
first point after which its 5-point smoothed validation curve gains < 0.01 dB per 500 steps.
"""
from __future__ import annotations

import statistics
from typing import Any, Callable, Sequence

Curve = list[dict[str, float]]


def flat_step(points: Curve, window: int = 5, per_500: float = 0.01, floor: int = 500) -> int:
    """The first validation step after which the smoothed curve gains < ``per_500`` dB per 500 steps
    (at least ``floor`` and at most the last step)."""
    steps = [p["step"] for p in points]
    vals = [p["psnr"] for p in points]
    smooth = [statistics.fmean(vals[max(0, i - window // 2): i + window // 2 + 1]) for i in range(len(vals))]
    for i, s in enumerate(steps):
        rest = steps[-1] - s
        if rest == 0 or (smooth[-1] - smooth[i]) < per_500 * rest / 500:
            return int(min(max(s, floor), steps[-1]))
    return int(steps[-1])


def choose_crop(curves: dict[tuple[str, int, float], Curve], crop: int, lrs: Sequence[float],
                last_crop: int) -> dict[str, Any] | None:
    """At one crop: the main arm's best lr (final validation score) and whether the constant control
    at that lr ends at or above F on validation; None while it ends below F (try the next crop)."""
    lr = max(lrs, key=lambda lr: curves[("main", crop, lr)][-1]["psnr"])
    c = curves[("constant", crop, lr)][-1]
    if c["psnr"] < c["psnr_f"] and crop != last_crop:
        return None
    return {"crop": crop, "lr": lr, "constant_final": c["psnr"], "f_val": c["psnr_f"],
            "constant_below_f": c["psnr"] < c["psnr_f"]}


def choose_budget(crops: Sequence[int], lrs: Sequence[float], max_steps: int,
                  train_grid: Callable[[int], dict[tuple[str, int, float], Curve]]) -> dict[str, Any]:
    """Run the rule: ``train_grid(crop)`` trains both roles at every lr of one crop and returns their
    validation curves keyed (role, crop, lr). Returns crop, lr, steps and every curve trained."""
    curves: dict[tuple[str, int, float], Curve] = {}
    chosen = None
    for crop in sorted(crops):
        curves.update(train_grid(crop))
        chosen = choose_crop(curves, crop, lrs, max(crops))
        if chosen:
            break
    assert chosen is not None  # the last crop always chooses
    chosen["steps"] = min(flat_step(curves[("main", chosen["crop"], chosen["lr"])]), max_steps)
    chosen["max_steps"] = max_steps
    chosen["curves"] = {f"{r}-c{c}-lr{lr:g}": v for (r, c, lr), v in curves.items()}
    return chosen
