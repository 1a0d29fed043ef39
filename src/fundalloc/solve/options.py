"""The solve's knobs. Every budget that decides what the search does is counted in work (simplex
iterations, branch-and-bound nodes, candidate moves), never in seconds: the same inputs give the
same plan on any machine under any load. ``time_limit`` is a safety stop only, and a plan it
stopped says so in its status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanOptions:
    solver: str = "highs"
    time_limit: float = 300.0  # seconds for the whole solve: a safety stop, never a decision
    gap_tolerance: float = 1e-5  # a plan within this gap of the LP bound is reported optimal
    lp_tolerance: float | None = None  # refinement stops at this LP gap (default gap_tolerance / 10)
    max_refinements: int = 30
    # quantile bins per continuous field before refinement; None: 2 below 7.5M loans (the cold
    # first LP is the dearest solve: 5M took 41 s against 58 s with 4), 4 from 7.5M (bigger bins
    # split into more loans, and cutting them costs more LPs than the first one saves)
    initial_bins: int | None = None
    free_unit_size: int = 16  # split bins larger than this are cut before the whole-loan search
    max_cuts: int = 12  # LP re-solves cutting split bins (each usually moves the split to fewer loans)
    split_lp: bool = True  # an LP over the split bins' loans one by one before the whole-loan search
    max_split_loans: int = 10000  # no more cuts once the split chunks hold this few loans
    chunk_pieces: int = 4  # a cut also splits each big split bin or chunk into this many runs
    eager_obligor_rows: int = 500  # up to this many obligor rows all go into the LP; beyond, they are lazy
    obligor_rounds: int = 4  # MIPs placing again the loans of borrowers whose rows a plan breaks
    # from this many loans the whole-loan MIPs take their fixed loans' sums from a table kept up
    # to date as loans move; below, summing the loans per MIP costs milliseconds
    fixed_table_loans: int = 500_000

    # --- the whole-loan search (solve.search) ------------------------------------------------
    # the search's work budget, in units of candidate moves evaluated and MIP nodes (x 1000):
    # raising it buys search; the plan's status says when it ran out above the tolerance
    work_limit: int = 200_000_000
    # a day with at most this many loan-route pairs is also solved as one whole-loan MIP (with
    # HiGHS's own branch and bound, to proven optimality when it finishes within its node budget)
    exact_pairs: int = 4_000
    exact_nodes: int = 2_000  # the node budget of that MIP
    use_patterns: int = 16  # funders' use patterns (min_if_used, fixed_cost) solved at most (see solve.uses)
    # staged relax-and-fix (solve.search.relax): per stage, the fractional loans become whole
    # while loans below this quantile of principal absorb; absorbers per route; nodes per stage
    relax_stages: tuple[float, ...] = (0.75, 0.4, 0.2)
    relax_absorbers: int = 40
    relax_nodes: int = 200
    relax_final_absorbers: int = 10  # the last fractional loans' MIP: absorbers per route
    relax_final_nodes: int = 20
    kernel_nodes: int = 2_000  # the node budget of each kernel sub-MIP
    kernel_loans: int = 600  # loans a kernel sub-MIP frees at most
    kernel_rounds: int = 0  # kernel sub-MIPs, each around the rows whose slack costs most (off: see the README)
    exchange_candidates: int = 256  # candidate moves onto and off a target row's route, each way
    exchange_passes: int = 40  # passes of the exchange search over the rows whose slack costs

    @property
    def lp_gap_target(self) -> float:
        return self.lp_tolerance if self.lp_tolerance is not None else self.gap_tolerance / 10
