"""Writes the notebooks (without outputs) from the cells below: `python notebooks/build.py`."""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent
SETUP = """import fundalloc as fa
from fundalloc import charts
import pandas as pd
pd.set_option("display.width", 140)
DAY = "../fixtures/day100k"
day = fa.load_day(f"{DAY}/originations.parquet", f"{DAY}/funders.yaml", f"{DAY}/portfolio.csv", f"{DAY}/exposures.csv")
FAST = dict(work_limit=20_000_000)  # an analyst's setting: a smaller whole-loan search budget (counted in work, not seconds)"""

DIVERSIFIED = """doc = day.terms.document()
for f in doc["funders"]:
    if f["kind"] == "bank":
        r = f["cost_of_funds"]
        f["cost_of_funds"] = [{"where": {"tenor_months": {"max": 6}}, "rate": round(r - 0.008, 4)},
                              {"where": {"risk_grade": ["D", "E"]}, "rate": round(r + 0.015, 4)},
                              {"default": r}]
doc["platform"]["max_funder_share"] = 0.085
doc["groups"] = [{"name": "banks", "members": [f["id"] for f in doc["funders"] if f["kind"] == "bank"], "max_share_of_day": 0.40}]
graded_day = fa.load_day(day.loans, doc, day.portfolio, day.exposures)
graded = fa.plan(graded_day)
graded.status, round(graded.objective, 2), f"gap {graded.gap:.1e}"
"""

