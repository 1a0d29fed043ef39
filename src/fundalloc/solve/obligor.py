"""Lazy obligor rows: on a big day thousands of borrowers could bind, and a borrower's row needs
the borrower's loans kept apart from everyone else's (classes of their own), which would make
most classes singletons. So beyond ``eager_obligor_rows`` the LP leaves out every obligor row (a
relaxation: its bound stays valid for the whole day) except those a warm start found binding;
a whole-loan plan is then checked against every row, and the loans of the few borrowers whose
rows it breaks are placed again with those rows in a MIP."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..instance import Instance
from .context import Context
from .restricted import FixedSums, place
from .rows import TOL, RouteIndex, Rows


def restrict_obligor(inst: Instance, keep: np.ndarray) -> Instance:
    """The instance with only the obligor rows ``keep``: a relaxation of ``inst``.

    The loans of borrowers without a kept row lose their slot, so they aggregate freely again.
    """
    rows = [inst.obligor_rows[j] for j in keep]
    old = np.unique(np.array([o.slot for o in rows], dtype=np.int64))
    new_of = np.full(len(inst.obligor_borrowers) + 1, -1, dtype=np.int64)
    new_of[old] = np.arange(len(old))
    slot = new_of[inst.obligor_slot]  # -1 maps to the trailing -1
    slot.flags.writeable = False
    return replace(inst, obligor_slot=slot, obligor_borrowers=tuple(inst.obligor_borrowers[k] for k in old),
                   obligor_rows=tuple(replace(o, slot=int(new_of[o.slot])) for o in rows))


class LazyObligor:
    """Which obligor rows the MIPs see, and the instance they see them in."""

    def __init__(self, full: Instance, active: np.ndarray, rows: Rows):
        self.full, self.active, self.rows = full, active, rows
        self.inst = full if active.all() else restrict_obligor(full, np.flatnonzero(active))

    def broken(self, route: np.ndarray) -> np.ndarray:
        """Indices (into the full instance's obligor rows) of the rows ``route`` breaks."""
        ob = self.rows.obligor
        if not ob.m:
            return np.zeros(0, dtype=np.int64)
        act = ob.activity(RouteIndex.of(self.full, route))
        return np.flatnonzero(act - ob.rhs > TOL)

    def activate(self, rows: np.ndarray) -> None:
        if len(rows) and not self.active[rows].all():
            self.active[rows] = True
            self.inst = self.full if self.active.all() else restrict_obligor(self.full, np.flatnonzero(self.active))

    def free_ok(self) -> np.ndarray:
        """Loans a MIP over ``self.inst`` may move: those whose borrower has no row left out."""
        full = self.full
        ok = np.ones(full.n, dtype=bool)
        if not full.obligor_rows or self.active.all():
            return ok
        lazy_slots = np.unique(np.array([o.slot for o, a in zip(full.obligor_rows, self.active) if not a],
                                        dtype=np.int64))
        ok[np.isin(full.obligor_slot, lazy_slots)] = False
        return ok

    def enforce(self, ctx: Context, route: np.ndarray, sums: FixedSums) -> np.ndarray:
        """Place again the loans of every borrower whose row ``route`` breaks, with the rows.

        Each round makes the broken rows active and solves a small MIP: those borrowers' loans free
        over all their eligible routes, every other loan where it is, every active row present.
        Whatever is still broken after ``obligor_rounds`` rounds is left to the repair."""
        R = self.full.R
        rounds = 0
        for _ in range(ctx.options.obligor_rounds):
            broken = self.broken(route)
            if not len(broken) or ctx.clock.expired():
                break
            ctx.clock.say(f"{len(broken):,} obligor rows broken: placing those borrowers' loans again")
            self.activate(broken)
            slots = np.unique(np.array([self.full.obligor_rows[j].slot for j in broken], dtype=np.int64))
            free = np.isin(self.full.obligor_slot, slots)
            # those loans unfunded is a feasible start: it only lowers every obligor row
            placed = place(ctx, self.inst, np.where(free, -1, route), sums, None, ctx.options.kernel_nodes,
                           start_route=np.where(free, R, route))
            rounds += 1
            if not np.isfinite(placed.objective):
                break
            route = placed.route
        ctx.stats.update({"obligor_rows": int(self.active.sum()), "obligor_rows_all": len(self.full.obligor_rows),
                          "obligor_rounds": rounds})
        return route
