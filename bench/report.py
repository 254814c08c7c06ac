"""results/bench.md, results/*.png and the console table, from results/bench.json.
Re-render without re-running: python -m bench.report [results/bench.json]."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NAMES = {
    "zkleader": "zkleader",
    "kazoo": "kazoo Election",
    "herd": "herd (leader key)",
    "etcd": "etcd lease",
}
COLOURS = {"zkleader": "tab:blue", "kazoo": "tab:orange", "herd": "tab:red", "etcd": "tab:green"}

TARGETS = {
    "planned_p99_ms": 100.0,
    "crash_beyond_ms": 500.0,
    "notifications": 1.0,
    "rss_mb": 40.0,
    "cpu_pct": 1.0,
}


def fmt(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results.get("summary", []) if r.get("stop_count")]


def table(results: dict[str, Any]) -> str:
    head = ("| design | servers | N | planned p50 / p99 / max, ms | crash: beyond timeout p50 / max, ms "
            "| notifications per change: mean (to the leaver), max | requests per change: mean, max "
            "| server-side notifications "
            "| join, s | MB / candidate | idle CPU % / candidate | overlaps | load avg (1 min) |")
    lines = [head, "|" + "---|" * 13]
    for r in results.get("summary", []):
        if r.get("error") and not r.get("stop_count"):
            lines.append(f"| {NAMES[r['design']]} | {r['topology']} | {r['n']} | failed: {r['error']} |" + " |" * 9)
            continue
        planned = f"{fmt(r['stop_p50_ms'], 1)} / {fmt(r['stop_p99_ms'], 1)} / {fmt(r['stop_max_ms'], 1)}"
        crash = f"{fmt(r['crash_p50_ms'])} / {fmt(r['crash_max_ms'])}" if r.get("crash_count") else "–"
        notes = (f"{fmt(r['stop_notifications'], 1)} ({fmt(r['stop_notifications_to_leaver'], 1)}), max "
                 f"{fmt(r.get('stop_notifications_max'))}; crash {fmt(r['crash_notifications'], 1)}")
        requests = (f"{fmt(r['stop_requests'], 1)}, max {fmt(r.get('stop_requests_max'))}; "
                    f"crash {fmt(r['crash_requests'], 1)}")
        server = f"{fmt(r['stop_server_notifications'], 1)}; crash {fmt(r['crash_server_notifications'], 1)}"
        lines.append(
            f"| {NAMES[r['design']]} | {r['topology']} | {r['n']} | {planned} | {crash} | {notes} | {requests} "
            f"| {server} | {fmt(r['join_s'], 2)} | {fmt(r['worker_rss_mb_per_candidate'], 2)} "
            f"| {fmt(r['idle_cpu_pct_per_candidate'], 3)} | {r['overlaps']} "
            f"| {fmt(r.get('load_before'), 1)} -> {fmt(r.get('load_after'), 1)} |"
        )
    return "\n".join(lines)


def breakdown(results: dict[str, Any]) -> str:
    lines = ["| design | servers | N | old job reaped | old node deleted | successor elected | job spawned "
             "| job running |", "|---|---|---|---|---|---|---|---|"]
    for r in rows(results):
        lines.append(f"| {NAMES[r['design']]} | {r['topology']} | {r['n']} | {fmt(r.get('stop_reaped_p50_ms'), 1)} "
                     f"| {fmt(r.get('stop_handed_p50_ms'), 1)} | {fmt(r['stop_elected_p50_ms'], 1)} "
                     f"| {fmt(r['stop_spawned_p50_ms'], 1)} | {fmt(r['stop_p50_ms'], 1)} |")
    return "\n".join(lines)


def footprint_section(results: dict[str, Any]) -> str:
    fp = results.get("footprint")
    if not fp:
        return "Not measured (--no-footprint)."
    if fp.get("error") and not fp.get("daemons"):
        return f"Failed: {fp['error']}"
    lines = ["| daemon | role | RSS, MB | PSS, MB | threads | idle CPU, % of a core |", "|---|---|---|---|---|---|"]
    for d in fp.get("daemons", []):
        lines.append(f"| {d['name']} | {d['role']} | {d['rss_mb']:.1f} | {d['pss_mb']:.1f} | {d['threads']} "
                     f"| {d['idle_cpu_pct']:.3f} |")
    lines.append("")
    lines.append(f"Measured over {fp.get('idle_s', 0):g} s idle, 3 s after the leader's job started. The leader's "
                 f"guardian adds {fmt(fp.get('guardian_rss_mb'), 1)} MB RSS and the job itself "
                 f"{fmt(fp.get('job_rss_mb'), 1)} MB (both separate processes, not counted above).")
    if fp.get("stop_count"):
        lines.append("")
        lines.append(f"The same three daemons as processes: **SIGTERM to the leader -> successor's job running** "
                     f"p50 {fmt(fp['stop_p50_ms'], 1)} / p99 {fmt(fp['stop_p99_ms'], 1)} / max "
                     f"{fmt(fp['stop_max_ms'], 1)} ms over {fp['stop_count']}; **kill -9 of the leader -> successor's "
                     f"job running, beyond the {fp['session_timeout']:g} s session timeout** p50 "
                     f"{fmt(fp.get('crash_p50_ms'))} / max {fmt(fp.get('crash_max_ms'))} ms over "
                     f"{fp.get('crash_count', 0)}; overlaps {fp.get('overlaps')}.")
    return "\n".join(lines)


def verdicts(results: dict[str, Any]) -> str:
    out = []
    zk = [r for r in rows(results) if r["design"] == "zkleader"]
    if zk:
        def per_n(key: str, digits: int = 0) -> str:
            parts = []
            for topology in ("ensemble", "standalone"):
                cells = sorted((r for r in zk if r["topology"] == topology and r.get(key) is not None),
                               key=lambda r: r["n"])
                if cells:
                    parts.append(f"{topology} " + ", ".join(f"N={r['n']}: {fmt(r[key], digits)}" for r in cells))
            return "; ".join(parts)

        ok = all((r["stop_p99_ms"] or 1e9) < TARGETS["planned_p99_ms"] for r in zk)
        some = [r for r in zk if (r["stop_p99_ms"] or 1e9) < TARGETS["planned_p99_ms"]]
        out.append(f"- Planned handover p99 under 100 ms: **{'met' if ok else 'missed' if not some else 'mostly missed'}**"
                   f" in-process. p99, ms: {per_n('stop_p99_ms')}. p50, ms: {per_n('stop_p50_ms')}.")
        fp = results.get("footprint") or {}
        if fp.get("stop_p99_ms") is not None:
            ok = fp["stop_p99_ms"] < TARGETS["planned_p99_ms"]
            out.append(f"  With real daemon processes (SIGTERM, N=3): **{'met' if ok else 'missed'}**, p50 "
                       f"{fmt(fp['stop_p50_ms'], 1)} / p99 {fmt(fp['stop_p99_ms'], 1)} ms.")
        crash = [r for r in zk if r.get("crash_max_ms") is not None]
        if crash:
            ok = all(r["crash_max_ms"] < TARGETS["crash_beyond_ms"] for r in crash)
            good = [r for r in crash if r["crash_max_ms"] < TARGETS["crash_beyond_ms"]]
            missed = ", ".join(f"{r['topology']} N={r['n']}" for r in crash if r["crash_max_ms"] >= TARGETS["crash_beyond_ms"])
            out.append(f"- Crash failover within 0.5 s of the session timeout: **{'met' if ok else 'missed at ' + missed if good else 'missed'}**. "
                       f"Worst case beyond the timeout, ms: {per_n('crash_max_ms')}.")
        ones = [r for r in zk if r.get("stop_notifications") is not None]
        others = [(r["stop_notifications"] - r["stop_notifications_to_leaver"]) for r in ones]
        crash_ones = [r["crash_notifications"] for r in ones if r.get("crash_notifications") is not None]
        if ones:
            exact = all(abs(v - 1) < 1e-9 for v in others) and all(abs(v - 1) < 1e-9 for v in crash_ones)
            out.append(f"- Exactly one notification per leadership change at every N: **{'met' if exact else 'missed'}** "
                       f"for the candidates that wait (planned: {sorted(set(round(v, 2) for v in others))}, crash: "
                       f"{sorted(set(round(v, 2) for v in crash_ones))}); a planned handover also wakes the leaving "
                       f"leader once (its own node's watch), so 2 notifications in all.")
    lost = [r for r in results.get("summary", []) if r.get("candidate_errors")]
    if lost:
        cells = "; ".join(f"{NAMES[r['design']]} {r['topology']} N={r['n']}: {r['candidate_errors']} "
                          f"({r.get('candidate_error_example') or 'see the run log'})" for r in lost)
        out.append(f"- Candidates that died during a cell (their session expired or a request failed), so that later "
                   f"changes in that cell had fewer candidates: {cells}.")
    overlapped = [r for r in results.get("summary", []) if r.get("overlaps")]
    if overlapped:
        cells = ", ".join(f"{NAMES[r['design']]} {r['topology']} N={r['n']}: {r['overlaps']}" for r in overlapped)
        out.append(f"- Overlaps (two leader jobs alive at once, seen by the flock detector): {cells}. zkleader: none "
                   f"in any cell. The others have no local lease clock: a leader whose session or lease the server "
                   f"expired (pings or keepalives starved on the loaded machine) keeps its job running while the "
                   f"successor starts one.")
    else:
        out.append("- Overlaps (two leader jobs at once, flock detector): none in any cell.")
    fp = results.get("footprint") or {}
    if fp.get("daemons"):
        rss = max(d["rss_mb"] for d in fp["daemons"])
        cpu = max(d["idle_cpu_pct"] for d in fp["daemons"])
        out.append(f"- Daemon under 40 MB RSS: **{'met' if rss < TARGETS['rss_mb'] else 'missed'}** (largest "
                   f"{rss:.1f} MB). Under 1 % of a core idle: **{'met' if cpu < TARGETS['cpu_pct'] else 'missed'}** "
                   f"(largest {cpu:.3f} %).")
    return "\n".join(out)


def plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    data = rows(results)
    specs = [
        ("latency_vs_n.png", "Planned handover: trigger -> successor's job running (p99)", "ms (log)",
         lambda r: r["stop_p99_ms"], True),
        ("failover_vs_n.png", "Crash failover beyond the session/lease timeout (p50)", "ms",
         lambda r: r.get("crash_p50_ms"), False),
        ("notifications_vs_n.png", "Watch notifications to waiting candidates per planned leadership change",
         "notifications (log)", lambda r: None if r["stop_notifications"] is None
         else r["stop_notifications"] - (r["stop_notifications_to_leaver"] or 0), True),
        ("requests_vs_n.png", "Requests per planned leadership change (client side)", "requests (log)",
         lambda r: r["stop_requests"], True),
    ]
    for filename, title, ylabel, value, logy in specs:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for design in NAMES:
            for topology, style in (("ensemble", "-o"), ("standalone", "--s")):
                points = sorted((r["n"], value(r)) for r in data
                                if r["design"] == design and r["topology"] == topology and value(r) is not None)
                if points:
                    ax.plot([p[0] for p in points], [max(p[1], 0.1) if logy else p[1] for p in points], style,
                            color=COLOURS[design], label=f"{NAMES[design]}, {topology}", alpha=0.9)
        if filename == "latency_vs_n.png":
            ax.axhline(100, color="grey", linestyle=":", linewidth=1, label="target 100 ms")
        if filename == "failover_vs_n.png":
            ax.axhline(500, color="grey", linestyle=":", linewidth=1, label="target 500 ms")
        if filename == "notifications_vs_n.png":
            ax.axhline(1, color="grey", linestyle=":", linewidth=1, label="target: 1")
            points = sorted((r["n"], r["stop_notifications"]) for r in data
                            if r["design"] == "zkleader" and r["topology"] == "ensemble" and r["stop_notifications"])
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], ":", color=COLOURS["zkleader"],
                        label="zkleader, ensemble, incl. the leaver's own node watch")
        ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("candidates N (log)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / filename)
        plt.close(fig)
        made.append(filename)
    return made


def reruns(results: dict[str, Any]) -> str:
    if not results.get("reruns"):
        return ""
    lines = ["Cells measured again in a later run and merged in (`--merge-into`):", ""]
    for rerun in results["reruns"]:
        lines.append(f"- `scripts/bench {' '.join(rerun['argv'])}`: {', '.join(rerun['cells'])} "
                     f"(code {rerun.get('code')}, load {rerun.get('load_at_start')})")
    return "\n".join(lines) + "\n\n"


def write(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    pictures = plots(results, out)
    s = results["settings"]
    m = results["machine"]
    etcd_note = results.get("etcd")
    text = f"""# zkleader benchmark ({results['mode']} mode)

