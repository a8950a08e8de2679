"""What a bootstrap run reports: each node's log tail, a table, a JSON summary.

The table has a row per node: user, result, duration, how many steps changed,
were ok, skipped or failed, and the slowest step with its time (as the node
measured it). ``<log_dir>/bootstrap.json`` holds the same for scripts, every
step with its status, detail and seconds.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .localfiles import write_atomic
from .report import columns


@dataclass
class NodeRun:
    steps: list  # [(name, status, detail)]
    times: dict = field(default_factory=dict)  # {name: seconds}
    seconds: float = 0.0  # the whole script, as the laptop saw it
    log_path: Path = None
    exited: int = None


def show_logs(session, results, tail):
    """Each node's last ``tail`` lines (a failed node's error lines from earlier too)."""
    for node in session.scoped:
        run = results.get(node.alias)
        if run is None or (not tail and run.exited == 0):  # --tail 0: nothing for a node that succeeded
            continue
        lines = run.log_path.read_text(errors="replace").splitlines()
        print(f"\n=== {node.alias} ({node.address}): last {min(tail, len(lines))} of {len(lines)} lines, {run.log_path}")
        shown = lines[-tail:] if tail else []
        if run.exited != 0:  # errors always shown, even above the tail
            early = [ln for ln in lines[: len(lines) - len(shown)] if re.search(r"error|fail|fatal", ln, re.I)]
            if early:
                print("--- errors earlier in the log:")
                print("\n".join(early))
        print("\n".join(shown))


def slowest(run):
    if not run.times:
        return ""
    name = max(run.times, key=run.times.get)
    return f"{name} {run.times[name]:.1f}s"


def show_table(session, results):
    rows = [("node", "user", "result", "duration", "changed", "ok", "skipped", "failed", "slowest step")]
    for node in session.scoped:
        run = results.get(node.alias, NodeRun([]))
        counts = [sum(1 for _, s, _ in run.steps if s == k) for k in ("changed", "ok", "skipped", "failed")]
        result = f"FAILED ({session.failed[node.alias][0]})" if node.alias in session.failed else "ok"
        rows.append((node.alias, node.user or "?", result, f"{run.seconds:.1f}s", *map(str, counts), slowest(run)))
    print()
    print("\n".join(columns(rows)))


def write_summary(session, results, path):
    """The run as JSON beside the logs (0600), for scripts and the benchmark."""
    nodes = {}
    for node in session.scoped:
        run = results.get(node.alias, NodeRun([]))
        failed = session.failed.get(node.alias)
        nodes[node.alias] = {
            "public": node.public, "private": node.private, "user": node.user,
            "result": f"failed in {failed[0]}: {failed[1]}" if failed else "ok",
            "seconds": round(run.seconds, 2),
            "script_seconds": round(sum(run.times.values()), 2),
            "steps": [{"name": n, "status": s, "detail": d, "seconds": run.times.get(n)} for n, s, d in run.steps],
        }
    write_atomic(path, json.dumps({"ok": not session.failed, "nodes": nodes}, indent=2) + "\n", mode=0o600,
                 backup=False)
