"""The day's human report: one self-contained HTML file (inline CSS and SVG; readable offline)."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import numpy as np
import pandas as pd

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;font-size:.85em}td,th{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.kpi{display:inline-block;margin:0 2em .8em 0}
.kpi b{display:block;font-size:1.3em}.warn{color:#b00}.ok{color:#070}.note{color:#666;font-size:.85em}
"""


def _money(x: float) -> str:
    return f"{x:,.2f}"


def bar_chart(labels: list[str], values: list[float], title: str, unit: str = "", colour: str = "#3b6ea8",
              limits: list[float] | None = None, width: int = 760) -> str:
    """A horizontal bar chart as inline SVG (optionally with a limit mark per bar)."""
    n = len(labels)
    if n == 0:
        return f"<p class='note'>{html.escape(title)}: nothing to show.</p>"
    row, left, right = 20, 170, 110
    h = row * n + 30
    vmax = max([v for v in values if np.isfinite(v)] + [l for l in (limits or []) if l is not None and np.isfinite(l)]
               + [1e-9])
    scale = (width - left - right) / vmax
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{h}' role='img' "
             f"aria-label='{html.escape(title)}'><text x='0' y='14' font-size='13' font-weight='bold'>"
             f"{html.escape(title)}</text>"]
    for i, (lab, v) in enumerate(zip(labels, values)):
        y = 24 + i * row
        w = max(v, 0) * scale
        parts.append(f"<text x='{left - 6}' y='{y + 13}' font-size='11' text-anchor='end'>{html.escape(lab)}</text>")
        parts.append(f"<rect x='{left}' y='{y + 2}' width='{w:.1f}' height='{row - 6}' fill='{colour}'/>")
        parts.append(f"<text x='{left + w + 4:.1f}' y='{y + 13}' font-size='10'>{v:,.2f}{unit}</text>")
        if limits is not None and limits[i] is not None and np.isfinite(limits[i]):
            x = left + limits[i] * scale
            parts.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{y}' y2='{y + row - 2}' stroke='#b00' stroke-width='2'/>")
    parts.append("</svg>")
    return "".join(parts)


def _table(df: pd.DataFrame, money: tuple[str, ...] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for c, v in zip(df.columns, rec):
            if c in money and isinstance(v, (int, float, np.floating)) and np.isfinite(v):
                cells.append(f"<td>{_money(float(v))}</td>")
            elif isinstance(v, (float, np.floating)):
                cells.append(f"<td>{'' if not np.isfinite(v) else f'{v:,.4g}'}</td>")
            else:
                cells.append(f"<td>{html.escape(str(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def render_report(day: dt.date, plan: Any, terms: Any, pacing: Any, state: Any, totals: dict[str, dict]) -> str:
    s = plan.summary()
    f = plan.funders
    used = f[f["loan_count"] > 0].sort_values("principal", ascending=False)
    c = plan.constraints
    binding = c[c["binding"] & c["hard"]].copy() if len(c) else c
    if len(binding):
        binding["abs"] = binding["shadow_price"].abs()
        binding = binding.sort_values("abs", ascending=False).drop(columns=["abs"]).head(25)
    status_cls = "ok" if s["unfunded_count"] == 0 and s["shortfall"] <= 0.005 else "warn"
    kpis = [("status", s["status"]), ("loans", f"{s['loan_count']:,}"), ("principal", _money(s["principal"])),
            ("funding cost", _money(s["funding_cost"])), ("objective", _money(s["objective"])),
            ("gap to LP bound", f"{s['gap']:.2e}"), ("unfunded", f"{s['unfunded_count']:,} ({_money(s['unfunded_principal'])})"),
            ("shortfall", _money(s["shortfall"]))]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>fundalloc plan {day}</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>Funding plan for {day.isoformat()}</h1>",
           "".join(f"<div class='kpi {status_cls if k in ('unfunded', 'shortfall') else ''}'>{html.escape(k)}"
                   f"<b>{html.escape(str(v))}</b></div>" for k, v in kpis)]
    out.append("<h2>Routes</h2>")
    out.append(bar_chart(list(used["funder_id"]), list(used["principal"]), "principal funded per route"))
    out.append(bar_chart(list(used["funder_id"]), list(used["cost"]), "funding cost per route", colour="#a8743b"))
    tbl = pd.DataFrame([{"route": k, **v} for k, v in totals.items() if v["loans"] > 0])
    if len(tbl):
        out.append(_table(tbl, money=("principal", "funder_amount", "platform_amount", "cost")))
    out.append("<h2>Limits</h2>")
    if "daily_max" in f.columns:
        capped = f[np.isfinite(f["daily_max"].astype(float))]
        out.append(bar_chart(list(capped["funder_id"]), list(capped["funder_amount"]),
                             "funded against the day's cap (red mark)", limits=list(capped["daily_max"].astype(float))))
    if len(binding):
        out.append("<p>Binding limits, the most valuable first. The shadow price is the change in cost for "
                   "one more unit of the limit (negative: relaxing it saves).</p>")
        out.append(_table(binding[["constraint", "funder_id", "value", "limit", "shadow_price"]]))
    else:
        out.append("<p>No hard limit binds.</p>")
    if s["breaches"]:
        out.append("<h2 class='warn'>Breaches worked around</h2>")
        out.append(_table(pd.DataFrame(s["breaches"]).astype(str)))
    out.append("<h2>Period quotas and facility headroom</h2>")
    rows = []
    for fu in terms.funders:
        if fu.id in pacing.remaining or fu.id in pacing.min_target:
            rows.append({"funder": fu.id, "funded this month before today": state.month_used.get(fu.id, 0.0),
                         "left before today": pacing.remaining.get(fu.id, np.nan),
                         "today's allowance": pacing.allowance.get(fu.id, np.nan),
                         "today's minimum target": pacing.min_target.get(fu.id, np.nan),
                         "funded today": totals.get(fu.id, {}).get("funder_amount", 0.0)})
    if rows:
        out.append(f"<p>Pacing: <b>{html.escape(pacing.method)}</b>; {pacing.days_left} days left in the month "
                   f"including today; volume expected on the later days: {_money(pacing.future_volume)}.</p>")
        out.append(_table(pd.DataFrame(rows), money=tuple(k for k in rows[0] if k != "funder")))
    else:
        out.append("<p>No funder has a period quota or a facility limit.</p>")
    unf = plan.allocations[plan.allocations["funder_id"] == ""]
    if len(unf):
        out.append("<h2 class='warn'>Unfunded loans</h2>")
        reasons = unf["unfunded_reason"].value_counts().head(10).reset_index()
        reasons.columns = ["reason", "loans"]
        out.append(_table(reasons))
    out.append(f"<p class='note'>inputs {html.escape(s['inputs_digest'])}; solver {html.escape(s['solver']['name'])} "
               f"{html.escape(str(s['solver']['version']))}</p></body></html>")
    return "\n".join(out) + "\n"