Generated by `scripts/bench{' ' + ' '.join(results['argv']) if results['argv'] else ''}` in {results.get('elapsed_s', 0) / 60:.1f} min.
Machine: {m['cores']} cores ({m['cpu']}), {m['memory_mb'] // 1024} GB, Linux {m['kernel']}, Python {m['python']},
kazoo 2.11, ZooKeeper 3.8 (Debian) on {m['java']}, etcd: {etcd_note or 'not run'}. Everything on 127.0.0.1.
zkleader code: {m.get('code', '?')}. Load average when the run started: {m.get('load_at_start', '?')} (the machine is
shared with other work; figures are from a busy 2-core box, not an idle one).

Settings: ZooKeeper session timeout {s['session_timeout']:g} s, tickTime {s['tick_ms']} ms; etcd lease TTL
{s['lease_ttl']} s; job.stop_timeout {s['stop_timeout']:g} s; {s['handovers']} planned handovers and {s['crashes']}
crash failovers per cell; up to {s['per_worker']} candidates per worker process.

{reruns(results)}## How it is measured

- Every candidate has its own session and runs the real election code: for zkleader the daemon's own loop
  (`zkleader.daemon.Daemon`, with `Leadership`, `ZooKeeperShell` and `JobRunner`), one thread per candidate, many
  candidates per worker process. The other designs start the same job the same way (zkleader's `JobRunner`: the
  guardian, then `bench/jobs/marker.py`, a `python -I -S` job that takes the overlap-detector flock and records its
  start on CLOCK_MONOTONIC), so the figures compare elections, not job launchers.
- **Planned handover**: the leader gets the in-process SIGTERM (`ShutdownRequested`; for the other designs: stop the
  job, then delete the node or key / revoke the lease) -> the successor's job is *running* (its first line).
  The old leader then rejoins at the back as a fresh candidate, so N stays constant.
- **Crash failover**: the in-process kill -9: the leader's socket is shut down without a CloseSession and the client
  never reconnects (the server must expire the session), and the job's guardian sees its lifeline close. Shown:
  the time to the successor's job running *minus* the session timeout (etcd: minus the lease TTL).
- **Notifications / requests per change**: counted on the client side by wrapping kazoo's `_call` (every request),
  `_read_watch_event` (every notification) and `_send_ping`; etcd: every HTTP call and every watch event. Requests
  exclude the periodic ones (zkleader's leader heartbeat every T/6, etcd keepalives) and pings, and the session close.
  "to the leaver": notifications the departing leader got itself. The server-side column sums the servers' `mntr`
  `zk_sum_node_*_watch_count` (watches fired) over the ensemble, or etcd's `etcd_debugging_mvcc_events_total`.
- **Join**: from asking all N candidates to start (all at once) to the last one waiting or leading.
- **MB / candidate, idle CPU**: worker processes' RSS growth and CPU over {s['idle_s']:g} s idle, divided by N
  (in-process figures; the real daemon's are below).

## Results

{table(results)}

![planned handover latency vs N](latency_vs_n.png)
![notifications per change vs N](notifications_vs_n.png)
![crash failover vs N](failover_vs_n.png)
![requests per change vs N](requests_vs_n.png)

### Where a planned handover's time goes (p50, ms after the trigger)

{breakdown(results)}

"old job reaped": the leaver's whole job tree is gone; "old node deleted": zkleader's leaver got the answer to
its delete. "elected": the successor decides to start its job (for zkleader: after its watch fired, it re-listed the
children and confirmed its own node). "spawned": the guardian reports the job's process exists. "running": the job's
first line, after the Python interpreter started twice (guardian and job).

## A real daemon: footprint and handovers as processes

{footprint_section(results)}

## Against the targets

{verdicts(results)}

## Notes

- **Negative crash figures are real.** The server expires a session T after it last *heard* from the client, not
  T after the crash: zkleader's leader sends a heartbeat every T/6 and kazoo pings an idle session every ~T/3, so the
  successor can start up to that long before "crash + T". Expiry itself is rounded up to the server's tick
  ({s['tick_ms']} ms here); etcd checks lease expiry every 500 ms and a lease runs TTL from its last keepalive.
- **The herd design** is the one-leader-key variant (every follower has an exists watch on `<path>/leader`; when it
  goes, all of them try to create it): it shows the herd per leadership change without the quadratic join of the
  children-watch variant, and it is the ZooKeeper twin of the etcd design.
- **kazoo's Election** (its Lock recipe) also watches only the predecessor, so it has no herd either; it has no
  lease clock, so nothing stops its job in time when the leader is cut off (not measured here, see
  /work/shared/notes/safety-timing.md).
- **Threads, not gevent.** kazoo's gevent handler was tried with the real code (`bench/gevent_probe.py`): the
  election works, then the process hangs once the leader starts its job, because `JobRunner` reads the guardian's
  status pipe with a blocking file read that blocks gevent's hub. Candidates therefore share worker processes with
  threads (kazoo: a connection thread and two callback threads per session, plus the daemon loop), and the join is
  paced in waves of {s.get('join_wave', 100)} candidates: 1,000 sessions connecting at once on 2 busy cores
  starve each other's pings past the session timeout and the join collapses into expiries.
- etcd: {etcd_note or 'not run'}; driven through its JSON gateway with plain http.client (one connection per
  candidate, one per watch, `NOPUT` watches so followers see only deletions); keepalives every TTL/3.
"""
    (out / "bench.md").write_text(text)
    (out / "bench.md").write_text(text.replace("\n\n\n", "\n\n"))
    _ = pictures


def console_table(results: dict[str, Any]) -> str:
    lines = [f"{'design':18} {'servers':10} {'N':>5} {'p50':>7} {'p99':>7} {'max':>7} {'crash+':>7} "
             f"{'notif':>7} {'req':>7} {'join s':>7} {'MB/c':>6} {'ovl':>4}"]
    for r in results.get("summary", []):
        lines.append(f"{NAMES[r['design']]:18} {r['topology']:10} {r['n']:>5} {fmt(r.get('stop_p50_ms'), 1):>7} "
                     f"{fmt(r.get('stop_p99_ms'), 1):>7} {fmt(r.get('stop_max_ms'), 1):>7} "
                     f"{fmt(r.get('crash_p50_ms')):>7} {fmt(r.get('stop_notifications'), 1):>7} "
                     f"{fmt(r.get('stop_requests'), 1):>7} {fmt(r.get('join_s'), 2):>7} "
                     f"{fmt(r.get('worker_rss_mb_per_candidate'), 2):>6} {r.get('overlaps')!s:>4}"
                     + (f"  {r['error']}" if r.get("error") else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "results/bench.json")
    loaded = json.loads(path.read_text())
    from .run import summarise

    loaded["summary"] = [summarise(cell) for cell in loaded["cells"]]
    write(loaded, path.parent)
    print(console_table(loaded))
