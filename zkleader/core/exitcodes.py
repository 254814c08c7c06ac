"""The daemon's documented exit statuses (README, "Exit statuses").

systemd's unit uses them: RestartPreventExitStatus=78 keeps a bad config from
restart-looping, and Restart=on-failure restarts after the others.
"""

OK = 0
#: An unexpected internal error (a bug); systemd restarts the daemon.
FAILURE = 1
#: Wrong command-line usage (argparse's own status).
USAGE = 2
#: The job exited while this host led and job.on_exit is "exit".
JOB_EXITED = 3
#: status: the election has no leader; resign: this host is not queued.
NOT_FOUND = 4
#: ZooKeeper did not answer, or the job cannot be supervised here (EX_UNAVAILABLE).
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
