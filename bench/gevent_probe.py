"""Does kazoo's gevent handler work with zkleader's real code? (It would let one
process hold 1,000 sessions without 4 threads each.)

Run: pip install --target /tmp/gevent-lib gevent
     PYTHONPATH=/tmp/gevent-lib .venv/bin/python -m bench.gevent_probe

It monkey-patches the process, hands kazoo's SequentialGeventHandler to the real
ZooKeeperShell, starts two real daemon loops (bench.candidates.ZkleaderCandidate) on
a standalone server and asks for one planned handover. Result here (gevent 26.9,
kazoo 2.11): the election works, then the process hangs as soon as the leader starts
its job: JobRunner's watcher reads the guardian's status pipe with a blocking file
read, which blocks gevent's hub and with it every session in the process. So the
benchmark shares processes with threads instead. Needed for gevent: ZooKeeperShell
taking a handler, and JobRunner reading the pipe cooperatively (or in a real thread).
"""

from gevent import monkey

monkey.patch_all()

import functools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import kazoo.client  # noqa: E402
from kazoo.handlers.gevent import SequentialGeventHandler  # noqa: E402

import zkleader.zookeeper as shell  # noqa: E402
from zkleader.testing.zkserver import ZooKeeperServer  # noqa: E402

from .candidates import Settings, ZkleaderCandidate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

shell.KazooClient = functools.partial(kazoo.client.KazooClient, handler=SequentialGeventHandler())


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="gevent-probe-")
    server = ZooKeeperServer(workdir + "/zk")
    server.start(timeout=60)
    events: list[tuple[str, int]] = []

    def emit(kind: str, ident: int | None = None, **fields: object) -> None:
        events.append((kind, ident or 0))

    settings = Settings({"design": "zkleader", "hosts": server.hosts, "election": "/gevent-probe",
                         "session_timeout": 4.0, "stop_timeout": 1.0,
                         "job_argv": [sys.executable, "-I", "-S", str(REPO / "bench/jobs/marker.py")],
                         "job_env": {"BENCH_RECORD": workdir + "/records", "BENCH_LOCK": workdir + "/lock"}})
    candidates = [ZkleaderCandidate(i, settings, emit) for i in range(2)]

    # With everything patched nothing in here can notice a blocked hub: the parent
    # process (below) gives the verdict, killing this one after 40 s.
    for candidate in candidates:
        candidate.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(k == "spawned" for k, _ in events):
        time.sleep(0.05)
    print("leader's job spawned:", any(k == "spawned" for k, _ in events), flush=True)
    leader = next((i for k, i in events if k == "spawned"), 0)
    candidates[leader].stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(k == "spawned" and i != leader for k, i in events):
        time.sleep(0.05)
    print("handover:", any(k == "spawned" and i != leader for k, i in events), flush=True)
    server.close()
    os._exit(0)


if __name__ == "__main__":
    if os.environ.get("GEVENT_PROBE_CHILD"):
        main()
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "bench.gevent_probe"], cwd=REPO,
                            env={**os.environ, "GEVENT_PROBE_CHILD": "1"}, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate(timeout=40)
        print(out, end="")
        print("verdict: gevent works with the real code" if "handover: True" in out else "verdict: no handover")
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        print(out, end="")
        print("verdict: the process hung (gevent's hub is blocked): gevent does not work with the real code")
