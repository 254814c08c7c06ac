"""The daemon's clock: the lease and every deadline compared with it run on it.

CLOCK_BOOTTIME rather than CLOCK_MONOTONIC. Both ignore wall-clock steps, but
CLOCK_MONOTONIC stops while the system is suspended, and the ZooKeeper servers do
not: they expire a session they have not heard from for its timeout whatever our
host was doing. On a monotonic clock a lease would look as fresh after a resume as
it was before the suspend, while the session may be gone and a successor leading.
CLOCK_BOOTTIME counts the suspended time too, so after a resume the lease has run
out and the job is stopped at the loop's next wake-up.
"""

from __future__ import annotations

import time


def now() -> float:
    """Seconds since boot, suspended time included (Linux CLOCK_BOOTTIME)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)
