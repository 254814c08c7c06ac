"""A leader-only job that is a tiny HTTP backend, for the load-balancer tests
(tests/test_haproxy.py): every GET is answered 200 with the candidate's name, so the
client behind the balancer sees which host served it.

Like detector.py it holds an exclusive flock(2) on $DETECTOR_LOCK for as long as it
lives (an overlap is recorded and the job exits 99) and records start/stop in
$DETECTOR_RECORD; "start" is written once the port is bound, with CLOCK_MONOTONIC time.

Usage: backend.py PORT
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from detector import record  # run as a script with -I -S, beside detector.py


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (os.environ.get("ZKLEADER_CANDIDATE", "?") + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    port = int(sys.argv[1])
    lock = os.open(os.environ["DETECTOR_LOCK"], os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        record("overlap")
        return 99

    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = False  # a stop finishes the answers under way
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)

    def on_term(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    record("start", port=port)
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    record("stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
