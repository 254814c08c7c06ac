"""python -m zkleader.simulation: an open-ended search over random schedules."""

from .cli import main

raise SystemExit(main())
