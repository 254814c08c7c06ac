"""results/bench.md, results/*.png and the console table, from results/bench.json.
Re-render without re-running: python -m bench.report [results/bench.json]."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NAMES = {
    "zkleader": "zkleader",
    "kazoo": "kazoo Election + Popen job",
    "herd": "herd (leader key)",
    "etcd": "etcd lease (seed style)",
    "zkleader-etcd": "zkleader on etcd",
}
COLOURS = {"zkleader": "tab:blue", "kazoo": "tab:orange", "herd": "tab:red", "etcd": "tab:green",
           "zkleader-etcd": "tab:purple"}

#: The issue's targets (benchmark figures, never test assertions).
TARGETS = {
    "planned_p50_ms": 10.0,
    "planned_p99_ms": 30.0,
    "deleted_to_startjob_p50_ms": 3.0,
    "kill9_p99_ms": 1000.0,
    "sigstop_overlaps": 0,
    "pss_mb": 30.0,
    "cpu_pct": 0.1,
}

PHASE_TITLES = (
    ("sigterm_to_reaped", "SIGTERM → old job reaped"),
    ("reaped_to_deleted", "reaped → node deleted"),
    ("deleted_to_notified", "deleted → notification read"),
    ("notified_to_watch", "notification → loop takes the watch"),
    ("watch_to_checked", "watch → confirming answer in the loop"),
    ("checked_to_startjob", "answer → StartJob"),
    ("deleted_to_startjob", "**deleted → StartJob**"),
    ("startjob_to_running", "StartJob → job's first instruction"),
)


def fmt(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results.get("summary", []) if r.get("stop_count")]


def cell(results: dict[str, Any], design: str, topology: str, n: int) -> dict[str, Any] | None:
    for r in rows(results):
        if (r["design"], r["topology"], r["n"]) == (design, topology, n):
            return r
    return None


def daemons(results: dict[str, Any]) -> dict[str, Any]:
    return (results.get("daemons") or {}).get("summary") or {}


# ------------------------------------------------------------------ sections


def planned_section(results: dict[str, Any]) -> str:
    lines = ["| where | servers | N | zkleader p50 / p99 / max, ms | kazoo recipe + job p50 / p99 / max, ms "
             "| p50 ≤ 10 | p99 ≤ 30 | p50 not above kazoo's |", "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["topology"], r["n"]) for r in rows(results)}, key=lambda k: (k[0] != "standalone", k[1]))
    for topology, n in keys:
        z = cell(results, "zkleader", topology, n)
        k = cell(results, "kazoo", topology, n)
        lines.append(_planned_row("in-process cells", topology, n, z and (z["stop_p50_ms"], z["stop_p99_ms"],
                                                                         z["stop_max_ms"], z["stop_count"]),
                                  k and (k["stop_p50_ms"], k["stop_p99_ms"], k["stop_max_ms"], k["stop_count"])))
    d = daemons(results)
    z, k = (d.get("zkleader") or {}).get("sigterm"), (d.get("kazoo") or {}).get("sigterm")
    if z or k:
        lines.append(_planned_row("real daemons (processes)", "ensemble", 3,
                                  z and (z["p50"], z["p99"], z["max"], z["count"]),
                                  k and (k["p50"], k["p99"], k["max"], k["count"])))
    return "\n".join(lines)


def _planned_row(where: str, topology: str, n: int, z: tuple | None, k: tuple | None) -> str:
    def text(v: tuple | None) -> str:
        return "–" if v is None else f"{fmt(v[0], 1)} / {fmt(v[1], 1)} / {fmt(v[2], 1)} ({v[3]})"

    p50_ok = None if z is None else z[0] <= TARGETS["planned_p50_ms"]
    p99_ok = None if z is None else z[1] <= TARGETS["planned_p99_ms"]
    vs = None if z is None or k is None else z[0] <= k[0]
    return f"| {where} | {topology} | {n} | {text(z)} | {text(k)} | {verdict(p50_ok)} | {verdict(p99_ok)} | {verdict(vs)} |"


def breakdown_section(results: dict[str, Any]) -> str:
    head = "| where | servers | N | " + " | ".join(t for _, t in PHASE_TITLES) + " | job running | relists |"
    lines = [head, "|" + "---|" * (len(PHASE_TITLES) + 5)]
    for r in rows(results):
        if r["design"] != "zkleader":
            continue
        parts = [f"{fmt(r.get(f'stop_{k}_p50_ms'), 1)} / {fmt(r.get(f'stop_{k}_p99_ms'), 1)}" for k, _ in PHASE_TITLES]
        lines.append(f"| in-process | {r['topology']} | {r['n']} | " + " | ".join(parts)
                     + f" | {fmt(r['stop_p50_ms'], 1)} / {fmt(r['stop_p99_ms'], 1)} | {r.get('stop_relisted', 0)} "
                     f"of {r['stop_count']} |")
    z = (daemons(results).get("zkleader") or {}).get("sigterm")
    if z:
        parts = [f"{fmt(z.get(f'{k}_p50'), 1)} / {fmt(z.get(f'{k}_p99'), 1)}" for k, _ in PHASE_TITLES]
        lines.append("| real daemons | ensemble | 3 | " + " | ".join(parts)
                     + f" | {fmt(z['p50'], 1)} / {fmt(z['p99'], 1)} | {z.get('relisted', 0)} of {z['count']} |")
    return "\n".join(lines)


def kazoo_breakdown_section(results: dict[str, Any]) -> str:
    titles = (("sigterm_to_reaped", "stop → old job reaped"), ("reaped_to_deleted", "reaped → node deleted"),
              ("deleted_to_notified", "deleted → notification read"), ("deleted_to_startjob",
                                                                      "deleted → leader function entered"),
              ("startjob_to_running", "leader function → job's first instruction"))
    lines = ["| where | servers | N | " + " | ".join(t for _, t in titles) + " | job running |",
             "|" + "---|" * (len(titles) + 4)]
    for r in rows(results):
        if r["design"] != "kazoo":
            continue
        parts = [f"{fmt(r.get(f'stop_{k}_p50_ms'), 1)} / {fmt(r.get(f'stop_{k}_p99_ms'), 1)}" for k, _ in titles]
        lines.append(f"| in-process | {r['topology']} | {r['n']} | " + " | ".join(parts)
                     + f" | {fmt(r['stop_p50_ms'], 1)} / {fmt(r['stop_p99_ms'], 1)} |")
    k = (daemons(results).get("kazoo") or {}).get("sigterm")
    if k:
        parts = [f"{fmt(k.get(f'{key}_p50'), 1)} / {fmt(k.get(f'{key}_p99'), 1)}" for key, _ in titles]
        lines.append("| real daemons | ensemble | 3 | " + " | ".join(parts) + f" | {fmt(k['p50'], 1)} / {fmt(k['p99'], 1)} |")
    return "\n".join(lines)


def probe_section(results: dict[str, Any]) -> str:
    probe = (results.get("daemons") or {}).get("job_probe")
    if not probe:
        return ""
    z, p = probe["zkleader"], probe["popen"]
    return ("| the job alone, no election | start: call → job's first instruction, p50 / p99 ms "
            "| stop: SIGTERM asked → exit seen, p50 / p99 ms |\n|---|---|---|\n"
            f"| zkleader's JobRunner (warm guardian) | {fmt(z['start_p50'], 2)} / {fmt(z['start_p99'], 2)} "
            f"| {fmt(z['stop_p50'], 2)} / {fmt(z['stop_p99'], 2)} |\n"
            f"| plain Popen (the kazoo design's) | {fmt(p['start_p50'], 2)} / {fmt(p['start_p99'], 2)} "
            f"| {fmt(p['stop_p50'], 2)} / {fmt(p['stop_p99'], 2)} |\n\n"
            f"The same job started and stopped {probe['trials']} times from the orchestrator, with no ZooKeeper "
            f"involved: what the job runner alone adds to a handover's two ends.")


def kill_section(results: dict[str, Any]) -> str:
    d = daemons(results)
    T = (results.get("daemons") or {}).get("session_timeout")
    lines = ["| design | trials | p50 / p99 / max, ms | old job reaped (p50), ms | session released (p50), ms "
             "| node deleted (p50), ms | target: p99 ≤ 1000 ms |", "|---|---|---|---|---|---|---|"]
    for design in ("zkleader", "kazoo"):
        e = (d.get(design) or {}).get("kill9")
        if not e or not e.get("count"):
            continue
        ok = e["p99"] <= TARGETS["kill9_p99_ms"] if design == "zkleader" else None
        lines.append(f"| {NAMES[design]} | {e['count']} | {fmt(e['p50'])} / {fmt(e['p99'])} / {fmt(e['max'])} "
                     f"| {fmt(e.get('job_reaped'))} | {fmt(e.get('session_released'))} | {fmt(e.get('node_deleted'))} "
                     f"| {verdict(ok) if design == 'zkleader' else f'(about T = {fmt(T)} s expected)'} |")
    return "\n".join(lines)


def sigstop_section(results: dict[str, Any]) -> str:
    d = daemons(results)
    lines = ["| design | trials | overlaps | old job reaped before the earliest expiry | margin min / p50, s "
             "| old job reaped (p50), s after the stop | earliest expiry (p50), s | successor's job (p50), s "
             "| overlap p50 / max, s | target: 0 overlaps |", "|---|---|---|---|---|---|---|---|---|---|"]
    for design in ("zkleader", "kazoo"):
        e = (d.get(design) or {}).get("sigstop")
        if not e or not e.get("count"):
            continue
        ok = e["overlaps"] == 0 if design == "zkleader" else None
        lines.append(f"| {NAMES[design]} | {e['count']} | {e['overlaps']} | {e['reaped_before_expiry']} of {e['count']} "
                     f"| {fmt(e.get('margin_min_s'), 2)} / {fmt(e.get('margin_p50_s'), 2)} "
                     f"| {fmt(e.get('job_reaped_p50_s'), 2)} | {fmt(e.get('earliest_expiry_p50_s'), 2)} "
                     f"| {fmt(e.get('successor_started_p50_s'), 2)} | {fmt(e.get('overlap_p50_s'), 2)} / "
                     f"{fmt(e.get('overlap_max_s'), 2)} | {verdict(ok) if design == 'zkleader' else '(overlaps expected)'} |")
    errors = ((results.get("daemons") or {}).get("sigstop") or {}).get("errors")
    if errors:
        lines.append("")
        lines.append("Failed groups: " + "; ".join(errors))
    return "\n".join(lines)


def footprint_section(results: dict[str, Any]) -> str:
    fp = (results.get("daemons") or {}).get("footprint") or []
    if not fp:
        return "Not measured."
    lines = ["| design | daemon | role | PSS daemon + guardian, MB | alone, MB | RSS, MB | USS, MB | threads "
             "| CPU daemon + guardian, % of a core | PSS ≤ 30 MB | CPU ≤ 0.1 % |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in fp:
        uss = row["daemon"]["uss_mb"] + ((row.get("guardian") or {}).get("uss_mb") or 0)
        mine = row["design"] == "zkleader"
        lines.append(f"| {NAMES[row['design']]} | {row['name']} | {row['role']} | {row['pss_mb']:.1f} "
                     f"| {fmt(row.get('alone_mb'), 1)} | {row['rss_mb']:.1f} | {uss:.1f} | {row['threads']} "
                     f"| {row['cpu_pct']:.3f} | {verdict(row['pss_mb'] <= TARGETS['pss_mb']) if mine else '–'} "
                     f"| {verdict(row['cpu_pct'] <= TARGETS['cpu_pct']) if mine and row['role'] == 'follower' else '–'} |")
    idle = fp[0].get("idle_s")
    jobs = [row["job"]["pss_mb"] for row in fp if row.get("job")]
    lines.append("")
    lines.append(f"Measured over {fmt(idle)} s idle, 3 s after the leader's job started, with both designs' daemons "
                 f"running at once (T = {fmt((results.get('daemons') or {}).get('session_timeout'))} s). The kazoo "
                 f"design has no guardian (its columns are the daemon alone). The job itself (the C marker) is "
                 f"{fmt(jobs[0] if jobs else None, 2)} MB PSS and is not counted.")
    return "\n".join(lines)


def cells_table(results: dict[str, Any]) -> str:
    head = ("| design | servers | N | planned p50 / p99 / max, ms | crash: kill → job running p50 / max, ms "
            "| notifications per change: mean (to the leaver), max | requests per change: mean, max "
            "| server-side notifications | join, s | MB / candidate | idle CPU % / candidate | overlaps | load avg (1 min) |")
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


def plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    data = rows(results)
    if not data:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    for ax, key, title, target in ((axes[0], "stop_p50_ms", "p50", TARGETS["planned_p50_ms"]),
                                   (axes[1], "stop_p99_ms", "p99", TARGETS["planned_p99_ms"])):
        for design in NAMES:
            for topology, style in (("ensemble", "-o"), ("standalone", "--s")):
                points = sorted((r["n"], r[key]) for r in data
                                if r["design"] == design and r["topology"] == topology and r.get(key) is not None)
                if points:
                    ax.plot([p[0] for p in points], [max(p[1], 0.1) for p in points], style,
                            color=COLOURS[design], label=f"{NAMES[design]}, {topology}", alpha=0.9)
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:g} ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("candidates N (log)")
        ax.set_ylabel("ms (log)")
        ax.set_title(f"Planned handover, SIGTERM -> successor's job running ({title})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "latency_vs_n.png")
    plt.close(fig)
    return ["latency_vs_n.png"]


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
    for stale in ("notifications_vs_n.png", "failover_vs_n.png", "requests_vs_n.png"):
        (out / stale).unlink(missing_ok=True)  # plots of earlier versions of this report
    pictures = plots(results, out)
    s = results["settings"]
    m = results["machine"]
    dm = results.get("daemons") or {}
    etcd_note = results.get("etcd")
    text = f"""# zkleader benchmark ({results['mode']} mode)