NOTEBOOKS = {
    "01_daily_plan": [
        ("md", "# The daily plan\n\nPlan the shipped 100k-loan day: who funds what, which limits bind, and what relaxing each would save."),
        ("code", SETUP),
        ("code", "plan = fa.plan(day)\nplan.status, round(plan.objective, 2), round(plan.lower_bound, 2), f\"gap {plan.gap:.1e}\""),
        ("md", "Every loan has a route (or a reason it has none). The LP bound says how far from optimal the whole-loan plan can be."),
        ("code", "plan.funders[[\"funder_id\", \"kind\", \"loan_count\", \"principal\", \"funder_amount\", \"cost\", \"daily_max_utilisation\", \"facility_headroom_utilisation\"]]"),
        ("code", "charts.route_utilisation(plan);"),
        ("md", "## Binding limits\n\nA shadow price is the change in cost per unit of the limit: negative means one more unit of quota, headroom or capital saves that much."),
        ("code", "fa.shadow_prices(plan)[[\"constraint\", \"value\", \"limit\", \"shadow_price\"]].head(12)"),
        ("code", "charts.binding_limits(plan);"),
        ("md", "## Breaches worked around\n\nA limit the existing portfolio already breaches closes that segment to new loans instead of failing the plan."),
        ("code", "pd.DataFrame(plan.breaches)"),
        ("md", "## One loan, explained"),
        ("code", "fa.explain(plan, day, plan.allocations.loan_id.iloc[5])[\"kept_out_by\"]"),
        ("md", "## Banks that price by the loan, and a diversified day\n\nThe same loans under terms the banks and the risk committee actually write: every bank prices short tenors (up to 6 months) 0.8% under its rate and grades D and E 1.5% over it (a rate grid), no funder may carry more than 8.5% of the day's funded principal (the largest warehouse carries 9.5% as written), and the banks together at most 40% (they carry 42%) (风险分散)."),
        ("code", DIVERSIFIED),
        ("code", "fa.shadow_prices(graded)[lambda t: t.kind.isin([\"funder_share\", \"group_share\"])][[\"constraint\", \"value\", \"limit\", \"shadow_price\"]]"),
        ("code", "charts.route_shift([\"as written\", \"rate grids + diversification\"], [plan, graded]);"),
        ("md", "Short tenors move to the banks that now price them lower, grades D and E away from them, and the largest warehouse and the banks give way to the next cheapest routes (a trust and another bank). The net change in objective is the rate grids' saving less what diversification costs; each share's shadow price says what one more unit of share would save."),
        ("code", "round(graded.objective - plan.objective, 2), f\"{graded.objective / plan.objective - 1:+.2%}\""),
    ],
    "02_what_if": [
        ("md", "# What if...\n\nA quota cut, a rate rise, a new warehouse, and what more platform capital is worth. Each scenario is the base day with overrides, re-solved warm from the base plan."),
        ("code", SETUP),
        ("code", "base = fa.plan(day, **FAST)\nicbc = next(f for f in day.terms.funders if f.id == \"bank_icbc\")"),
        ("md", "## Bank ICBC halves its daily quota"),
        ("code", "cut = fa.plan(fa.derive(day, funders={\"bank_icbc\": {\"daily_max\": icbc.daily_max / 2, \"daily_min\": icbc.daily_max / 4}}), warm=base, **FAST)\nc = fa.compare(base, cut)\nc.summary"),
        ("code", "c.routes[[\"funder_amount_base\", \"funder_amount_scenario\", \"funder_amount_change\"]].round(0)"),
        ("code", "c.moved.groupby([\"from\", \"to\"]).size().sort_values(ascending=False).head(8)"),
        ("md", "## Warehouse funding costs rise 50 bp"),
        ("code", "rise = {f.id: {\"cost_of_funds\": f.cost_of_funds + 0.005} for f in day.terms.funders if f.kind == \"abs_warehouse\"}\nrate = fa.plan(fa.derive(day, funders=rise), warm=base, **FAST)\nfa.compare(base, rate).summary"),
        ("md", "## A new warehouse offers 5.0% for up to 80 million"),
        ("code", "new = {\"id\": \"abs_new\", \"kind\": \"abs_warehouse\", \"funding_share\": 0.9, \"cost_of_funds\": 0.05, \"facility_limit\": 8e7, \"outstanding\": 0}\nwh = fa.plan(fa.derive(day, add=[new]), **FAST)\nfa.compare(base, wh).routes.loc[[\"abs_new\"]]"),
        ("code", "charts.scenario_costs([\"base\", \"ICBC quota / 2\", \"ABS +50bp\", \"new warehouse\"], [base, cut, rate, wh]);"),
        ("md", "## What is more platform capital worth?\n\nSweep the platform's daily capacity: the objective falls while capital binds, and the shadow price is the marginal saving."),
        ("code", "cap = day.terms.platform.daily_capacity\ncurve = fa.sweep(day, \"platform.daily_capacity\", [cap * k for k in (0.8, 0.9, 1.0, 1.1, 1.2)], warm=base, **FAST)\ncurve[[\"value\", \"objective\", \"shadow_price\", \"unfunded_principal\", \"gap\"]]"),
        ("code", "charts.marginal_cost_curve(curve, \"platform capacity\");"),
    ],
    "03_stress": [
        ("md", "# Stress\n\nA funder withdrawing, a volume spike, platform capital shrinking: what goes unfunded first, and what it would take to fund it."),
        ("code", SETUP),
        ("code", "base = fa.plan(day, **FAST)"),
        ("md", "## The largest warehouse withdraws"),
        ("code", "gone = fa.plan(fa.derive(day, remove=[\"abs_4\"]), **FAST)\nfa.compare(base, gone).summary"),
        ("md", "## Volume spikes 30%"),
        ("code", "spike_day = fa.derive(day, scale=1.3)\nspike = fa.plan(spike_day, **FAST)\nfa.compare(base, spike).summary"),
        ("code", "charts.unfunded_breakdown(spike, spike_day.loans, \"risk_grade\");"),
        ("md", "## Platform capital shrinks by 40%"),
        ("code", "cap = day.terms.platform.daily_capacity\nshrink_day = fa.derive(day, platform={\"daily_capacity\": cap * 0.6})\nshrink = fa.plan(shrink_day, warm=base, **FAST)\nfa.compare(base, shrink).summary"),
        ("code", "charts.unfunded_breakdown(shrink, shrink_day.loans, \"tenor_months\");"),
        ("md", "What goes unfunded first, and why:"),
        ("code", "shrink.allocations.loc[shrink.allocations.funder_id == \"\", \"unfunded_reason\"].str.slice(0, 120).value_counts().head(5)"),
        ("md", "What it would take: the shadow price of capital says what each extra unit saves; funding the gap costs at most the capital that the unfunded loans would use."),
        ("code", "sp = fa.shadow_prices(shrink)\nsp[sp.kind == \"platform_capacity\"][[\"constraint\", \"value\", \"limit\", \"shadow_price\"]]"),
        ("code", "charts.scenario_costs([\"base\", \"abs_4 gone\", \"volume +30%\", \"capital -40%\"], [base, gone, spike, shrink]);"),
    ],
}


def build() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
        nbf.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    build()
