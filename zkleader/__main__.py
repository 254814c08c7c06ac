"""python -m zkleader: the same as the zkleader command."""

import sys

from .cli import main

sys.exit(main())
