"""The core: everything that decides lives here. Nothing here does I/O or reads a clock.

The rules of zkleader's state machine are in this package and nowhere else. Events
(``events``) come in with the time at which the daemon's loop handles them; actions
(``actions``) go out, in the order they must be carried out. ``leadership.Leadership``
is the one entry point (``handle(event, now)``, like raft's ``Step``); its parts each
hold one concern. ``timing`` is the lease arithmetic that keeps "never two leader jobs"
true, shared with the configuration checks so that the rule validated is the rule that
runs; ``candidacy`` names election nodes and orders the queue; ``settings`` holds the
plain values the core decides with; ``exitcodes`` the statuses the daemon documents.

This package imports nothing outside the standard library and itself (a test checks
that importing it loads neither kazoo nor yaml nor structlog): production's shells and
the deterministic simulation drive the very same code.
"""
