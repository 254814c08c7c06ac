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
#: ZooKeeper refused our credentials (EX_NOPERM); retrying would not help.
AUTH_FAILED = 77
#: The configuration is invalid (EX_CONFIG).
CONFIG = 78
