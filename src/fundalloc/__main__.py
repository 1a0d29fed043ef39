"""``python -m fundalloc``: the command line."""

from .cli import main

raise SystemExit(main())
