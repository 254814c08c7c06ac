"""The daemon's documented exit statuses (README, "Exit statuses").

systemd's unit uses them: RestartPreventExitStatus=78 keeps a bad config from
restart-looping, and Restart=on-failure restarts after the others.
"""

OK = 0
#: An unexpected internal error (a bug); systemd restarts the daemon.
FAILURE = 1
#: Wrong command-line usage (argparse's own status).
USAGE = 2
#: The job exited while this host led and job.on_exit is "exit", with a status the
#: daemon keeps for itself (``RESERVED``), or without one (it could not start).
JOB_EXITED = 3
#: status: the election has no leader; resign: this host is not queued.
NOT_FOUND = 4
#: ZooKeeper did not answer, the job cannot be supervised here, or a listener cannot
#: bind its port (EX_UNAVAILABLE).
UNAVAILABLE = 69
#: The job's processes survived SIGKILL (uninterruptible sleep, a stopped guardian):
#: the daemon exited without closing its session, which ZooKeeper expires (EX_OSERR).
UNREAPED = 71
#: resign --wait: no other host took over in time (EX_TEMPFAIL).
TIMEOUT = 75
#: ZooKeeper refused our credentials (EX_NOPERM); retrying would not help.
AUTH_FAILED = 77
#: The configuration is invalid (EX_CONFIG).
CONFIG = 78

#: Statuses a job cannot pass through (``for_job``): the daemon's own above, and the
#: whole of sysexits.h's range (64..78) so that a status added there later does not
#: change what a job's status maps to. OK and JOB_EXITED are not in it: a job's 0 is
#: the daemon's 0 (done, no failure), and a job's 3 already reads "the job exited".
RESERVED = frozenset({FAILURE, USAGE, NOT_FOUND, *range(64, 79)})


def for_job(returncode: int | None) -> int:
    """The daemon's exit status after its job exited with ``job.on_exit: exit``.

    Why pass it through: a supervisor (systemd, a shell, a container runtime) then
    sees the job's own verdict, as with consul lock's -child-exit-code. Why not
    always: a status that names one of the daemon's own conditions would be misread
    (78 would stop systemd's restarts via RestartPreventExitStatus, 71 would claim an
    unreaped job, 1 a daemon bug), so those become JOB_EXITED and the job's real
    status stays in the ``job_exited`` log event. A job killed by signal N (the
    guardian reports -N) gives 128 + N, as shells report it, above every status the
    daemon uses. None (the job never started) gives JOB_EXITED.
    """
    if returncode is None:
        return JOB_EXITED
    if returncode < 0:
        return 128 - returncode
    if returncode in RESERVED or returncode > 255:
        return JOB_EXITED
    return returncode
