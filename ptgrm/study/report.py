"""The verdict of a study, from its run records alone (no torch; scipy for the t distribution).

Records are the dicts `ptg.ptgrm.study.runs.run_one` returns (``f``, ``arm``, ``seed``, ``test``
per level, ``test_f``, ``wrong``, ``curve``, ``params``); study v3's recorded runs
(`benchmarks/results/reproduction_v3.json`) have the same form, so the same functions re-report it.

Verdict rule (docs/RESULTS.md, v3): a real prior "boosts beyond capacity and controls" only if
R+prior − max(best control, Large R) > 0 with p < 0.05, paired by seed.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Sequence

CONTROL_NAMES = ("constant", "shuffled", "zero")
LARGE_R = "LargeR"
ALPHA = 0.05  # the verdict's significance level (two-sided, paired t)


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any] | None:
    """Mean, sd, paired t, two-sided p and positives of a − b over the seeds both have (None: < 2)."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = [a[s] - b[s] for s in seeds]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    if sd > 0:
        t = mean / (sd / math.sqrt(len(d)))
    else:  # every seed the same difference: none, or a sure one
        t = 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return {"n": len(d), "mean": mean, "sd": sd, "t": t, "p": float(2 * stats.t.sf(abs(t), len(d) - 1)),
            "positive": sum(x > 0 for x in d)}


