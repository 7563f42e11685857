"""``report.html``: the verdict of a run, every checker's result, and a timeline.

Plain HTML with inline SVG, no scripts from the network.  The timeline has one row per client
process; each operation is a bar from invocation to completion (green ok, red fail, orange
info, open-ended to the end of the run), nemesis intervals are shaded across all rows, and the
operations named by the first anomaly are outlined in black with a marker above them.  Long
runs show a window of ``WINDOW_S`` seconds around the first anomaly (or the start) so the file
stays small.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Final

from jepsen_like.workloads.base import NEMESIS, Event, pairs

WINDOW_S: Final = 10.0
WIDTH: Final = 1400
ROW: Final = 14
LEFT: Final = 70
COLORS: Final = {"ok": "#4caf50", "fail": "#e53935", "info": "#ff9800"}


def anomaly_ops(doc: dict[str, Any]) -> list[int]:
    """The operations (invocation indices) the first failing checker points at."""
    for res in doc.get("checks", {}).values():
        if isinstance(res, dict) and res.get("valid") is False and res.get("anomaly_ops"):
            return [int(i) for i in res["anomaly_ops"]]
    return []


def nemesis_intervals(history: list[Event]) -> list[tuple[int, int, str]]:
    """(start ns, end ns, label) of every fault, from the nemesis events."""
    out: list[tuple[int, int, str]] = []
    open_: dict[str, tuple[int, str]] = {}
    end = history[-1]["time_ns"] if history else 0
    for ev in history:
        if ev["process"] != NEMESIS or ev["type"] != "info":
            continue
        f = ev["f"]
        if f.startswith("start-"):
            name = f[len("start-") :]
            open_[name] = (ev["time_ns"], f"{name} {_short(ev['value'])}")
        elif f.startswith("stop-"):
            name = f[len("stop-") :]
            if name in open_:
                t0, label = open_.pop(name)
                out.append((t0, ev["time_ns"], label))
    out += [(t0, end, label) for t0, label in open_.values()]
    return out


def _short(v: Any) -> str:
    text = json.dumps(v, separators=(",", ":"), default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def timeline_svg(history: list[Event], marked: list[int]) -> str:
    ops = [(inv, done) for inv, done in pairs(history)]
    if not ops:
        return "<p>No client operations.</p>"
    t_end = max(ev["time_ns"] for ev in history)
    by_index = {inv["index"]: (inv, done) for inv, done in ops}
    focus = [by_index[i][0]["time_ns"] for i in marked if i in by_index]
    center = min(focus) if focus else 0
    lo = max(0, center - int(WINDOW_S / 2 * 1e9)) if focus else 0
    hi = min(t_end, lo + int(WINDOW_S * 1e9))
    if hi <= lo:
        hi = lo + 1
    procs = sorted({inv["process"] for inv, _ in ops})
    row = {p: i for i, p in enumerate(procs)}
    top = 20
    height = top + ROW * len(procs) + 20
    scale = (WIDTH - LEFT - 10) / (hi - lo)

    def x(t: int) -> float:
        return float(LEFT + (min(max(t, lo), hi) - lo) * scale)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="10">'
    ]
    for t0, t1, label in nemesis_intervals(history):
        if t1 < lo or t0 > hi:
            continue
        parts.append(
            f'<rect x="{x(t0):.1f}" y="{top}" width="{max(1.0, x(t1) - x(t0)):.1f}" '
            f'height="{ROW * len(procs)}" fill="#9e9e9e" opacity="0.25">'
            f"<title>{html.escape(label)}</title></rect>"
        )
        parts.append(f'<text x="{x(t0) + 2:.1f}" y="{top - 4}">{html.escape(label[:40])}</text>')
    for p in procs:
        y = top + row[p] * ROW
        parts.append(f'<text x="2" y="{y + ROW - 3}">p{p}</text>')
    marked_set = set(marked)
    for inv, done in ops:
        t0 = inv["time_ns"]
        kind = done["type"] if done is not None else "info"
        t1 = done["time_ns"] if done is not None and kind != "info" else t_end
        if t1 < lo or t0 > hi:
            continue
        y = top + row[inv["process"]] * ROW + 2
        w = max(1.0, x(t1) - x(t0))
        stroke = ' stroke="black" stroke-width="2"' if inv["index"] in marked_set else ""
        title = html.escape(
            f"op {inv['index']} p{inv['process']} {inv['f']} {inv['key']} "
            f"{_short(inv['value'])} -> {kind} {_short(done['value'] if done else None)} "
            f"[{t0 / 1e9:.3f}s..{t1 / 1e9:.3f}s]"
        )
        parts.append(
            f'<rect x="{x(t0):.1f}" y="{y}" width="{w:.1f}" height="{ROW - 4}" '
            f'fill="{COLORS.get(kind, "#999")}"{stroke}><title>{title}</title></rect>'
        )
        if inv["index"] in marked_set:
            parts.append(
                f'<text x="{x(t0):.1f}" y="{y - 1}" fill="black">&#9660;{inv["index"]}</text>'
            )
    parts.append(
        f'<text x="{LEFT}" y="{height - 4}">{lo / 1e9:.2f}s</text>'
        f'<text x="{WIDTH - 60}" y="{height - 4}">{hi / 1e9:.2f}s</text></svg>'
    )
    return "".join(parts)


def render(doc: dict[str, Any], history: list[Event]) -> str:
    marked = anomaly_ops(doc)
    valid = doc.get("valid")
    verdict = "VALID" if valid is True else "INVALID" if valid is False else "UNKNOWN"
    color = {"VALID": "#2e7d32", "INVALID": "#c62828"}.get(verdict, "#ef6c00")
    rows = []
    for name, res in doc.get("checks", {}).items():
        v = res.get("valid") if isinstance(res, dict) else None
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(v))}</td>"
            f"<td><pre>{html.escape(json.dumps(res, indent=1, default=str)[:4000])}</pre></td></tr>"
        )
    first = ""
    if marked:
        by_index = {ev["index"]: ev for ev in history}
        lines = []
        for i in marked:
            ev = by_index.get(i)
            if ev is not None:
                lines.append(
                    f"op {i}: process {ev['process']} {ev['f']} {ev['key']} "
                    f"{_short(ev['value'])} at {ev['time_ns'] / 1e9:.3f}s"
                )
        first = "<h2>First anomaly</h2><pre>" + html.escape("\n".join(lines)) + "</pre>"
    params = {k: doc.get(k) for k in ("workload", "nemesis", "seed", "time", "nodes", "unsafe")}
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>jepsen_like report</title>"
        "<style>body{font-family:sans-serif;margin:1em}td{vertical-align:top;border-top:1px solid "
        "#ddd;padding:4px}pre{margin:0;white-space:pre-wrap;max-height:20em;overflow:auto}</style>"
        f"</head><body><h1 style='color:{color}'>{verdict}</h1>"
        f"<p>{html.escape(json.dumps(params))}</p>"
        f"<p>ops: {html.escape(json.dumps(doc.get('ops')))}</p>"
        f"{first}<h2>Timeline</h2><p>Bars: operations (green ok, red fail, orange unknown); grey: "
        "faults; outlined: the first anomaly's operations.</p>"
        f"<div style='overflow-x:auto'>{timeline_svg(history, marked)}</div>"
        f"<h2>Checks</h2><table>{''.join(rows)}</table></body></html>"
    )


def write_report(path: Path, doc: dict[str, Any], history: list[Event]) -> None:
    path.write_text(render(doc, history), encoding="utf-8")
