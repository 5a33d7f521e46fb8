"""``report.html``: one self-contained page over a set of evaluations (no server, no network).

The page holds the comparison table (the paper's Table 1 layout), the bar chart, one table of
per-image scores (sortable, filterable), the images where R helped most and hurt most, and for
each shown image a before/after viewer: a slider between two of input, F, F + R and target, with
1-8x pixel zoom, above the four side by side. Every image is embedded as a lossless PNG data URI
(the pixels shown are the pixels scored, as 8-bit PNGs), once even when several cards or
evaluations show it (the inputs and targets of one test set are shared); the inline script and
style are the only code. Names and ids come from files a teammate may share: all text is
HTML-escaped, image paths are taken only inside each eval folder (`member_path`), and the
embedded bytes are bounded (`MAX_EMBED_BYTES`).
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.core.fsio import member_path
from ptg.pipeline.core.limits import read_json

from .report import EvalSummary, comparison_table, expand_sources, load_summary, pick_crop, write_report

CROP = 256  # the side of the shown crop (at native resolution; where F is worst, as in the eval grids)
PER_EVAL = 8  # before/after viewers per evaluation: the most helped and hurt first, then the rest in order
EXTREMES = 3  # images listed as "R helped most" and "R hurt most" per evaluation
MAX_EMBED_BYTES = 48 << 20  # embedded PNG bytes; past it no more viewers are added (the page says so)
MAX_ROWS = 100_000  # per-image rows read from one metrics.json
PANELS = (("input", "input"), ("baseline", "F"), ("ptgrm", "F + R"), ("target", "target"))


@dataclass
class ImageRow:
    """One image of one evaluation: its scores and, once embedded, its panels."""

    run: int  # index of the evaluation in the report
    id: str  # manifest id
    base: dict[str, float]  # F's metrics
    refined: dict[str, float] | None  # F + R's metrics (None: F alone)
    panels: dict[str, str] = field(default_factory=dict)  # panel key -> CSS class of its embedded image
    size: tuple[int, int] = (0, 0)  # (width, height) of the embedded crop

    @property
    def delta(self) -> float:
        """ΔPSNR of F + R over F (nan without R)."""
        if self.refined is None:
            return math.nan
        return self.refined.get("psnr", math.nan) - self.base.get("psnr", math.nan)


def _numbers(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise PtgError(f"{where} must map metric names to numbers; the file is damaged or not from `ptg eval`")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, (int, float)) or isinstance(v, bool):
            raise PtgError(f"{where}.{k!s:.40} must be a number; the file is damaged or not from `ptg eval`")
        out[k] = float(v)
    return out


def load_rows(summary: EvalSummary, run: int) -> list[ImageRow]:
    """The scored images of an evaluation, from its metrics.json (type-checked; unscored rows skipped)."""
    if summary.source is None:
        return []
    data = read_json(summary.source, "metrics file")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        return []  # a `--pred` JSON with images as a mapping: no per-image rows to show
    if len(images) > MAX_ROWS:
        raise PtgError(f"{summary.source} lists {len(images)} images; a report reads at most {MAX_ROWS}")
    rows = []
    for i, r in enumerate(images):
        where = f"{summary.source}: images[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            raise PtgError(f"{where} must be an object with a string id; the file is damaged or not from `ptg eval`")
        if "baseline" in r:
            refined = _numbers(r["ptgrm"], where + ".ptgrm") if r.get("ptgrm") is not None else None
            rows.append(ImageRow(run, r["id"], _numbers(r["baseline"], where + ".baseline"), refined))
    return rows


def pick_shown(rows: Sequence[ImageRow], n: int = PER_EVAL, k: int = EXTREMES) -> tuple[list[ImageRow], list[ImageRow], list[ImageRow]]:
    """(helped most, hurt most, shown): the ``k`` largest gains and losses in PSNR, then the viewers'
    ``n`` images — the extremes first, then the rest in the evaluation's order."""
    with_r = sorted((r for r in rows if not math.isnan(r.delta)), key=lambda r: r.delta)
    helped = [r for r in reversed(with_r) if r.delta > 0][:k]
    hurt = [r for r in with_r if r.delta < 0][:k]
    shown: list[ImageRow] = []
    for r in [*helped, *hurt, *rows]:
        if len(shown) >= n:
            break
        if all(r is not s for s in shown):
            shown.append(r)
    return helped, hurt, shown


