"""Markdown tables and a curve plot of a reproduction study (`python benchmarks/reproduce.py --report`).

Reads `benchmarks/results/reproduction.json` as `reproduce.py` writes it; kept apart from the runner
so the tables can be re-made anywhere from the results file alone (no torch, no ptg imports).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path


def _ms(values: list[float], digits: int = 2) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def _t(d: list[float]) -> str:
    """" t=…": the paired t statistic of the deltas (nothing for fewer than 2 or no spread)."""
    if len(d) < 2 or statistics.stdev(d) == 0:
        return ""
    return f" t={statistics.fmean(d) / (statistics.stdev(d) / len(d) ** 0.5):.1f}"


def report(path: Path) -> str:
    """Markdown: F-alone curves, per-level PSNR, paired deltas vs R:constant, wrong-prior drops, probes."""
    data = json.loads(path.read_text())
    if data.get("version") != 2:
        raise SystemExit(f"{path} holds no v2 study yet; run `python benchmarks/reproduce.py --config cpu` first")
    runs, out = data["runs"], []
    for task in dict.fromkeys(r["task"] for r in runs):
        rows = [r for r in runs if r["task"] == task]
        arms = list(dict.fromkeys(r["arm"] for r in rows))
        levels = [lv for lv in rows[0]["test"] if lv != "all"] + ["all"]
        out.append(f"\n### {task}\n")
        curve_arm = "F" if "F" in arms else "R:constant"
        steps = sorted({c["step"] for r in rows if r["arm"] == curve_arm for c in r["curve"]})
        out.append(f"Validation curve of {curve_arm} (64-px centre crops, mean ± sd over seeds): " + ", ".join(
            f"{s}: {_ms([c['psnr'] for r in rows if r['arm'] == curve_arm for c in r['curve'] if c['step'] == s])}" for s in steps) + "\n")
        out.append("PSNR (dB) per level, mean ± sd over seeds:\n")
        out.append("| arm | " + " | ".join(levels) + " | params of R |")
        out.append("|---|" + "---:|" * (len(levels) + 1))
        if rows[0]["mode"] == "refine":
            out.append("| F (frozen FFDNet) | " + " | ".join(_ms([rows[0]["test_f"][lv]["psnr"]]) for lv in levels) + " | — |")
        for arm in arms:
            rs = [r for r in rows if r["arm"] == arm]
            out.append(f"| {arm} | " + " | ".join(_ms([r["test"][lv]["psnr"] for r in rs]) for lv in levels)
                       + f" | {rs[0]['params']['refiner'] or '—'} |")
        const = {r["seed"]: r["test"] for r in rows if r["arm"] == "R:constant"}
        if const:
            out.append("\nΔPSNR vs R:constant, paired by seed (mean ± sd):\n")
            out.append("| arm | " + " | ".join(levels) + " | ΔSSIM×100 (all) |")
            out.append("|---|" + "---:|" * (len(levels) + 1))
            for arm in arms:
                rs = [r for r in rows if r["arm"] == arm and r["seed"] in const and arm != "R:constant"]
                if rs:
                    out.append(f"| {arm} | " + " | ".join(_ms([r["test"][lv]["psnr"] - const[r["seed"]][lv]["psnr"] for r in rs])
                                                      for lv in levels)
                               + f" | {_ms([100 * (r['test']['all']['ssim'] - const[r['seed']]['all']['ssim']) for r in rs])} |")
        refs = [a for a in ("R:constant", "R:shuffled", "R:zero", "LargeR", "F") if a in arms]
        if refs:  # the verdict table: does an arm beat each reference by more than the seed spread?
            out.append("\nΔPSNR (all levels) against each reference, paired by seed: mean ± sd [seeds with Δ > 0] "
                       "t = mean / (sd / √n) (|t| > 4.30 for p < 0.05 with 3 seeds, 2.78 with 5):\n")
            out.append("| arm | " + " | ".join(f"vs {a}" for a in refs) + " |")
            out.append("|---|" + "---:|" * len(refs))
            for arm in arms:
                cells = []
                for ref in refs:
                    base = {r["seed"]: r["test"]["all"]["psnr"] for r in rows if r["arm"] == ref}
                    d = [r["test"]["all"]["psnr"] - base[r["seed"]] for r in rows if r["arm"] == arm and r["seed"] in base]
                    cells.append("—" if arm == ref or not d else f"{_ms(d)} [{sum(x > 0 for x in d)}/{len(d)}]{_t(d)}")
                out.append(f"| {arm} | " + " | ".join(cells) + " |")
        wr = [r for r in rows if r["wrong"]]
        if wr:
            out.append("\nWrong-prior test: ΔPSNR (wrong − right prior), all test images, paired by seed:\n")
            kinds = sorted({k for r in wr for k in r["wrong"]})
            out.append("| arm | " + " | ".join(kinds) + " | worst level (other-level) |")
            out.append("|---|" + "---:|" * (len(kinds) + 1))
            for arm in dict.fromkeys(r["arm"] for r in wr):
                rs = [r for r in wr if r["arm"] == arm]
                cells = [_ms([r["wrong"][k]["all"]["psnr"] - r["test"]["all"]["psnr"] for r in rs if k in r["wrong"]]) for k in kinds]
                worst = "—"
                if all("other-level" in r["wrong"] for r in rs):
                    d = {lv: statistics.fmean(r["wrong"]["other-level"][lv]["psnr"] - r["test"][lv]["psnr"] for r in rs)
                         for lv in rs[0]["test"] if lv != "all"}
                    lv = min(d, key=d.get)
                    worst = f"{lv}: {d[lv]:.2f}"
                out.append(f"| {arm} | " + " | ".join(cells) + f" | {worst} |")
    out += probe_table(data.get("probes", {}))
    return "\n".join(out) + "\n"


def probe_table(probes_by_data: dict) -> list[str]:
    """The probe scores of each data set's stores (`ptg priors probe`), one row per field: the
    library's table (`ptg.ptgrm.study.report.probe_table`) under this report's heading."""
    from ptg.ptgrm.study.report import probe_table as table

    return ["\n### Probes (`ptg priors probe`, train photos -> test photos)\n", *table(probes_by_data)]


def mean_curves(runs: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """Per arm, in the runs' order: the validation steps and the mean PSNR over the arm's runs at each."""
    by: dict[str, dict[int, list[float]]] = {}
    for r in runs:
        for c in r["curve"]:
            by.setdefault(r["arm"], {}).setdefault(c["step"], []).append(c["psnr"])
    return {arm: (sorted(v), [statistics.fmean(v[s]) for s in sorted(v)]) for arm, v in by.items()}


def plot_curves(path: Path, out: Path) -> Path:
    """Validation PSNR against steps, mean over seeds, one panel per task and one line per arm
    (each arm in the same colour in every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = json.loads(path.read_text())["runs"]
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    arms = list(dict.fromkeys(r["arm"] for r in runs))
    cmap, n = (plt.get_cmap("tab10"), 10) if len(arms) <= 10 else (plt.get_cmap("tab20"), 20)
    colour = {a: cmap(i % n) for i, a in enumerate(arms)}
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 1.8, 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in runs if r["task"] == task]
        for arm, (steps, means) in mean_curves(rows).items():
            ax.plot(steps, means, color=colour[arm], linewidth=2.2 if arm in ("F", "R:constant", "R:degradation") else 1.0)
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylabel("validation PSNR (dB), 64-px centre crops", fontsize=8)
        ax.grid(alpha=0.3)
    fig.legend([plt.Line2D([], [], color=colour[a]) for a in arms], arms, loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 1.6 / fig.get_figwidth(), 1))
    fig.savefig(out, dpi=110)
    return out
