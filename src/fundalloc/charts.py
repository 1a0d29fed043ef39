"""Charts for notebooks and reports (matplotlib, imported only when a chart is drawn)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .plan import Plan


def _plt():
    import matplotlib.pyplot as plt
    return plt


def route_utilisation(plan: Plan, ax=None):
    """Funder amount per route, and how much of its tightest cap that is."""
    plt = _plt()
    f = plan.funders.copy()
    util = f[["daily_max_utilisation", "facility_headroom_utilisation"]].max(axis=1)
    if "platform_capacity_utilisation" in f:
        util = util.fillna(f["platform_capacity_utilisation"])
    f["utilisation"] = util
    ax = ax or plt.subplots(figsize=(10, 4))[1]
    colors = ["tab:red" if u >= 0.999 else "tab:blue" for u in f["utilisation"].fillna(0)]
    ax.bar(f["funder_id"], f["principal"] / 1e6, color=colors)
    ax.set_ylabel("principal funded (millions)")
    ax.set_title("Principal per route (red: at its cap)")
    ax.tick_params(axis="x", rotation=75)
    return ax


def binding_limits(plan: Plan, top: int = 15, ax=None):
    """The binding caps by what one more unit of limit would save."""
    plt = _plt()
    c = plan.constraints
    caps = c[c["binding"] & c["kind"].isin(["daily_max", "facility_headroom", "platform_capacity", "daily_min"])]
    caps = caps.reindex(caps["shadow_price"].abs().sort_values(ascending=False).index).head(top)
    ax = ax or plt.subplots(figsize=(8, 0.35 * max(len(caps), 3) + 1))[1]
    ax.barh(caps["constraint"], -caps["shadow_price"] * 1e4)
    ax.invert_yaxis()
    ax.set_xlabel("saving per 10,000 of extra limit")
    ax.set_title("Binding limits and their shadow prices")
    return ax


def marginal_cost_curve(table: pd.DataFrame, label: str, ax=None):
    """Objective and shadow price over a sweep (from :func:`fundalloc.sweep`)."""
    plt = _plt()
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    ax.plot(table["value"] / 1e6, table["objective"] / 1e6, marker="o", color="tab:blue")
    ax.set_xlabel(f"{label} (millions)")
    ax.set_ylabel("objective (millions)", color="tab:blue")
    twin = ax.twinx()
    twin.plot(table["value"] / 1e6, -table["shadow_price"], marker="s", color="tab:orange")
    twin.set_ylabel("saving per unit of extra limit", color="tab:orange")
    ax.set_title(f"What {label} is worth")
    return ax


def unfunded_breakdown(plan: Plan, loans: pd.DataFrame, by: str, ax=None):
    """Unfunded principal by an attribute of the loans."""
    plt = _plt()
    m = plan.allocations[["loan_id", "funder_id"]].merge(loans[["loan_id", "principal", by]], on="loan_id")
    table = m[m["funder_id"] == ""].groupby(by)["principal"].sum() / 1e6
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    if len(table):
        table.plot.bar(ax=ax, color="tab:gray")
    ax.set_ylabel("unfunded principal (millions)")
    ax.set_title(f"Unfunded by {by}")
    return ax


def scenario_costs(names: list[str], plans: list[Plan], ax=None):
    """Funding cost and unfunded penalty of several plans side by side."""
    plt = _plt()
    ax = ax or plt.subplots(figsize=(8, 4))[1]
    cost = np.array([p.funding_cost for p in plans]) / 1e6
    pen = np.array([p.objective - p.funding_cost for p in plans]) / 1e6
    ax.bar(names, cost, label="funding cost")
    ax.bar(names, pen, bottom=cost, label="unfunded penalty and shortfall")
    ax.set_ylabel("millions")
    ax.legend()
    ax.set_title("Scenarios")
    return ax


def route_shift(names: list[str], plans: list[Plan], ax=None):
    """Funder amount per route under several plans, side by side (where the terms moved the money)."""
    plt = _plt()
    table = pd.concat([p.funders.set_index("funder_id")["funder_amount"].rename(n) for n, p in zip(names, plans)],
                      axis=1).fillna(0.0) / 1e6
    table = table[(table > 0).any(axis=1)]
    ax = ax or plt.subplots(figsize=(11, 4))[1]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(table))
    for j, n in enumerate(names):
        ax.bar(x + j * width, table[n], width=width, label=n)
    ax.set_xticks(x + width * (len(names) - 1) / 2, table.index, rotation=75)
    ax.set_ylabel("funder amount (millions)")
    ax.legend()
    ax.set_title("Funder amount per route")
    return ax