def real_arms_of(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The real-prior arms, in the records' order (records of `ptg study` carry their role)."""
    return list(dict.fromkeys(r["arm"] for r in runs if r.get("role") == "real"))


def verdicts(runs: Sequence[dict[str, Any]], level: str = "all", groups: Sequence[str] | None = None,
             real_arms: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per F and real arm: R+real − F alone, − its best control, − Large R (PSNR, paired by seed)."""
    by: dict[tuple[str, str], dict[int, float]] = {}
    f_alone: dict[str, dict[int, float]] = {}
    for r in runs:
        if level in r["test"]:
            by.setdefault((r["f"], r["arm"]), {})[r["seed"]] = r["test"][level]["psnr"]
            f_alone.setdefault(r["f"], {})[r["seed"]] = r["test_f"][level]["psnr"]
    rows = []
    for f in groups or list(dict.fromkeys(r["f"] for r in runs)):
        for arm in real_arms or real_arms_of(runs):
            real = by.get((f, arm))
            if not real:
                continue
            ctrl = {c: by.get((f, f"{arm}:{c}"), {}) for c in CONTROL_NAMES}
            best = max((c for c in ctrl if ctrl[c]), key=lambda c: statistics.fmean(ctrl[c].values()), default=None)
            rows.append({"f": f, "arm": arm, "level": level, "seeds": sorted(real),
                         "vs_f": paired(real, f_alone[f]), "best_control": best,
                         "vs_best_control": paired(real, ctrl[best]) if best else None,
                         "vs_large_r": paired(real, by.get((f, LARGE_R), {}))})
    return rows


def boosts(v: dict[str, Any]) -> str:
    """The verdict of one row: beyond max(best control, Large R) at p < ALPHA, or why not."""
    refs = {"the best control": v["vs_best_control"], "Large R": v["vs_large_r"]}
    missing = [k for k, d in refs.items() if d is None]
    if missing:
        return f"not decided (no {' or '.join(missing)})"
    short = [k for k, d in refs.items() if not (d["mean"] > 0 and d["p"] < ALPHA)]
    return "yes" if not short else "no: not above " + " nor ".join(short) + f" at p < {ALPHA:g}"


def cell(d: dict[str, Any] | None, positives: bool = True) -> str:
    if not d:
        return "–"
    pos = f", {d['positive']}/{d['n']} > 0" if positives and "positive" in d else ""
    return f"{d['mean']:+.3f} ± {d['sd']:.3f} (t={d['t']:.2f}, p={d['p']:.3f}, n={d['n']}{pos})"


def levels_of(runs: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({lv for r in runs for lv in r["test"]}, key=lambda lv: (lv != "all", lv))


def verdict_table(runs: Sequence[dict[str, Any]], groups: Sequence[str] | None = None,
                  real_arms: Sequence[str] | None = None, positives: bool = True) -> list[str]:
    """Markdown: one row per F, real arm and level ("all" first); PSNR differences in dB."""
    lines = ["| F | arm | level | R+real − F alone | R+real − best control | best control | R+real − Large R |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for lv in levels_of(runs):
        for v in verdicts(runs, lv, groups, real_arms):
            lines.append(f"| {v['f']} | {v['arm']} | {lv} | {cell(v['vs_f'], positives)} | "
                         f"{cell(v['vs_best_control'], positives)} | {v['best_control'] or '–'} | "
                         f"{cell(v['vs_large_r'], positives)} |")
    return lines


def arms_table(runs: Sequence[dict[str, Any]], params: dict[tuple[str, str], int | None] | None = None) -> list[str]:
    """Markdown: every arm's test PSNR (mean ± sd over seeds), with F alone and R's parameters."""
    means: dict[tuple[str, str], list[float]] = {}
    f_alone: dict[str, dict[int, float]] = {}
    params = dict(params or {})
    for r in runs:
        means.setdefault((r["f"], r["arm"]), []).append(r["test"]["all"]["psnr"])
        f_alone.setdefault(r["f"], {})[r["seed"]] = r["test_f"]["all"]["psnr"]  # the same cached F in every arm
        params.setdefault((r["f"], r["arm"]), r.get("params"))
    for f, by_seed in f_alone.items():
        means[(f, "F alone")] = list(by_seed.values())
    lines = ["| F | arm | R's parameters | test PSNR (mean ± sd over seeds) | seeds |", "| --- | --- | ---: | --- | --- |"]
    for (f, arm), v in sorted(means.items()):
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        n = params.get((f, arm))
        lines.append(f"| {f} | {arm} | {'–' if n is None else f'{n:,}'} | {statistics.fmean(v):.3f} ± {sd:.3f} | {len(v)} |")
    return lines


def wrong_table(runs: Sequence[dict[str, Any]], positives: bool = True) -> list[str]:
    """Markdown: test PSNR with another level's / another image's prior minus with its own."""
    kinds = [k for k in ("other-level", "other-image") if any(k in r.get("wrong", {}) for r in runs)]
    lines = ["| F | arm | " + " | ".join(kinds) + " |", "| --- | --- |" + " --- |" * len(kinds)]
    for f, arm in dict.fromkeys((r["f"], r["arm"]) for r in runs if r.get("wrong")):
        rs = [r for r in runs if r["f"] == f and r["arm"] == arm]
        cells = [cell(paired({r["seed"]: r["wrong"][k]["all"]["psnr"] for r in rs if k in r["wrong"]},
                             {r["seed"]: r["test"]["all"]["psnr"] for r in rs}), positives) for k in kinds]
        lines.append(f"| {f} | {arm} | " + " | ".join(cells) + " |")
    return lines if kinds else ["(no wrong-prior test: one test image per level and one level)"]


def probe_table(probes_by_group: dict[str, dict[str, Any]]) -> list[str]:
    """The probe scores of each store (`ptg priors probe`, train rows -> test rows), one row per field."""
    out = ["| data | prior | field | none | l2 | standardize | chance | between-group var (l2) |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
    fmt = lambda r: "—" if r is None or r["score"] is None else f"{r['score']:.2f}"  # noqa: E731
    for group, probes in probes_by_group.items():
        for prior, rep in probes.items():
            if "error" in rep:
                out.append(f"| {group} | {prior} | not probed: {rep['error']} | | | | | |")
                continue
            for fld in dict.fromkeys(r["field"] for r in rep["rows"]):
                by = {r["normalize"]: r for r in rep["rows"] if r["field"] == fld}
                if all(r["score"] is None for r in by.values()):
                    continue
                any_r = next(iter(by.values()))
                bv = by.get("l2", any_r)["between_var"]
                out.append(f"| {group} | {prior} | {fld} | {fmt(by.get('none'))} | {fmt(by.get('l2'))} | "
                           f"{fmt(by.get('standardize'))} | {'—' if any_r['chance'] is None else format(any_r['chance'], '.2f')} | "
                           f"{'—' if bv is None else format(bv, '.3f')} |")
            cos = rep["mean_cosine"]
            out.append(f"| {group} | {prior} | mean pairwise cosine | {cos.get('none', float('nan')):.2f} | "
                       f"{cos.get('l2', float('nan')):.2f} | {cos.get('standardize', float('nan')):.2f} | — | — |")
    return out


def mean_curves(runs: Sequence[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """Per arm, in the runs' order: the validation steps and the mean PSNR over the arm's runs at each."""
    by: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        for c in r["curve"]:
            by.setdefault(r["arm"], {}).setdefault(c["step"], []).append(c["psnr"])
    return {arm: (sorted(v), [statistics.fmean(v[s]) for s in sorted(v)]) for arm, v in by.items()}


def plot_curves(runs: Sequence[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Validation PSNR against steps: each arm's mean over its seeds, F alone in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.0, 4.6))
    cmap = plt.get_cmap("tab20")
    for i, (arm, (steps, means)) in enumerate(mean_curves(runs).items()):
        ax.plot(steps, means, color=cmap(i % 20), label=arm, linewidth=2.0 if ":" not in arm[2:] else 0.9)
    f_curve = [c for c in (runs[0]["curve"] if runs else []) if "psnr_f" in c]
    if f_curve:
        ax.plot([c["step"] for c in f_curve], [c["psnr_f"] for c in f_curve], color="black", linewidth=2.0, label="F alone")
    ax.set(xlabel="step", ylabel="validation PSNR (dB)", title=title or "validation curves, mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the lines stay visible
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_verdict(rows: Sequence[dict[str, Any]], out: Path) -> Path:
    """Bars: R+prior − F alone, − best control, − Large R per real arm (mean ± sd over seeds, dB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("vs_f", "− F alone"), ("vs_best_control", "− best control"), ("vs_large_r", "− Large R"))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.8 * len(rows) + 2), 3.8))
    for k, (key, label) in enumerate(keys):
        xs = [i + (k - 1) * 0.27 for i in range(len(rows))]
        ds = [r[key] for r in rows]
        ax.bar(xs, [d["mean"] if d else 0 for d in ds], 0.25, yerr=[d["sd"] if d else 0 for d in ds], label=label, capsize=3)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), [r["arm"] for r in rows], fontsize=8)
    ax.set_ylabel("test PSNR difference (dB)")
    ax.set_title("R+prior minus each reference, mean ± sd over seeds", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def markdown(results: dict[str, Any]) -> str:
    """report.md of a study's results.json content."""
    runs, plan, b = results["runs"], results["plan"], results["budget"]
    how = " (chosen on validation)" if plan.get("budget_mode") == "val" else ""
    lines = [f"# Study: does a prior help {plan['f']}?", "",
             f"{len(runs)} of {results['planned_runs']} runs done; seeds {plan['seeds']}; "
             f"budget{how}: crop {b['crop']}, lr {b['lr']:g}, {b['steps']} steps; "
             f"test scored once per run on last.pt. PSNR in dB, paired by seed (mean ± sd, paired t, two-sided p, "
             f"seeds with a positive difference).", ""]
    rows = verdicts(runs)
    if rows:
        lines += ["## Verdict", "", "| arm | boosts beyond capacity and controls? |", "| --- | --- |"]
        lines += [f"| {v['arm']} | {boosts(v)} |" for v in rows] + [""]
    lines += ["## R+prior against F alone, its best control and Large R", "", *verdict_table(runs), "",
              "![verdict](verdict.png)", "", "## Every arm", "", *arms_table(runs), "",
              "![validation curves](curves.png)", "", "## Wrong-prior test", "",
              "Test PSNR with another level's / another image's prior minus with its own (does R read the prior?):", "",
              *wrong_table(runs), "", "## Probes (`ptg priors probe`: what the stored priors carry)", "",
              *probe_table({plan["f"]: results.get("probes", {})})]
    if plan.get("oracle_note"):
        lines += ["", f"Note: {plan['oracle_note']}."]
    return "\n".join(lines) + "\n"
