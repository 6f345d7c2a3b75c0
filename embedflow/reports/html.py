"""One self-contained HTML page from report data: `render_html(page) -> str`. Standard library only.

Everything is inline: CSS (light and dark through prefers-color-scheme), SVG figures (confusion heatmap,
embedding map, learning curves) and thumbnails as `data:` URIs, so the page makes no network request of
any kind and opens offline from any folder. The page data is a plain dict (see `render_html`); reports.page
builds it from a model, a cache and predictions. Each section is rendered only when its data is present.
"""

from __future__ import annotations

import html
import math

# Tableau 10 then 10 more distinct hues; beyond 20 classes colours come from the golden angle in HSL.
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#aec7e8", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
           "#17becf", "#8c6d31")
LABELLED_HEATMAP = 30  # up to this many classes every heatmap cell shows its count and every axis its labels
SECTIONS = ("summary", "per-class", "confusion", "confused-pairs", "misclassified", "samples", "embedding-map",
            "audit", "learning-curves", "export-parity")

CSS = """
:root{--bg:#fbfbfc;--fg:#1d2330;--muted:#5d6677;--card:#fff;--line:#e3e6ec;--accent:#2f6fde;--bad:#d1343e;
--good:#1f8a4c;--warn:#b7791f;--cell0:#f2f5fa;--cell1:#1c4fa8;font-family:system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#12151b;--fg:#e6e9ef;--muted:#9aa3b2;--card:#1a1f28;--line:#2c3340;
--accent:#6ea0ff;--bad:#ff6b73;--good:#4cc38a;--warn:#e8b34b;--cell0:#1e2430;--cell1:#7fb0ff}}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);font-size:15px;line-height:1.45}
header{padding:28px 32px 8px}header h1{margin:0;font-size:24px;font-weight:650}header p{margin:4px 0 0;color:var(--muted)}
nav{padding:0 32px 8px;display:flex;flex-wrap:wrap;gap:6px}nav a{color:var(--accent);text-decoration:none;font-size:13px;
padding:3px 10px;border:1px solid var(--line);border-radius:999px;background:var(--card)}
main{padding:8px 32px 40px;max-width:1280px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin:16px 0}
h2{font-size:18px;margin:0 0 12px;font-weight:620}h3{font-size:15px;margin:14px 0 8px;font-weight:600}
.note{color:var(--muted);font-size:13px;margin:4px 0 10px}
.kpis{display:flex;flex-wrap:wrap;gap:12px;margin:4px 0 14px}.kpi{border:1px solid var(--line);border-radius:8px;
padding:8px 14px;min-width:120px}.kpi b{display:block;font-size:22px;font-variant-numeric:tabular-nums}
.kpi span{color:var(--muted);font-size:12px}
table{border-collapse:collapse;font-size:13.5px;font-variant-numeric:tabular-nums}th,td{padding:4px 10px;
border-bottom:1px solid var(--line);text-align:left;vertical-align:top}th{font-weight:600;color:var(--muted)}
td.n,th.n{text-align:right}dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0;font-size:14px}
dl.kv dt{color:var(--muted)}dl.kv dd{margin:0;word-break:break-word}
.chip{display:inline-block;padding:0 7px;border-radius:999px;font-size:12.5px;color:#fff;white-space:nowrap;
max-width:220px;overflow:hidden;text-overflow:ellipsis;vertical-align:middle}
.bar{display:inline-block;height:8px;border-radius:4px;background:var(--accent);vertical-align:middle}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(132px,1fr));gap:12px}
figure.t{margin:0;border:1px solid var(--line);border-radius:8px;overflow:hidden;background:var(--bg)}
figure.t img{display:block;width:100%;height:112px;object-fit:cover;background:var(--line)}
figure.t figcaption{padding:5px 7px;font-size:12px;line-height:1.35}figure.t .k{color:var(--muted);overflow:hidden;
text-overflow:ellipsis;white-space:nowrap}figure.t.bad{border-color:var(--bad)}
.noimg{height:112px;display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px}
.dups{display:flex;flex-wrap:wrap;gap:12px}.dup{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;padding:8px;border:1px solid var(--line);border-radius:8px;max-width:100%}.dup figure.t{width:124px}.dup p{width:100%;margin:0}
svg text{fill:var(--fg);font-family:inherit}svg .muted{fill:var(--muted)}svg .ax{stroke:var(--line)}
.legend{display:flex;flex-wrap:wrap;gap:6px 12px;font-size:12.5px;margin:8px 0}
.legend i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:4px;vertical-align:-1px}
.cols{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.ok{color:var(--good)}.badtxt{color:var(--bad)}
details summary{cursor:pointer;color:var(--accent);font-size:13.5px;margin:6px 0}
footer{color:var(--muted);font-size:12px;padding:0 32px 32px}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def class_colour(index: int) -> str:
    """The colour of class `index` (0-based), the same in every section and every report of the model."""
    if index < len(PALETTE):
        return PALETTE[index]
    hue = (index * 137.508) % 360
    return f"hsl({hue:.0f},58%,52%)"


def _pct(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x, digits=3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


class _Classes:
    def __init__(self, classes: list[str]):
        self.classes = list(classes)
        self.index = {c: i for i, c in enumerate(self.classes)}

    def colour(self, name: str) -> str:
        return class_colour(self.index.get(name, len(self.classes)))

    def chip(self, name: str) -> str:
        return f'<span class="chip" style="background:{self.colour(name)}" title="{esc(name)}">{esc(name)}</span>'


def render_html(page: dict) -> str:
    """The report page as one HTML string (UTF-8, no external reference).

    page keys (all optional except title and classes): title, subtitle, classes [str];
    summary: [(name, text)] rows; metrics: {n, accuracy, macro_precision, macro_recall, macro_f1} (floats in
    [0, 1]); coverage: {rate, rejected, accuracy_kept, accuracy_all} (unknown-input rejection);
    class_counts: {class: int}; skipped: [(key, reason)]; per_class: [{class, precision, recall, f1, support}];
    confusion: (C, C) int counts, rows true, columns predicted; confused_pairs: [{true, pred, count, share}];
    misclassified: [{key, true, pred, p_true, p_pred, thumb}] worst first (thumb: a data: URI or None) and
    n_misclassified (the total); samples: [{key, true, pred, p_pred, thumb}];
    embedding_map: {points: [{x, y, label, key, pred, wrong, issue}], method, n_total};
    audit: {label_issues: [{key, given, suggested, score, thumb}], outliers: [{key, label, score, thumb}],
    duplicates: [{min_score, members: [{key, label, thumb}]}], n_images};
    learning_curves: {stage1: {loss, val_loss, accuracy, val_accuracy}, stage2: {...}} (lists per epoch);
    parity: {name: {agreement, max_abs_diff, ...}}; footer: str."""
    cls = _Classes(page.get("classes") or [])
    parts = [_summary(page, cls), _per_class(page, cls), _confusion(page, cls), _pairs(page, cls),
             _misclassified(page, cls), _samples(page, cls), _embedding_map(page, cls), _audit(page, cls),
             _learning(page), _parity(page)]
    body = [p for p in parts if p]
    nav = "".join(f'<a href="#{sid}">{esc(label)}</a>' for sid, label in _present(body))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            # no request of any kind: a strict policy makes the browser refuse any that slipped in
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>{esc(page.get('title', 'embedflow report'))}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{esc(page.get('title', 'embedflow report'))}</h1>"
            f"<p>{esc(page.get('subtitle', ''))}</p></header><nav>{nav}</nav><main>{''.join(body)}</main>"
            f"<footer>{esc(page.get('footer', ''))}</footer></body></html>\n")


def _present(body: list[str]):
    for chunk in body:
        start = chunk.index('id="') + 4
        sid = chunk[start:chunk.index('"', start)]
        h2 = chunk.index("<h2>") + 4
        yield sid, html.unescape(chunk[h2:chunk.index("</h2>", h2)])


def _section(sid: str, title: str, content: str, note: str = "") -> str:
    note_html = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{note_html}{content}</section>'


# ------------------------------------------------------------------------------------------------ summary

def _summary(page: dict, cls: _Classes) -> str:
    m = page.get("metrics") or {}
    kpis = ""
    if m:
        items = [("accuracy", _pct(m.get("accuracy"))), ("macro precision", _num(m.get("macro_precision"))),
                 ("macro recall", _num(m.get("macro_recall"))), ("macro F1", _num(m.get("macro_f1"))),
                 ("images scored", str(m.get("n", "–")))]
        cov = page.get("coverage")
        if cov:
            items.append(("coverage (unknown rejection)", _pct(cov.get("rate"))))
            if cov.get("accuracy_kept") is not None:
                items.append(("accuracy on accepted", _pct(cov.get("accuracy_kept"))))
        kpis = '<div class="kpis">' + "".join(f'<div class="kpi"><b>{esc(v)}</b><span>{esc(k)}</span></div>'
                                              for k, v in items) + "</div>"
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in page.get("summary") or [])
    counts = page.get("class_counts") or {}
    count_html = ""
    if counts:
        top = max(counts.values()) or 1
        count_rows = "".join(
            f'<tr><td>{cls.chip(c)}</td><td class="n">{n}</td><td><span class="bar" style="width:{120 * n / top:.0f}px;'
            f'background:{cls.colour(c)}"></span></td></tr>' for c, n in counts.items())
        table = f'<table><tr><th>class</th><th class="n">images</th><th></th></tr>{count_rows}</table>'
        count_html = (f"<h3>Data: {sum(counts.values())} images in {len(counts)} classes</h3>"
                      + (table if len(counts) <= 40 else f"<details><summary>images per class</summary>{table}</details>"))
    skipped = page.get("skipped") or []
    skipped_html = ""
    if skipped:
        srows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(r)}</td></tr>" for k, r in skipped[:200])
        more = f'<p class="note">and {len(skipped) - 200} more</p>' if len(skipped) > 200 else ""
        skipped_html = (f"<details><summary>{len(skipped)} file(s) skipped, with reasons</summary>"
                        f"<table><tr><th>file</th><th>reason</th></tr>{srows}</table>{more}</details>")
    content = f'{kpis}<div class="cols"><dl class="kv">{rows}</dl><div>{count_html}{skipped_html}</div></div>'
    return _section("summary", "Summary", content)


def _per_class(page: dict, cls: _Classes) -> str:
    rows = page.get("per_class") or []
    if not rows:
        return ""
    order = sorted(rows, key=lambda r: (r["support"] == 0, r["f1"]))  # weakest first, absent classes last
    body = "".join(
        f'<tr><td>{cls.chip(r["class"])}</td><td class="n">{_num(r["precision"])}</td><td class="n">{_num(r["recall"])}'
        f'</td><td class="n">{_num(r["f1"])}</td><td class="n">{r["support"]}</td>'
        f'<td><span class="bar" style="width:{100 * r["f1"]:.0f}px"></span></td></tr>' for r in order)
    return _section("per-class", "Per class", f'<table><tr><th>class</th><th class="n">precision</th>'
                    f'<th class="n">recall</th><th class="n">F1</th><th class="n">support</th><th>F1</th></tr>{body}</table>',
                    "Sorted by F1, weakest first.")


# ------------------------------------------------------------------------------------------------ confusion

def _mix(share: float) -> str:
    """Cell fill: the accent colour at an opacity that grows with the share."""
    return f"fill:var(--cell1);fill-opacity:{0.06 + 0.94 * share:.3f}" if share > 0 else "fill:var(--cell0)"


def heatmap_svg(matrix: list[list[int]], classes: list[str], *, normalise: bool, order: list[int] | None = None) -> str:
    """An SVG heatmap of a confusion matrix (rows true, columns predicted). normalise: colour and text are
    row shares, else counts (colour by share of the largest cell). Every cell has a <title> (true, predicted,
    count, row share) and empty cells are left to one background rectangle; with more than
    LABELLED_HEATMAP classes axis labels and cell texts are left to the hover titles and the SVG scales with the page (zoom with the browser)."""
    n = len(classes)
    order = list(range(n)) if order is None else order
    row_sums = [sum(r) for r in matrix]
    largest = max((max(r) for r in matrix), default=0) or 1
    labelled = n <= LABELLED_HEATMAP
    cell = 34 if labelled else max(4, min(14, 900 // max(n, 1)))
    margin = (min(170, 8 + 7 * max((len(c) for c in classes), default=1)) if labelled else 16)
    size = margin + n * cell
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size + 10} {size + 10}" '
           f'width="{min(size + 10, 980)}" role="img" aria-label="confusion matrix">',
           # empty cells are this one background (a 102-class matrix is mostly zeros: the page stays small)
           f'<rect x="{margin}" y="{margin}" width="{n * cell - 1}" height="{n * cell - 1}" style="{_mix(0)}"/>']
    for a, i in enumerate(order):
        for b, j in enumerate(order):
            count = matrix[i][j]
            if not count:
                continue
            share = count / row_sums[i] if row_sums[i] else 0.0
            level = share if normalise else count / largest
            x, y = margin + b * cell, margin + a * cell
            title = f"true {classes[i]} → predicted {classes[j]}: {count} ({100 * share:.1f}% of {classes[i]})"
            out.append(f'<rect x="{x}" y="{y}" width="{cell - 1}" height="{cell - 1}" style="{_mix(level)}">'
                       f"<title>{esc(title)}</title></rect>")
            if labelled and count:
                text = f"{share:.2f}".lstrip("0") if normalise else str(count)
                colour = "#fff" if level > 0.55 else "var(--fg)"
                out.append(f'<text x="{x + cell / 2 - 0.5}" y="{y + cell / 2 + 4}" text-anchor="middle" '
                           f'font-size="11" style="fill:{colour}" pointer-events="none">{esc(text)}</text>')
    if labelled:
        for a, i in enumerate(order):
            label = classes[i] if len(classes[i]) <= 22 else classes[i][:21] + "…"
            out.append(f'<text x="{margin - 6}" y="{margin + a * cell + cell / 2 + 4}" text-anchor="end" '
                       f'font-size="11">{esc(label)}<title>{esc(classes[i])}</title></text>')
            cx = margin + a * cell + cell / 2
            out.append(f'<text x="{cx}" y="{margin - 6}" font-size="11" transform="rotate(-45 {cx} {margin - 6})">'
                       f"{esc(label)}<title>{esc(classes[i])}</title></text>")
    out.append("</svg>")
    return "".join(out)


def _confusion(page: dict, cls: _Classes) -> str:
    matrix = page.get("confusion")
    if not matrix:
        return ""
    classes = cls.classes
    n = len(classes)
    if n <= LABELLED_HEATMAP:
        content = (f'<div class="cols"><div><h3>Counts</h3>{heatmap_svg(matrix, classes, normalise=False)}</div>'
                   f'<div><h3>Row-normalised (recall on the diagonal)</h3>'
                   f'{heatmap_svg(matrix, classes, normalise=True)}</div></div>')
        note = "Rows: true class; columns: predicted class. Hover a cell for its numbers."
    else:
        sums = [sum(r) or 1 for r in matrix]
        order = sorted(range(n), key=lambda i: (matrix[i][i] / sums[i], classes[i]))
        content = f"<h3>Row-normalised</h3>{heatmap_svg(matrix, classes, normalise=True, order=order)}"
        note = (f"{n} classes: sorted by recall, weakest at the top left; labels and counts on hover "
                "(zoom with the browser). The most confused pairs are listed below.")
    return _section("confusion", "Confusion matrix", content, note)


def _pairs(page: dict, cls: _Classes) -> str:
    pairs = page.get("confused_pairs") or []
    if not pairs:
        return ""
    body = "".join(f'<tr><td>{cls.chip(p["true"])}</td><td>→</td><td>{cls.chip(p["pred"])}</td>'
                   f'<td class="n">{p["count"]}</td><td class="n">{_pct(p.get("share"))}</td></tr>' for p in pairs)
    return _section("confused-pairs", "Most confused pairs",
                    f'<table><tr><th>true</th><th></th><th>predicted as</th><th class="n">images</th>'
                    f'<th class="n">of the true class</th></tr>{body}</table>')


# ------------------------------------------------------------------------------------------------ images

def _thumb(item: dict, cls: _Classes, caption: str, bad: bool = False) -> str:
    img = (f'<img src="{item["thumb"]}" alt="{esc(item["key"])}" title="{esc(item["key"])}">' if item.get("thumb")
           else '<div class="noimg">image not found</div>')
    return (f'<figure class="t{" bad" if bad else ""}">{img}<figcaption>{caption}'
            f'<div class="k" title="{esc(item["key"])}">{esc(item["key"])}</div></figcaption></figure>')


def _misclassified(page: dict, cls: _Classes) -> str:
    items = page.get("misclassified")
    if items is None:
        return ""
    total = page.get("n_misclassified", len(items))
    if not items:
        return _section("misclassified", "Misclassified images", '<p class="ok">None: every image was predicted right.</p>')
    cards = "".join(_thumb(it, cls, f'{cls.chip(it["true"])} → {cls.chip(it["pred"])}<br>'
                                    f'p(true) {_num(it.get("p_true"), 2)} · p(pred) {_num(it.get("p_pred"), 2)}', True)
                    for it in items)
    shown = f"the {len(items)} worst" if len(items) < total else f"all {total}"
    return _section("misclassified", "Misclassified images", f'<div class="grid">{cards}</div>',
                    f"{total} misclassified; {shown}, lowest probability of the true class first.")


def _samples(page: dict, cls: _Classes) -> str:
    items = page.get("samples") or []
    if not items:
        return ""
    cards = "".join(_thumb(it, cls, f'{cls.chip(it["pred"])} {_num(it.get("p_pred"), 2)}'
                                    + ("" if it["pred"] == it["true"] else f'<br><span class="badtxt">true: {esc(it["true"])}</span>'),
                           it["pred"] != it["true"]) for it in items)
    return _section("samples", "Sample predictions", f'<div class="grid">{cards}</div>',
                    "A random sample of the scored images: predicted class and its probability.")


# ------------------------------------------------------------------------------------------------ embedding map

def _embedding_map(page: dict, cls: _Classes) -> str:
    emap = page.get("embedding_map")
    if not emap or not emap.get("points"):
        return ""
    pts = emap["points"]
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    w, h, pad = 900, 620, 14
    sx = (w - 2 * pad) / ((x1 - x0) or 1)
    sy = (h - 2 * pad) / ((y1 - y0) or 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="100%" style="max-width:{w}px" '
           f'role="img" aria-label="embedding map">']
    # plain points first, marked ones on top
    for p in sorted(pts, key=lambda p: (p.get("wrong", False) or p.get("issue", False))):
        x, y = pad + (p["x"] - x0) * sx, h - pad - (p["y"] - y0) * sy
        title = f'{p["key"]} — {p["label"]}'
        if p.get("pred") and p["pred"] != p["label"]:
            title += f' (predicted {p["pred"]})'
        if p.get("issue"):
            title += " — suspected label issue"
        colour = cls.colour(p["label"])
        if p.get("issue"):
            out.append(f'<path d="M{x:.1f} {y - 6:.1f}l6 6-6 6-6-6z" style="fill:{colour};stroke:var(--fg);'
                       f'stroke-width:1.5"><title>{esc(title)}</title></path>')
        elif p.get("wrong"):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" style="fill:{colour};stroke:var(--bad);'
                       f'stroke-width:2.2"><title>{esc(title)}</title></circle>')
        else:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.2" style="fill:{colour};fill-opacity:.8">'
                       f"<title>{esc(title)}</title></circle>")
    out.append("</svg>")
    present = sorted({p["label"] for p in pts}, key=lambda c: cls.index.get(c, 0))
    legend = "".join(f'<span><i style="background:{cls.colour(c)}"></i>{esc(c)}</span>' for c in present[:60])
    legend += ('<span><svg width="12" height="12"><circle cx="6" cy="6" r="4.5" style="fill:none;stroke:var(--bad);'
               'stroke-width:2"/></svg> misclassified</span><span><svg width="12" height="12"><path d="M6 0l6 6-6 6-6-6z" '
               'style="fill:none;stroke:var(--fg);stroke-width:1.5"/></svg> suspected label issue</span>')
    shown = len(pts)
    note = (f"{emap.get('method', 'PCA then t-SNE')} of {shown} image vectors"
            + (f" (a sample of {emap['n_total']}, every marked image included)" if emap.get("n_total", shown) > shown else "")
            + ". Colour: given class. Hover a point for its file.")
    return _section("embedding-map", "Embedding map", f'<div class="legend">{legend}</div>{"".join(out)}', esc(note))


# ------------------------------------------------------------------------------------------------ audit

def _audit(page: dict, cls: _Classes) -> str:
    audit = page.get("audit")
    if not audit:
        return ""
    parts = []
    issues = audit.get("label_issues") or []
    if issues:
        cards = "".join(_thumb(i, cls, f'given {cls.chip(i["given"])}<br>suggested {cls.chip(i["suggested"])}<br>'
                                       f'score {_num(i["score"], 2)}', True) for i in issues)
        parts.append(f'<h3>Suspected label issues</h3><p class="note">Score = 1 − p(given label) from out-of-fold '
                     f'logistic regression and the 10 nearest neighbours; most suspicious first.</p>'
                     f'<div class="grid">{cards}</div>')
    far = audit.get("outliers") or []
    if far:
        cards = "".join(_thumb(o, cls, f'{cls.chip(o["label"])} z {_num(o["score"], 1)}') for o in far)
        parts.append(f'<h3>Outliers</h3><p class="note">Far from the rest of their class (robust z of the distance '
                     f'to the 5 nearest images of the class).</p><div class="grid">{cards}</div>')
    dups = audit.get("duplicates") or []
    if dups:
        rows = []
        for g in dups:
            members = "".join(_thumb(m, cls, cls.chip(m["label"])) for m in g["members"])
            kind = "cross-class" if len({m["label"] for m in g["members"]}) > 1 else "same class"
            rows.append(f'<div class="dup"><p class="note">{kind}, cosine ≥ {_num(g["min_score"], 3)}</p>{members}</div>')
        parts.append(f'<h3>Near-duplicates</h3><div class="dups">{"".join(rows)}</div>')
    if not parts:
        parts.append('<p class="ok">No label issue, outlier or near-duplicate stands out.</p>')
    note = f"What the vectors of {audit.get('n_images', '')} images say about the data (embedflow audit)."
    return _section("audit", "Data audit", "".join(parts), esc(note))


# ------------------------------------------------------------------------------------------------ curves, parity

def line_chart_svg(series: dict[str, list[float]], title: str, boundary: int | None = None) -> str:
    """An SVG line chart of per-epoch values (one polyline per series, points hoverable)."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not values:
        return ""
    n = max(len(vs) for vs in series.values())
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    w, h, left, bottom, top = 420, 240, 44, 26, 22
    px = lambda i: left + (w - left - 10) * (i / max(n - 1, 1))  # noqa: E731
    py = lambda v: top + (h - top - bottom) * (1 - (v - lo) / (hi - lo))  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" role="img" aria-label="{esc(title)}">',
           f'<text x="{left}" y="14" font-size="13" font-weight="600">{esc(title)}</text>',
           f'<line class="ax" x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}"/>']
    for v in (lo, (lo + hi) / 2, hi):
        out.append(f'<text class="muted" x="{left - 4}" y="{py(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text class="muted" x="{w - 10}" y="{h - 8}" font-size="10" text-anchor="end">epoch ({n})</text>')
    if boundary:
        bx = px(boundary - 0.5)
        out.append(f'<line x1="{bx:.1f}" y1="{top}" x2="{bx:.1f}" y2="{h - bottom}" style="stroke:var(--muted);'
                   f'stroke-dasharray:4 3"><title>start of fine-tuning</title></line>')
    colours = ("var(--accent)", "var(--warn)", "var(--good)", "var(--bad)")
    for (name, vs), colour in zip(series.items(), colours):
        pts = [(px(i), py(v)) for i, v in enumerate(vs) if v is not None]
        if not pts:
            continue
        out.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" style="fill:none;stroke:{colour};'
                   f'stroke-width:2"/>')
        for i, (x, y) in enumerate(pts):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" style="fill:{colour}"><title>{esc(name)} epoch {i + 1}: '
                       f'{vs[i]:.4f}</title></circle>')
    legend_x = left + 16 + 8 * len(title)
    for (name, _), colour in zip(series.items(), colours):
        out.append(f'<text x="{legend_x}" y="14" font-size="11" style="fill:{colour}">{esc(name)}</text>')
        legend_x += 8 + 7 * len(name)
    out.append("</svg>")
    return "".join(out)