class Embedder:
    """Lossless PNG data URIs, each distinct image once (as a CSS class), within a byte budget."""

    def __init__(self, budget: int = MAX_EMBED_BYTES):
        self.budget, self.used = budget, 0
        self.classes: dict[str, str] = {}  # sha256 of the PNG -> CSS rule
        self.skipped = 0  # viewers left out over the budget

    def add(self, img: np.ndarray) -> str:
        from PIL import Image

        from ptg.pipeline.core.imageio import to_uint8

        buf = io.BytesIO()
        Image.fromarray(to_uint8(img)).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
        key = hashlib.sha256(data).hexdigest()[:16]
        if key not in self.classes:
            self.used += len(data)
            self.classes[key] = f".i{key}{{background-image:url(data:image/png;base64,{base64.b64encode(data).decode()})}}"
        return f"i{key}"

    def css(self) -> str:
        return "\n".join(self.classes.values())


def _read_panels(folder: Path, row: ImageRow) -> dict[str, np.ndarray]:
    """The images of ``row`` found in the eval folder (F, F + R, input, target; any may be missing)."""
    from ptg.pipeline.core.imageio import read_image

    found = {}
    for key, _ in PANELS:
        try:
            path = member_path(folder / "images" / key, row.id + ".png", "image of the eval folder")
        except PtgError:
            return {}  # an id that is no plain relative name shows scores only
        if path.is_file():
            found[key] = read_image(path)
    shapes = {a.shape for a in found.values()}
    return found if len(shapes) == 1 else {k: v for k, v in found.items() if v.shape == found.get("baseline", v).shape}


