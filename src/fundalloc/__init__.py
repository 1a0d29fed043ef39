"""fundalloc: multi-lender funding allocation with whole-loan plans, LP bounds and shadow prices."""

from .api import Day, load_day, plan
from .solve import PlanOptions
from .errors import FundallocError, InputError, SolverError, VerificationError
from .plan import Plan, PlanStatus
from .terms import Terms, load_terms
from .whatif import Comparison, compare, derive, explain, shadow_prices, sweep

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "Day",
    "FundallocError",
    "InputError",
    "Plan",
    "PlanOptions",
    "PlanStatus",
    "SolverError",
    "Terms",
    "VerificationError",
    "compare",
    "derive",
    "explain",
    "load_day",
    "load_terms",
    "plan",
    "shadow_prices",
    "sweep",
]
