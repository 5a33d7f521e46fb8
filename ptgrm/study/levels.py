"""Degradation levels of test rows, and the wrong-prior maps built from them (study v2/v3's rules).

A level is what the report breaks results down by: the noise σ, the blur kind, the exposure band
of the low-light task, or the task itself; rows without a recorded degradation have none.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def level_of(extra: Mapping[str, Any]) -> str | None:
    """The degradation level a test row is reported under (None: the row records none)."""
    from ptg.pipeline.encoders.degradation import row_task

    d, task = extra.get("degradation"), row_task(extra)
    if not isinstance(d, Mapping):  # `ptg demo`'s blind manifest records only the row's sigma
        return f"sigma={extra['sigma']:g}" if isinstance(extra.get("sigma"), (int, float)) else None
    if task == "denoise" and isinstance(d.get("sigma"), (int, float)):
        return f"sigma={d['sigma']:g}"
    if task == "blur" and d.get("kind"):
        return f"blur-{d['kind']}"
    if task == "lowlight" and extra.get("task") == "lowlight" and isinstance(d.get("exposure"), (int, float)):
        return "exp<0.10" if d["exposure"] < 0.10 else "exp<0.15" if d["exposure"] < 0.15 else "exp>=0.15"
    return task


def wrong_maps(test: Sequence[Any]) -> dict[str, dict[str, str]]:
    """Test-row key -> the key whose prior it gets: ``other-level`` (same photo, the next level in a
    fixed cycle) and ``other-image`` (the next photo, same level); deterministic, kinds that map
    nothing left out (one level: no other-level; one image per level: no other-image)."""
    from ptg.pipeline.storage.store import sample_keys

    keys = dict(zip((s.id for s in test), sample_keys(test)))
    by_level: dict[str, list] = {}
    for s in test:
        by_level.setdefault(level_of(s.extra) or "all", []).append(s)
    levels = sorted(by_level)
    maps: dict[str, dict[str, str]] = {"other-level": {}, "other-image": {}}
    for li, lv in enumerate(levels):
        group = sorted(by_level[lv], key=lambda s: s.extra.get("photo", s.id))
        for j, s in enumerate(group):
            if len(group) > 1:
                maps["other-image"][keys[s.id]] = keys[group[(j + 1) % len(group)].id]
            if len(levels) > 1:
                nxt = by_level[levels[(li + 1) % len(levels)]]
                same = [t for t in nxt if t.extra.get("photo") == s.extra.get("photo")]
                maps["other-level"][keys[s.id]] = keys[(same or sorted(nxt, key=lambda t: t.id))[0].id]
    return {k: v for k, v in maps.items() if v}
