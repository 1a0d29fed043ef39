"""From a compiled day to a whole-loan plan with a valid lower bound, in five phases:

    aggregate -> refine -> split -> search -> repair

- :mod:`.classes` (aggregate): loans a rule cannot tell apart are one class; bins cut classes by
  their continuous fields;
- :mod:`.refine`: the LP over bins, split where its prices disagree, until its optimum meets the
  loan-level Lagrangian bound (:mod:`.lagrange`);
- :mod:`.split`: from bins to loans, with as few fractional loans as binding rows;
- :mod:`.search`: whole loans, by exchanges priced by the LP's duals and small MIPs, every plan
  offered to one :class:`~.incumbent.Incumbent`;
- :mod:`.repair`: any row still broken mended by unfunding the fewest loans.

:func:`solve_instance` (in :mod:`.core`) reads as that algorithm; :mod:`.rows` is the one encoding
of the hard rows over whole loans that the search, the repair and the plan's report share.
"""

from .core import Solved, SolveStatus, solve_instance
from .options import PlanOptions
from .policy import WarmStart

__all__ = ["PlanOptions", "Solved", "SolveStatus", "WarmStart", "solve_instance"]