def embed_row(folder: Path, row: ImageRow, emb: Embedder, crop: int = CROP) -> bool:
    """Crop ``row``'s images where F is worst and embed them; False when nothing (or no budget) is left."""
    imgs = _read_panels(folder, row)
    if "baseline" not in imgs:
        return False
    need = sum(a[:crop, :crop].size for a in imgs.values())  # raw bytes: a PNG is rarely larger
    if emb.used + need > emb.budget:
        emb.skipped += 1
        return False
    f = imgs["baseline"]
    err = np.abs(f - imgs["target"]).mean(axis=-1) if "target" in imgs else None
    top, left, side = pick_crop(f.shape, err, size=crop) if max(f.shape[:2]) > crop else (0, 0, max(f.shape[:2]))
    for key, img in imgs.items():
        row.panels[key] = emb.add(img[top : top + side, left : left + side])
    shown = f[top : top + side, left : left + side]
    row.size = (shown.shape[1], shown.shape[0])
    return True


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def md_table_html(md: str) -> str:
    """The Markdown of `comparison_table` (already `md_text`-escaped cells) as an HTML table and notes."""
    cells = lambda line: [re.sub(r"\\(.)", r"\1", c.strip()) for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # noqa: E731
    lines = md.splitlines()
    rows = [cells(ln) for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    out = ["<table class='t1'><thead><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in rows[0]) + "</tr></thead><tbody>"]
    for r in rows[1:]:
        tds = []
        for c in r:
            m = re.fullmatch(r"(.*)\(([+-][\d.]+)\)", c)
            cls = "" if not m else " class='up'" if m.group(2).startswith("+") and float(m.group(2)) > 0 else " class='down'" if float(m.group(2)) < 0 else ""
            tds.append(f"<td{cls}>{_esc(c)}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    notes = [re.sub(r"\\(.)", r"\1", ln[len("- note: "):]) for ln in lines if ln.startswith("- note: ")]
    foot = [ln for ln in lines if ln.startswith("(+)")]
    out += [f"<p class='note'>{_esc(n)}</p>" for n in foot + notes]
    return "\n".join(out)


def _fmt(v: float | None, digits: int, signed: bool = False) -> str:
    if v is None or math.isnan(v):
        return ""
    return "inf" if math.isinf(v) else f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def _updown(v: float) -> str:
    return "up" if v > 0 else "down" if v < 0 else ""


def runs_table(summaries: Sequence[EvalSummary]) -> str:
    """One row per evaluation: its provenance and mean PSNR/SSIM of F, of F + R, and the change."""
    head = ["Run", "Dataset", "F", "Prior", "Mode", "Images", "F PSNR", "F + R PSNR", "ΔPSNR", "F SSIM", "F + R SSIM", "ΔSSIM"]
    out = ["<table class='runs'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for s in summaries:
        ref = s.refined or {}
        dp = ref.get("psnr", math.nan) - s.base["psnr"]
        ds = ref.get("ssim", math.nan) - s.base["ssim"]
        cells = [_esc(s.label), _esc(s.dataset), _esc(s.baseline), _esc(s.prior or "-"), _esc(s.mode or "-"), str(s.n),
                 _fmt(s.base["psnr"], 2), _fmt(ref.get("psnr"), 2), f"<span class='{_updown(dp)}'>{_fmt(dp, 2, True)}</span>",
                 _fmt(s.base["ssim"], 4), _fmt(ref.get("ssim"), 4), f"<span class='{_updown(ds)}'>{_fmt(ds, 4, True)}</span>"]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out + ["</tbody></table>"])


def scores_table(rows: Sequence[ImageRow], summaries: Sequence[EvalSummary]) -> str:
    """Every scored image of every evaluation; the script sorts it by any column and filters it."""
    head = [("Run", "t"), ("Image", "t"), ("F PSNR", "n"), ("F + R PSNR", "n"), ("ΔPSNR", "n"), ("F SSIM", "n"),
            ("F + R SSIM", "n"), ("ΔSSIM", "n")]
    out = ["<table class='scores' id='scores'><thead><tr>"
           + "".join(f"<th data-type='{t}' tabindex='0'>{h}</th>" for h, t in head) + "</tr></thead><tbody>"]
    for r in rows:
        ref = r.refined or {}
        vals = [(r.base.get("psnr"), 2), (ref.get("psnr"), 2), (r.delta, 2), (r.base.get("ssim"), 4), (ref.get("ssim"), 4),
                (ref.get("ssim", math.nan) - r.base.get("ssim", math.nan), 4)]
        name = _esc(r.id) if not r.panels else f"<a href='#{_card_id(r)}'>{_esc(r.id)}</a>"
        tds = [f"<td>{_esc(summaries[r.run].label)}</td>", f"<td>{name}</td>"]
        for i, (v, d) in enumerate(vals):
            v = math.nan if v is None else v
            cls = f" class='{_updown(v)}'" if i in (2, 5) else ""
            tds.append(f"<td data-v='{v if math.isfinite(v) else ''}'{cls}>{_fmt(v, d, i in (2, 5))}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    return "\n".join(out + ["</tbody></table>"])


def _card_id(r: ImageRow) -> str:
    return f"c{r.run}-" + hashlib.sha256(r.id.encode()).hexdigest()[:12]


def card(r: ImageRow, s: EvalSummary) -> str:
    """A before/after viewer of one image: a slider between two panels, zoom, and the four side by side."""
    names = dict(PANELS)
    have = [k for k, _ in PANELS if k in r.panels]
    a, b = ("baseline", "ptgrm") if "ptgrm" in have else ("input", "baseline")
    opts = lambda sel: "".join(f"<option value='{k}'{' selected' if k == sel else ''}>{names[k]}</option>" for k in have)  # noqa: E731
    ref = r.refined or {}
    score = {"baseline": r.base.get("psnr"), "ptgrm": ref.get("psnr")}
    badge = "" if math.isnan(r.delta) else f"<span class='badge {_updown(r.delta)}'>{_fmt(r.delta, 2, True)} dB</span>"
    w, h = r.size
    thumbs = "".join(f"<figure><div class='thumb {r.panels[k]}' style='--ar:{w}/{h}'></div><figcaption>{names[k]}"
                     f"{' ' + _fmt(score[k], 2) + ' dB' if score.get(k) is not None else ''}</figcaption></figure>" for k in have)
    return (f"<div class='card' id='{_card_id(r)}'><div class='head'><b>{_esc(r.id)}</b>{badge}"
            f"<span class='run'>{_esc(s.label)}</span></div>"
            f"<div class='viewer' data-panels='{_esc(_json(r.panels))}' data-z='{_zoom(w, h)}'>"
            f"<div class='ctrl'><label>left <select class='sa'>{opts(a)}</select></label>"
            f"<label>right <select class='sb'>{opts(b)}</select></label><span class='zoom'>"
            + "".join(f"<button data-z='{z}'>{z}×</button>" for z in (1, 2, 4, 8))
            + f"</span></div><div class='frame'><div class='stage'><div class='zoomed' style='--w:{w}px;--h:{h}px'>"
            f"<div class='layer lb {r.panels[b]}'></div><div class='layer la {r.panels[a]}'></div><div class='bar'></div>"
            "</div></div><div class='caps'><span class='ca'></span><span class='cb'></span></div></div></div>"
            f"<div class='strip'>{thumbs}</div></div>")


def _zoom(w: int, h: int, fit: int = 512) -> int:
    """The viewer's first zoom: the largest of 1, 2, 4, 8 that keeps the crop within ``fit`` pixels."""
    return max([z for z in (1, 2, 4, 8) if max(w, h) * z <= fit] or [1])


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, sort_keys=True)


def eval_section(s: EvalSummary, rows: list[ImageRow], folder: Path, emb: Embedder, per_eval: int) -> str:
    """One evaluation's images: where R helped most, where it hurt most, and more, each a viewer."""
    helped, hurt, shown = pick_shown(rows, per_eval)
    for r in shown:
        embed_row(folder, r, emb)
    parts = [f"<section class='eval'><h2>{_esc(s.label)} <small>{_esc(s.dataset)} · F {_esc(s.baseline)}"
             f"{' · prior ' + _esc(s.prior) if s.prior else ''} · {s.n} images</small></h2>"]
    if not any(r.panels for r in shown):
        parts.append("<p class='note'>No images to show: no images/baseline/ beside this evaluation's metrics file "
                     "(`ptg eval` writes them unless told not to). Its scores are in the tables above.</p>")
    if shown and not any("target" in r.panels for r in shown) and any(r.panels for r in shown):
        parts.append("<p class='note'>This eval folder has no images/target/ or images/input/ (written by `ptg eval` "
                     "since they were added; evaluate again to compare with the target).</p>")
    for title, group in (("R helped most", helped), ("R hurt most", hurt),
                         ("More images", [r for r in shown if all(r is not x for x in [*helped, *hurt])])):
        cards = [card(r, s) for r in group if r.panels]
        if cards:
            parts.append(f"<h3>{title}</h3><div class='cards'>" + "".join(cards) + "</div>")
    return "\n".join(parts + ["</section>"])


def write_report_page(sources: Sequence[str | Path], out_dir: str | Path, images: int = PER_EVAL) -> tuple[Path, Path, Path]:
    """`ptg report`: ``out_dir/report.md`` and ``report.png`` (`write_report`), and ``report.html``.

    Args:
        sources: as `write_report` takes them (eval folders, evaluated runs, a folder of evaluations).
        out_dir: the report folder (claimed by `write_report`).
        images: before/after viewers per evaluation.
    """
    if not 0 <= images <= 1000:
        raise PtgError(f"--images {images}: give 0..1000 viewers per evaluation")
    md, png = write_report(sources, out_dir)
    summaries = [load_summary(p) for p in expand_sources(sources)]
    return md, png, write_html(summaries, Path(out_dir) / "report.html", png, comparison_table(summaries), images)


def write_html(summaries: Sequence[EvalSummary], path: Path, chart_png: Path | None, table_md: str,
               per_eval: int = PER_EVAL) -> Path:
    """Write the page to ``path`` (atomically) and return it."""
    from ptg.pipeline.core.fsio import atomic_write_text

    emb = Embedder()
    all_rows: list[ImageRow] = []
    sections = []
    for i, s in enumerate(summaries):
        rows = load_rows(s, i)
        all_rows += rows
        sections.append(eval_section(s, rows, s.source.parent if s.source else Path("."), emb, per_eval))
    chart = ""
    if chart_png is not None and chart_png.is_file():
        chart = f"<img class='chart' alt='PSNR and SSIM per run' src='data:image/png;base64,{base64.b64encode(chart_png.read_bytes()).decode()}'>"
    over = (f"<p class='note'>{emb.skipped} viewer(s) left out: the page holds at most {MAX_EMBED_BYTES >> 20} MB of "
            "images. Report fewer evaluations at a time, or pass a smaller --images.</p>") if emb.skipped else ""
    body = (f"<header><h1>PTG-RM report</h1><p>{len(summaries)} evaluation(s), {len(all_rows)} scored image(s). "
            "Viewers: drag across an image to move the divide; choose what each side shows; zoom with "
            "the buttons, then scroll. Images are lossless 8-bit crops (up to "
            f"{CROP}² px, where F's error is largest).</p></header>"
            f"<section><h2>Comparison</h2><div class='wide'>{md_table_html(table_md)}</div>"
            f"<div class='two'><div class='wide'>{runs_table(summaries)}</div>{chart}</div></section>"
            "<section><h2>Per-image scores</h2><p class='note'>Click a column to sort; type to filter by run or image. "
            f"Linked ids have a viewer below.</p><input id='filter' type='search' placeholder='filter'>"
            f"<div class='scroll'>{scores_table(all_rows, summaries)}</div></section>{over}" + "\n".join(sections))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>PTG-RM report</title>"
            f"<link rel='icon' href='data:,'><meta name='viewport' content='width=device-width'>"
            f"<style>{_CSS}\n{emb.css()}</style></head><body><main>{body}</main><script>{_JS}</script></body></html>")
    atomic_write_text(path, page)
    return path


_CSS = """
:root{--ink:#1d2430;--mute:#5b6675;--line:#dde2e8;--bg:#f6f7f9;--up:#0a7d32;--down:#c0341d;--acc:#ff8c1a}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1320px;margin:0 auto;padding:20px 28px 60px}h1{margin:0 0 4px;font-size:24px}
h2{font-size:18px;margin:28px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--line)}h2 small{color:var(--mute);font-weight:400;font-size:13px;margin-left:8px}
h3{font-size:15px;margin:18px 0 8px;color:var(--mute)}header p,.note{color:var(--mute);margin:4px 0}
table{border-collapse:collapse;background:#fff;font-variant-numeric:tabular-nums;margin:6px 0}
th,td{padding:5px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
.runs th:nth-child(-n+5),.runs td:nth-child(-n+5){text-align:left}.t1 th{white-space:normal;overflow-wrap:anywhere;max-width:210px;vertical-align:bottom}
.wide{max-width:100%;overflow-x:auto}
thead th{background:#232f3e;color:#fff;font-weight:600;position:sticky;top:0}
.up{color:var(--up);font-weight:600}.down{color:var(--down);font-weight:600}
.two{display:flex;gap:20px;align-items:flex-start;flex-wrap:wrap}.chart{max-width:470px;background:#fff;border:1px solid var(--line)}
.scroll{max-height:330px;overflow:auto;border:1px solid var(--line);display:inline-block;max-width:100%}
.scores th{cursor:pointer;user-select:none}.scores th[aria-sort=ascending]::after{content:" ▲"}.scores th[aria-sort=descending]::after{content:" ▼"}
.scores tbody tr:hover{background:#fff6e8}#filter{display:block;margin:6px 0;padding:5px 8px;width:280px;border:1px solid var(--line);border-radius:4px}
a{color:#1458b8;text-decoration:none}a:hover{text-decoration:underline}
.cards{display:flex;flex-wrap:wrap;gap:16px}.card{background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px 12px;width:calc(50% - 8px);min-width:560px}
.card:target{outline:3px solid var(--acc)}.head{display:flex;gap:10px;align-items:baseline;margin-bottom:6px}.head .run{margin-left:auto;color:var(--mute)}
.badge{padding:1px 7px;border-radius:10px;font-size:12px;background:#eef1f4}.badge.up{background:#e3f4e8}.badge.down{background:#fbe6e2}
.ctrl{display:flex;gap:12px;align-items:center;margin-bottom:6px;color:var(--mute);font-size:13px}.ctrl select{font:inherit}
.zoom{margin-left:auto}.zoom button{font:inherit;border:1px solid var(--line);background:#fff;padding:1px 8px;cursor:pointer}
.zoom button.on{background:#232f3e;color:#fff;border-color:#232f3e}
.stage{width:fit-content;max-width:100%;max-height:540px;overflow:auto;border:1px solid var(--line);background:#222;cursor:ew-resize}
.zoomed{position:relative;width:calc(var(--w)*var(--z));height:calc(var(--h)*var(--z))}
.layer{position:absolute;inset:0;background-size:100% 100%;image-rendering:pixelated}
.la{clip-path:inset(0 calc(100% - var(--p)) 0 0)}.bar{position:absolute;top:0;bottom:0;left:var(--p);width:2px;margin-left:-1px;background:var(--acc);box-shadow:0 0 0 1px rgba(0,0,0,.35)}
.frame{display:inline-block;max-width:100%}.caps{display:flex;justify-content:space-between;color:var(--mute);font-size:12px;margin-top:2px}
.strip{display:flex;gap:6px;margin-top:8px}.strip figure{margin:0;flex:1}.thumb{width:100%;aspect-ratio:var(--ar,1);background-size:100% 100%;image-rendering:pixelated;border:1px solid var(--line)}
.strip figcaption{font-size:12px;color:var(--mute);text-align:center}
"""

_JS = """
(function(){
var names={input:"input",baseline:"F",ptgrm:"F + R",target:"target"};
document.querySelectorAll(".viewer").forEach(function(v){
  var panels=JSON.parse(v.dataset.panels),sa=v.querySelector(".sa"),sb=v.querySelector(".sb"),z=v.querySelector(".zoomed"),
      la=v.querySelector(".la"),lb=v.querySelector(".lb"),stage=v.querySelector(".stage");
  function zoom(n){z.style.setProperty("--z",n);v.querySelectorAll(".zoom button").forEach(function(b){b.classList.toggle("on",+b.dataset.z===n);});}
  function show(){la.className="layer la "+panels[sa.value];lb.className="layer lb "+panels[sb.value];
    v.querySelector(".ca").textContent="◀ "+names[sa.value];v.querySelector(".cb").textContent=names[sb.value]+" ▶";}
  function at(e){var r=z.getBoundingClientRect();z.style.setProperty("--p",Math.max(0,Math.min(100,100*(e.clientX-r.left)/r.width))+"%");}
  z.style.setProperty("--p","50%");zoom(+v.dataset.z);show();
  sa.onchange=show;sb.onchange=show;
  v.querySelectorAll(".zoom button").forEach(function(b){b.onclick=function(){zoom(+b.dataset.z);};});
  var down=false;stage.onpointerdown=function(e){down=true;at(e);};stage.onpointermove=function(e){if(down||e.pointerType==="mouse"&&e.buttons)at(e);};
  window.addEventListener("pointerup",function(){down=false;});
});
var table=document.getElementById("scores");
if(table){var body=table.tBodies[0];
  table.querySelectorAll("th").forEach(function(th,i){th.onclick=function(){
    var asc=th.getAttribute("aria-sort")!=="ascending",num=th.dataset.type==="n";
    table.querySelectorAll("th").forEach(function(o){o.removeAttribute("aria-sort");});
    th.setAttribute("aria-sort",asc?"ascending":"descending");
    var rows=Array.prototype.slice.call(body.rows);
    rows.sort(function(a,b){var x=a.cells[i],y=b.cells[i],r;
      if(num){var p=parseFloat(x.dataset.v),q=parseFloat(y.dataset.v);if(isNaN(p))return 1;if(isNaN(q))return -1;r=p-q;}
      else r=x.textContent.localeCompare(y.textContent);return asc?r:-r;});
    rows.forEach(function(r){body.appendChild(r);});};});
  document.getElementById("filter").oninput=function(e){var q=e.target.value.toLowerCase();
    Array.prototype.forEach.call(body.rows,function(r){r.style.display=(r.cells[0].textContent+" "+r.cells[1].textContent).toLowerCase().indexOf(q)<0?"none":"";});};
}
document.body.dataset.ready="1";
})();
"""
