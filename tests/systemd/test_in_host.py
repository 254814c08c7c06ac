"""notify.py, journal.py, the catalog and the shipped unit, exercised under a
real systemd (one booted host for the module). The daemon is replaced by a
small stand-in (a drop-in overrides ExecStart) so that the unit's notify,
watchdog, restart and kill behaviour is tested on its own."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

STANDIN = r'''
import os, signal, subprocess, sys, time
from zkleader import notify

mode = sys.argv[1] if len(sys.argv) > 1 else "serve"
if mode == "badconfig":
    print("zkleader: /etc/zkleader/zkleader.yaml: invalid", file=sys.stderr)
    sys.exit(78)
interval = notify.watchdog_interval()
job = subprocess.Popen(["sleep", "1000"])          # stands for the leader job
with open("/run/standin.pids", "w") as f:
    f.write(f"{os.getpid()} {job.pid} {interval}\n")
stop = False
def on_term(signum, frame):
    global stop
    stop = True
def on_hup(signum, frame):
    notify.reloading("reloading")
    notify.ready("reloaded")
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGHUP, on_hup)
notify.ready(f"stand-in ready, watchdog {interval}")
while not stop:
    notify.watchdog()
    time.sleep(interval / 4 if interval else 0.5)
notify.stopping("stopping the job")
job.terminate()
job.wait()
sys.exit(0)
'''

JOURNAL_PROBE = r'''
import json, sys
import structlog
from zkleader import journal

structlog.configure(
    processors=[structlog.processors.add_log_level, journal.JournaldRenderer()],
    logger_factory=journal.JournalLoggerFactory(),
    cache_logger_on_first_use=False,
)
log = structlog.get_logger().bind(election="/zkleader/report", candidate=sys.argv[2])
log.info("leader_acquired", node="n_0000000007", token=4294967321)
log.warning("leadership_lost", reason="lease expired", token=4294967321)
log.error("something_new", detail="no catalog entry of its own")
with open(sys.argv[1], "w") as f:
    json.dump({"stderr_is_journal": journal.stderr_is_journal()}, f)
'''


@pytest.fixture(scope="module")
def host(systemd_capable, zkleader_venv):
    import harness

    with harness.SystemdHost("zk-in-host", zkleader_venv=zkleader_venv) as h:
        h.write_file("/etc/systemd/system/zkleader.service", (REPO / "systemd/zkleader.service").read_text())
        h.write_file("/usr/local/lib/zkleader-standin.py", STANDIN)
        h.write_file("/usr/local/lib/zkleader-journal-probe.py", JOURNAL_PROBE)
        h.write_file("/usr/lib/systemd/catalog/zkleader.catalog", (REPO / "systemd/zkleader.catalog").read_text())
        h.run(["journalctl", "--update-catalog"], check=True)
        yield h


def _standin(host, mode: str = "serve") -> None:
    host.write_file("/etc/systemd/system/zkleader.service.d/standin.conf",
                    "[Service]\nExecStart=\n"
                    f"ExecStart=/opt/zkleader/bin/python /usr/local/lib/zkleader-standin.py {mode}\n")
    host.systemctl("daemon-reload", check=True)
    host.systemctl("reset-failed", "zkleader.service")


def _alive(host, pid: int) -> bool:
    return host.run(["kill", "-0", str(pid)]).returncode == 0


def _wait(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def test_ready_status_reload_stop(host):
    _standin(host)
    t0 = time.monotonic()
    r = host.systemctl("start", "zkleader.service", timeout=30)  # returns on READY=1
    assert r.returncode == 0, r.stderr + host.journalctl("-u", "zkleader", "-n", "30").stdout
    assert time.monotonic() - t0 < 10
    props = host.show("zkleader.service", "ActiveState", "StatusText", "WatchdogUSec")
    assert props["ActiveState"] == "active"
    assert props["StatusText"] == "stand-in ready, watchdog 2.0"
    assert props["WatchdogUSec"] == "2s"
    main, job, interval = host.read_file("/run/standin.pids").split()
    assert float(interval) == 2.0

    # ExecReload sends SIGHUP; RELOADING=1 then READY=1 completes the reload
    r = host.systemctl("reload", "zkleader.service", timeout=30)
    assert r.returncode == 0, r.stderr
    assert host.show("zkleader.service", "StatusText")["StatusText"] == "reloaded"

    r = host.systemctl("stop", "zkleader.service", timeout=30)
    assert r.returncode == 0, r.stderr
    props = host.show("zkleader.service", "ActiveState", "Result", "NRestarts")
    assert props["ActiveState"] == "inactive" and props["Result"] == "success", props
    assert not _alive(host, int(job))


def test_watchdog_kills_a_paused_daemon_and_its_job(host, capsys):
    _standin(host)
    assert host.systemctl("start", "zkleader.service", timeout=30).returncode == 0
    main, job, _ = host.read_file("/run/standin.pids").split()
    main, job = int(main), int(job)
    t0 = time.monotonic()
    host.run(["kill", "-STOP", str(main)], check=True)
    assert _wait(lambda: not _alive(host, job), timeout=8, step=0.02), "job survived the watchdog"
    job_gone = time.monotonic() - t0
    main_gone = not _alive(host, main)
    props = host.show("zkleader.service", "Result", "ActiveState", "SubState")
    with capsys.disabled():
        print(f"\nwatchdog: job gone {job_gone:.2f}s after SIGSTOP of the daemon (WatchdogSec=3s)")
    assert main_gone
    # the last WATCHDOG=1 came at most 0.75 s before the SIGSTOP
    assert 2.0 <= job_gone <= 4.5, job_gone
    log = host.journalctl("-u", "zkleader.service", "-o", "cat").stdout
    assert "Watchdog timeout" in log, log
    # Restart=on-failure brings it back after RestartSec=100ms
    assert _wait(lambda: host.show("zkleader.service", "NRestarts")["NRestarts"] == "1", timeout=10)
    assert _wait(lambda: host.show("zkleader.service", "ActiveState")["ActiveState"] == "active", timeout=10)
    assert host.systemctl("stop", "zkleader.service", timeout=30).returncode == 0


def test_exit_78_is_not_restarted(host):
    _standin(host, "badconfig")
    r = host.systemctl("start", "zkleader.service", timeout=30)
    assert r.returncode != 0
    time.sleep(3)  # >> RestartSec: a restart would have happened by now
    props = host.show("zkleader.service", "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert props == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}, props
    host.systemctl("reset-failed", "zkleader.service")


def test_structured_journal_entries_and_catalog(host):
    from zkleader import journal

    r = host.run(["systemd-run", "--wait", "--collect", "--quiet", "--unit=zk-journal-probe",
                  "/opt/zkleader/bin/python", "/usr/local/lib/zkleader-journal-probe.py",
                  "/run/probe-journal.json", "zk-in-host"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(host.read_file("/run/probe-journal.json")) == {"stderr_is_journal": True}

    acquired = host.journal_entries("MESSAGE_ID=" + journal.MESSAGE_IDS["leader_acquired"])
    assert len(acquired) == 1, acquired
    e = acquired[0]
    assert e["MESSAGE"] == "leader acquired for /zkleader/report (token 4294967321)"
    assert e["PRIORITY"] == "6"
    assert e["SYSLOG_IDENTIFIER"] == "zkleader"
    assert e["ZKLEADER_EVENT"] == "leader_acquired"
    assert e["ZKLEADER_ELECTION"] == "/zkleader/report"
    assert e["ZKLEADER_CANDIDATE"] == "zk-in-host"
    assert e["ZKLEADER_TOKEN"] == "4294967321"
    assert e["ZKLEADER_NODE"] == "n_0000000007"
    assert e["_SYSTEMD_UNIT"] == "zk-journal-probe.service"

    lost = host.journal_entries("ZKLEADER_EVENT=leadership_lost")
    assert [x["PRIORITY"] for x in lost] == ["4"]
    assert lost[0]["MESSAGE"] == "leadership lost for /zkleader/report: lease expired (token 4294967321)"
    other = host.journal_entries("ZKLEADER_EVENT=something_new")
    assert other and other[0]["MESSAGE_ID"] == journal.OTHER_MESSAGE_ID and other[0]["PRIORITY"] == "3"

    # journalctl -x explains the entry with the catalog, fields substituted
    text = host.journalctl("-x", "-o", "short", "MESSAGE_ID=" + journal.MESSAGE_IDS["leader_acquired"]).stdout
    assert "Subject: zkleader on this host became the leader of /zkleader/report" in text, text
    assert "fencing token" in text and "4294967321" in text, text
    assert "Defined-By: zkleader" in text


def test_stderr_is_journal_only_for_the_journal_stream(host):
    # stdout to the journal (so JOURNAL_STREAM is set) but stderr to a file
    r = host.run(["systemd-run", "--wait", "--collect", "--quiet",
                  "-p", "StandardOutput=journal", "-p", "StandardError=file:/run/probe-stderr",
                  "/opt/zkleader/bin/python", "/usr/local/lib/zkleader-journal-probe.py",
                  "/run/probe-file.json", "zk-in-host-2"], timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(host.read_file("/run/probe-file.json")) == {"stderr_is_journal": False}