Generated by `scripts/bench{' ' + ' '.join(results['argv']) if results['argv'] else ''}` in {results.get('elapsed_s', 0) / 60:.1f} min.
Machine: {m['cores']} cores ({m['cpu']}), {m['memory_mb'] // 1024} GB, Linux {m['kernel']}, Python {m['python']},
kazoo {m.get('kazoo', '2.11')}, ZooKeeper 3.8 (Debian) on {m['java']}, etcd: {etcd_note or 'not run'}. Everything on
127.0.0.1. zkleader code: {m.get('code', '?')}. Load average when the run started: {m.get('load_at_start', '?')}; at
the end: {m.get('load_at_end', '?')} (the machine is shared with other work: figures are from a busy 2-core box).

The job: {s.get('job', '?')}. It records its start time (CLOCK_MONOTONIC, shared by every process) as its first
instruction, then takes the overlap detector's flock. **kazoo recipe + job** is kazoo's `Election` with the job
started the way a careful kazoo user starts it: a plain `subprocess.Popen` from the leader function, stopped
(SIGTERM, SIGKILL after `stop_timeout`) on the stop request, SUSPENDED or LOST (`bench/kazoo_design.py`). It does not
use zkleader's guardian: with the warm guardian that would hand kazoo zkleader's start-up path.

Settings: in-process cells: session timeout {s['session_timeout']:g} s, tickTime {s['tick_ms']} ms,
job.stop_timeout {s['stop_timeout']:g} s, {s['handovers']} planned handovers per cell, {s['crashes']} crash failovers
per cell. Real daemons: session timeout T = {fmt(s.get('real_session_timeout'))} s (zkleader's default), 3 daemons per
group on the 3-node ensemble, {s.get('real_handovers')} SIGTERM handovers per design, kill -9 trials
{s.get('kill_trials')}, SIGSTOP trials {s.get('stop_trials')} (in {s.get('stop_groups')} parallel groups),
footprint over {fmt(s.get('daemon_idle_s'))} s idle.

{reruns(results)}## 1. Planned handover: SIGTERM to the leader -> the successor's job running

Targets: p50 ≤ 10 ms and p99 ≤ 30 ms at N = 3 and N = 100, standalone and ensemble; p50 never above the kazoo
recipe + job's in the same run. Counts in brackets; p99 is nearest-rank (of 20 samples: the largest).

{planned_section(results)}

## 2. Where zkleader's handover goes (p50 / p99 per phase, ms)

Each phase is computed per handover between two time stamps, then p50 / p99 over the handovers (so the phases
need not add up to the total). The leader's daemon: SIGTERM, its job reaped (the guardian's report taken by the
loop), its delete answered. "Node deleted" is the first moment either side knew: the leaver's delete answered or the
successor's connection thread reading the notification. The successor's daemon: the notification read off the
socket (kazoo's connection thread), the loop taking the WatchFired, the loop taking the answer of the confirming
sync + exists (after a new listing of the queue when it relists), StartJob leaving the core (the tap's observer),
the job's first instruction. Target: **deleted → StartJob p50 ≤ 3 ms**. "relists": handovers in which the successor
listed the queue again after the watch rather than confirming at once (its listing, from when it joined, still had
someone below its predecessor); since the core pipelines the confirming sync + exists behind that listing, both are
answered in one round trip.

{breakdown_section(results)}

The kazoo recipe + job, the same way:

{kazoo_breakdown_section(results)}

{probe_section(results)}

## 3. kill -9 of the leader's daemon on a healthy host (real daemons, T = {fmt(dm.get('session_timeout'))} s)

The daemon alone is killed; zkleader's guardian sees its lifeline close, reaps the job and releases the session
(`zkleader.release`). The kazoo design's Popen'd job would survive its parent, so it is killed right after the daemon,
as systemd's KillMode would do; its successor waits for the session to expire. Milestones after the kill.

{kill_section(results)}

## 4. SIGSTOP of the leader's daemon alone for 2T, no watchdog (real daemons)

Earliest expiry: the daemon's last packet before the stop (`ss` lastsnd on its ZooKeeper socket) + T; ZooKeeper
cannot expire the session sooner. Margin: earliest expiry − the old job's death (pidfd). An overlap: the successor's
job started before the old job died (the flock detector agrees). zkleader's guardian holds the lease and stops the job
itself; the kazoo design's job runs on until the daemon is continued after 2T and sees LOST.

{sigstop_section(results)}

## 5. Idle footprint (real daemons)

Targets for a zkleader follower: daemon + guardian PSS ≤ 30 MB, CPU ≤ 0.1 % of a core. PSS splits shared pages
among all processes mapping them, so it shrinks as more Python processes run; "alone" counts the distinct pages of
daemon + guardian (`/proc/PID/pagemap`): their PSS on a host where nothing else maps them.

{footprint_section(results)}

## 6. Every in-process cell

| | |
|---|---|
| Planned | the leader gets the in-process SIGTERM (`ShutdownRequested`; kazoo: the stop request) -> the successor's job runs |
| Crash | in-process kill -9: the session's socket is cut without a CloseSession; zkleader's guardian sees its lifeline close, reaps the job and releases the session; the others' job is killed (systemd's KillMode) and the session expires |
| Workers | at least 3 worker processes, candidates dealt round-robin, so a leader and its successor sit in different processes |

{cells_table(results)}

{chr(10).join(f'![{p}]({p})' for p in pictures)}

{control_section(results)}## Notes

- Every in-process candidate has its own session and runs the real code: zkleader's candidates are the daemon's own
  loop (`zkleader.daemon.Daemon` with `Leadership`, `ZooKeeperShell`, `JobRunner` and a warm guardian each, tapped
  through the loop's observer); many share a worker process. Real daemons are `python -m zkleader run` (the footprint)
  and `python -m bench.tapped run` (the trials: `zkleader run` with the same observer on its loop).
- Milestones are time-stamped in memory where they happen and written out after the handover, so no pipe write sits on
  its critical path.
- "MB / candidate" of the in-process cells is the worker processes' RSS growth per candidate and does not include
  zkleader's guardians (separate processes); section 5 has the real figures.
"""
    (out / "bench.md").write_text(text)


def control_section(results: dict[str, Any]) -> str:
    """`zkleader resign --to` against a plain resign, real daemons (bench/control.py)."""
    c = results.get("control")
    if not c:
        return ""
    to, nxt = c["resign_to_last_ms"], c["resign_next_ms"]
    return f"""## 7. Handover to a named candidate (real daemons, {c['n']} in the queue, {c['trials']} trials each)

From the request (the handover marker created / SIGUSR1 sent) to the new leader's job running, ms:

| | p50 | p99 | max |
|---|---|---|---|
| `resign --to` the last of {c['n']} (the {c['n'] - 2} nodes between deleted, rejoining at the back) | {fmt(to['p50'], 1)} | {fmt(to['p99'], 1)} | {fmt(to['max'], 1)} |
| `resign` to the next in line | {fmt(nxt['p50'], 1)} | {fmt(nxt['p99'], 1)} | {fmt(nxt['max'], 1)} |

Overlaps: {c['overlaps']}. Both include the old job's stop (the detector job exits on SIGTERM at once).

"""


def console_table(results: dict[str, Any]) -> str:
    lines = [f"{'design':28} {'servers':10} {'N':>5} {'p50':>7} {'p99':>7} {'max':>7} {'del->SJ':>8} {'relist':>6} "
             f"{'ovl':>4}"]
    for r in results.get("summary", []):
        lines.append(f"{NAMES[r['design']]:28} {r['topology']:10} {r['n']:>5} {fmt(r.get('stop_p50_ms'), 1):>7} "
                     f"{fmt(r.get('stop_p99_ms'), 1):>7} {fmt(r.get('stop_max_ms'), 1):>7} "
                     f"{fmt(r.get('stop_deleted_to_startjob_p50_ms'), 1):>8} {r.get('stop_relisted', 0)!s:>6} "
                     f"{r.get('overlaps')!s:>4}" + (f"  {r['error']}" if r.get("error") else ""))
    for design, e in daemons(results).items():
        if "sigterm" in e:
            t = e["sigterm"]
            lines.append(f"{NAMES[design] + ' (processes)':28} {'ensemble':10} {3:>5} {fmt(t['p50'], 1):>7} "
                         f"{fmt(t['p99'], 1):>7} {fmt(t['max'], 1):>7} {fmt(t.get('deleted_to_startjob_p50'), 1):>8}")
        if "kill9" in e:
            k = e["kill9"]
            lines.append(f"  kill -9: p50 {fmt(k['p50'])} / p99 {fmt(k['p99'])} ms over {k['count']}")
        if "sigstop" in e:
            st = e["sigstop"]
            lines.append(f"  SIGSTOP 2T: {st['overlaps']} overlaps in {st['count']}, reaped before the earliest expiry "
                         f"{st['reaped_before_expiry']} of {st['count']}")
    c = results.get("control")
    if c:
        lines.append(f"  resign --to the last of {c['n']}: p50 {fmt(c['resign_to_last_ms']['p50'], 1)} ms; resign to the "
                     f"next: p50 {fmt(c['resign_next_ms']['p50'], 1)} ms; overlaps {c['overlaps']}")
    for row in (results.get("daemons") or {}).get("footprint") or []:
        lines.append(f"  footprint {row['design']} {row['role']}: PSS {row['pss_mb']:.1f} MB (alone "
                     f"{fmt(row.get('alone_mb'), 1)}), CPU {row['cpu_pct']:.3f} %")
    return "\n".join(lines)


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "results/bench.json")
    loaded = json.loads(path.read_text())
    from . import processes
    from .run import summarise

    loaded["summary"] = [summarise(cell) for cell in loaded["cells"]]
    if loaded.get("daemons"):
        loaded["daemons"]["summary"] = processes.summary(loaded["daemons"])
    write(loaded, path.parent)
    print(console_table(loaded))
