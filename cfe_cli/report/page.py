"""index.html: the report's sections, cards and tables as HTML. Every text from a run (file names, class names,
paths, errors, commands) goes through :func:`esc`; every link through :meth:`Links.href` (percent-encoded)."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path
from typing import Any

from cfe_cli.legend import EVAL_COLUMNS, EVAL_LEGEND, FOOTNOTES, NOTES, REFLECTION_NOTE
from cfe_cli.report.runs import Card, Links, Run, pair_groups, png_size
from cfe_cli.report.static import CSS, JS

STATUS = (("all", "all"), ("correct", "correct"), ("error", "error (prediction ≠ label)"),
          ("failed", "failed (no CFE)"))


def esc(text: Any) -> str:
    """HTML-escaped text, quotes included (safe in an element and in an attribute)."""
    return escape(str(text), quote=True)


def pair_text(src: str, tgt: str) -> str:
    return f"{src} → {tgt}"


def card_html(c: Card) -> str:
    """One ``<figure>``: the video (strip as poster) or the image, the seed-style name and the chips."""
    src, tgt = c.pair
    what = f"{src} to {tgt}, {'valid' if c.valid else 'no counterfactual'}"
    if c.video is not None:
        poster = f' poster="{c.poster}"' if c.poster else ""
        media = (f'<video controls muted loop playsinline preload="metadata"{poster} '
                 f'aria-label="{esc("Morph video of " + c.name + ": " + what)}">'
                 f'<source src="{c.video}" type="video/mp4"><a href="{c.video}">{esc(c.name)}.mp4</a></video>')
        file_name, href = f"{c.name}.mp4", c.video
    elif c.image is not None:
        size = f' width="{c.image_size[0]}" height="{c.image_size[1]}"' if c.image_size else ""
        alt = esc(f"Counterfactual explanation of {c.name}: {what}")
        media = f'<a href="{c.image}"><img src="{c.image}" alt="{alt}" loading="lazy" decoding="async"{size}></a>'
        file_name, href = f"{c.name}.png", c.image
    else:
        media, file_name, href = '<p class="muted">(no image or video: its files are missing)</p>', c.name, None
    name = f'<a href="{href}">{esc(file_name)}</a>' if href else esc(file_name)
    chips = "".join(f'<li class="chip {cls}">{esc(text)}</li>' for text, cls in c.chips)
    extra = " ".join(f'<a href="{h}">{esc(t)}</a>' for t, h in c.links)
    return (f'<figure class="card" data-pair="{esc(pair_text(src, tgt))}" data-verdict="{esc(c.verdict or "none")}" '
            f'data-valid="{int(c.valid)}">{media}<figcaption>{name}<ul class="chips">{chips}</ul>'
            f'{f"<small>{extra}</small>" if extra else ""}</figcaption></figure>')


def explain_html(run: Run, cards: list[Card]) -> str:
    """An explain/animate run: its pair sections of cards, then its failed and skipped inputs."""
    parts = []
    for title, members in pair_groups(cards):
        parts.append(f'<section class="pair"><h4>{esc(title)} <span class="count">({_samples(len(members))})'
                     f'</span></h4><div class="cards">{"".join(card_html(c) for c in members)}</div></section>')
    if not cards:
        parts.append('<p class="muted">No input was explained in this run.</p>')
    for key, what, reason in (("failures", "Failed inputs", "error"), ("skipped", "Skipped inputs", "reason")):
        items = run.doc.get(key) or []
        if items:
            lis = "".join(f"<li><code>{esc(i.get('input'))}</code>: {esc(i.get(reason))}</li>" for i in items)
            parts.append(f'<details class="{key}" open><summary>{what} ({len(items)})</summary><ul>{lis}</ul>'
                         "</details>")
    return "".join(parts) + settings_html(run)


def _samples(n: int) -> str:
    return f"{n} sample{'s' * (n != 1)}"


def settings_html(run: Run) -> str:
    """The options and the machine of a run, from its metrics.json."""
    keys = ("command", "model", "dataset", "split", "n_per_pair", "sources", "method", "methods", "threshold",
            "validity_rule", "options", "device", "machine", "precision", "compile", "realism", "oracle_effnet")
    rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(_value(run.doc[k]))}</dd>" for k in keys if k in run.doc)
    return f'<details class="settings"><summary>Options and machine of this run</summary><dl>{rows}</dl></details>'


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def evaluate_html(run: Run, links: Links) -> str:
    """An evaluate run: the per-pair and overall tables with their legend, the grids per pair, the global
    attribution charts, and the run's options and machine."""
    doc = run.doc
    rows, overall = doc.get("rows", []), doc.get("overall", [])
    cols = [c for c in EVAL_COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    parts = [_table("Per pair", rows, cols)]
    if overall:
        parts.append(_table("Overall (n-weighted mean over pairs)", overall, cols))
    parts.append(_legend(doc, cols))
    parts.append(_grids(run, links))
    parts.append(_charts(run, links))
    return "".join(parts) + settings_html(run)


def _table(caption: str, rows: list[dict[str, Any]], cols: list[tuple[str, str, str]]) -> str:
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in ("method", "pair", *(c[1] for c in cols)))
    body = "".join("<tr>" + f"<td>{esc(r.get('method'))}</td><td>{esc(_pair(r.get('pair')))}</td>"
                   + "".join(f"<td>{esc('-' if r.get(k) is None else fmt.format(r[k]))}</td>" for k, _, fmt in cols)
                   + "</tr>" for r in rows)
    return (f'<div class="scroll"><table><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _pair(p: Any) -> str:
    """``"8:3"`` -> ``"8 → 3"`` (class names may hold ":" only in the target; the source is split at the first)."""
    return pair_text(*str(p).split(":", 1)) if ":" in str(p) else str(p)


def _legend(doc: dict[str, Any], cols: list[tuple[str, str, str]]) -> str:
    """What every column means, each method's validity rule, and the notes (fd_effnetlite0 is not FID)."""
    items = [(head, EVAL_LEGEND[head]) for _, head, _ in cols if head in EVAL_LEGEND]
    items += [("n", "images per pair (predicted as the source)")] if any(c[0] == "n" for c in cols) else []
    items += [(f"{m}: valid", rule) for m, rule in doc.get("validity_rules", {}).items()]
    items.append(("mirror@reflection", REFLECTION_NOTE.split(": ", 1)[1]))
    if any(c[0] == "fd_effnetlite0" for c in cols):
        items.append(("fd_effnetlite0 (FD-eff¹)", "not FID: " + NOTES["fd_effnetlite0"]))
    items += [(note[0], note[2:]) for note in FOOTNOTES]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return f'<details class="legend" open><summary>What the columns mean</summary><dl>{dl}</dl></details>'


def _grids(run: Run, links: Links) -> str:
    """The grid PNG evaluate wrote per method and pair: sources | 1st CFEs (| reflections)."""
    figs = []
    for r in run.doc.get("rows", []):
        path = links.find(run, r.get("grid_path"))
        if path is None:
            continue
        mirror = r.get("method") == "mirror"
        rows_text = "sources | 1st CFEs | reflections" if mirror else "sources | counterfactuals"
        alt = (f"{r.get('method')}, {_pair(r.get('pair'))}: the first sources (top row), their "
               f"{'1st CFEs (middle) and reflections (bottom)' if mirror else 'counterfactuals (bottom)'}; "
               f"a red frame marks a source without a counterfactual")
        size = png_size(path)
        wh = f' width="{size[0]}" height="{size[1]}"' if size else ""
        href = links.href(run, path)
        figs.append(f'<figure><a href="{href}"><img src="{href}" alt="{esc(alt)}" loading="lazy" decoding="async"{wh}>'
                    f"</a><figcaption>{esc(r.get('method'))}: {esc(_pair(r.get('pair')))} — {esc(rows_text)}"
                    f"</figcaption></figure>")
    if not figs:
        return ""
    return f'<h4>Sources and counterfactuals per pair</h4><div class="grids">{"".join(figs)}</div>'


def _charts(run: Run, links: Links) -> str:
    """The global attribution charts of ``evaluate --global``."""
    path = links.find(run, run.doc.get("global_attributions"))
    if path is None:
        return ""
    try:
        rankings = json.loads(path.read_text(encoding="utf-8")).get("rankings", [])
    except (OSError, ValueError, AttributeError):
        return ""
    figs = []
    for g in rankings:
        chart = links.find(run, g.get("chart"))
        if chart is None:
            continue
        top = ", ".join(f"{r.get('name')} {r.get('score', 0):+.3f}" for r in g.get("ranking", [])[:5])
        alt = f"Global attribution of {g.get('method')} for {_pair(g.get('pair'))} (n={g.get('n')}): {top}"
        href = links.href(run, chart)
        figs.append(f'<figure><img src="{href}" alt="{esc(alt)}" loading="lazy" decoding="async">'
                    f"<figcaption>{esc(alt)}</figcaption></figure>")
    return f'<h4>Global attributions (--global)</h4><div class="grids">{"".join(figs)}</div>' if figs else ""


def controls_html(runs: list[Run], cards: list[Card]) -> str:
    """The run switch (several runs) and the filters by pair and by correct/error/failed (explain runs)."""
    parts = []
    if len(runs) > 1:
        boxes = "".join(f'<label><input type="checkbox" value="{r.index}" checked> {esc(r.label)}</label>'
                        for r in runs)
        parts.append(f'<fieldset id="runs"><legend>Method / model</legend>{boxes}</fieldset>')
    if cards:
        pairs = dict.fromkeys(pair_text(*c.pair) for c in cards)
        opts = "".join(f'<option value="{esc(p)}">{esc(p)}</option>' for p in pairs)
        parts.append(f'<label>Pair <select id="pair"><option value="">all pairs</option>{opts}</select></label>')
        radios = "".join(f'<label><input type="radio" name="status" value="{v}"{" checked" if v == "all" else ""}> '
                         f"{esc(t)}</label>" for v, t in STATUS)
        parts.append(f'<fieldset id="status"><legend>Show</legend>{radios}</fieldset>'
                     f'<output id="shown" aria-live="polite">{len(cards)} cards shown</output>')
    return f'<nav class="controls" aria-label="Runs and filters">{"".join(parts)}</nav>' if parts else ""


def about_html(runs: list[Run]) -> str:
    """The page's opening, after the seeds' "About These Animations"."""
    kinds = {r.kind for r in runs}
    text = []
    if kinds & {"explain", "animate"}:
        what = "animations" if any(r.kind == "animate" or _has_video(r) for r in runs) else "panels"
        text.append(f"These {what} show how each method transforms a source image into a counterfactual that "
                    "crosses the classifier's decision boundary. They are grouped by model, then by class pair "
                    "(↔ when the run went both ways); each file is named like the papers' supplementary videos, "
                    "noN_prediction(GT_label)_to_target_correct or _error.")
    if "evaluate" in kinds:
        text.append("The evaluations give the papers' metrics per class pair and overall, with what every column "
                    "means, and the first sources of each pair beside their counterfactuals.")
    if len(runs) > 1:
        text.append("Tick runs under “Method / model” to compare them side by side.")
    return "<p>" + " ".join(esc(t) for t in text) + "</p>"


def _has_video(run: Run) -> bool:
    return any(r.get("video_path") for r in run.doc.get("results", []))


def page_html(title: str, runs: list[Run], cards: dict[int, list[Card]], links: Links, version: str) -> str:
    """The whole page: header, controls, one section per model holding its runs side by side, missing files."""
    by_model: dict[str, list[Run]] = {}
    for r in runs:
        by_model.setdefault(r.model, []).append(r)
    sections = []
    for model, members in by_model.items():
        cols = []
        for r in members:
            body = evaluate_html(r, links) if r.kind == "evaluate" else explain_html(r, cards[r.index])
            cols.append(f'<div class="run" data-run="{r.index}"><h3>{esc(r.method)} <span class="muted">'
                        f"({esc(r.kind)}, {esc(_short(r.folder))})</span></h3>{body}</div>")
        sections.append(f'<section class="model"><h2>{esc(model)}</h2><div class="runs">{"".join(cols)}</div>'
                        "</section>")
    flat = [c for r in runs for c in cards.get(r.index, [])]
    missing = ""
    if links.missing:
        lis = "".join(f"<li><code>{esc(m)}</code></li>" for m in dict.fromkeys(links.missing))
        missing = f"<details><summary>Files named in metrics.json but not found ({len(links.missing)})</summary>" \
                  f"<ul>{lis}</ul></details>"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="generator" content="cfe {esc(version)}"><title>{esc(title)}</title><style>{CSS}</style>'
            f"</head><body><header><h1>{esc(title)}</h1>{about_html(runs)}</header>{controls_html(runs, flat)}"
            f"<main>{''.join(sections)}{missing}</main>"
            f'<footer class="muted"><p>Written by cfe {esc(version)} (cfe report).</p></footer>'
            f"<script>{JS}</script></body></html>\n")


def _short(folder: Path) -> str:
    return folder.name or str(folder)