def _learning(page: dict) -> str:
    hist = page.get("learning_curves")
    if not hist:
        return ""
    s1, s2 = hist.get("stage1") or {}, hist.get("stage2") or {}
    n1 = len(s1.get("loss", []))
    charts = []
    for metric in ("accuracy", "loss"):
        series = {label: list(s1.get(key, [])) + list(s2.get(key, []))
                  for key, label in ((metric, "training"), (f"val_{metric}", "validation"))}
        series = {k: v for k, v in series.items() if v}
        if series:
            charts.append(line_chart_svg(series, metric, n1 if n1 and s2.get("loss") else None))
    if not charts:
        return ""
    return _section("learning-curves", "Learning curves", f'<div class="cols">{"".join(charts)}</div>',
                    "Stage 1 trains the head on frozen features; the dashed line marks the start of fine-tuning.")


def _parity(page: dict) -> str:
    parity = page.get("parity")
    if not parity:
        return ""
    blocks = []
    for name, figures in parity.items():
        if not isinstance(figures, dict):
            blocks.append(f'<p class="note">{esc(name)}: {esc(figures)}</p>')
            continue
        rows = "".join(f"<tr><td>{esc(k)}</td><td class='n'>{esc(_fmt_value(v))}</td></tr>" for k, v in figures.items())
        blocks.append(f"<h3>{esc(name)}</h3><table>{rows}</table>")
    return _section("export-parity", "Export parity", "".join(blocks),
                    "The exported model against its source on the source's validation images.")


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
