"""The overlap figure (issue 22): what three independent steps, each 8 s slower, cost a node.

    uv run python bench/overlap.py [--runs K] [--old DIR]

On one fresh sandbox node at a time, ``fab -H ... setup --tail 0`` with the
forge's config as it is (delay 0), and with three independent steps each made
8 s slower by configuration alone: ``installers.uv`` and
``installers.chezmoi`` start with ``sleep 8;`` (the python step, after
workspace; the dotfiles step) and a tool ``slow`` whose install is
``sleep 8; touch ~/.slow`` (the tools step). The goal: the delay costs the
node at most 12 s (run one after another, the steps cost 24 s).

The node's time is its script's wall time as the laptop saw it (``seconds`` in
bootstrap.json; ``script_seconds`` there is the sum of the step times, not a
wall time). Each pair also runs against ``--old DIR``, a checkout of the code
before the graph (its node script ran the steps one after another), made with

    git worktree add /tmp/bench-old 73842aa && (cd /tmp/bench-old && uv sync --locked)

K runs of each (code, delay), interleaved (each delayed run right after its
undelayed one); the median counts. Prints a table: code, node and setup
seconds with delay 0 and with 3 x 8 s, the difference of the medians and the
median of each pair's difference (steadier on a machine others load too).
Both venvs are byte-compiled first. A script, not a test (root: the sandbox).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import FAB, ROOT, Sandbox, compiled, laptop, new_key, timed  # noqa: E402

DELAY = 8
SLOW_TOOL = {"name": "slow", "check": "test -e ~/.slow", "install": f"sleep {DELAY}; touch ~/.slow"}


def delayed(config):
    """``config`` with the python, dotfiles and tools steps each ``DELAY`` seconds slower."""
    installers = dict(config["installers"])
    for name in ("uv", "chezmoi"):
        installers[name] = f"sleep {DELAY}; {installers[name]}"
    return {**config, "installers": installers, "tools": [*config.get("tools", []), SLOW_TOOL]}


def once(code, delay, key):
    """One setup of one fresh node with ``code``'s fab: its times and step times."""
    sb = Sandbox("mnbench")
    home = None
    try:
        sb.up(["ubuntu"], Path(f"{key}.pub").read_text(), log=lambda *_: None)
        config = sb.forge.config()
        home, env = laptop(key, delayed(config) if delay else config)
        load = os.getloadavg()[0]
        fab = str(code / ".venv/bin/fab") if code != ROOT else FAB
        name = f"overlap-{code.name}-{delay}"
        wall, _, rc, cpu = timed(sb, env, name, "-H", sb.hosts, "setup", "--tail", "0", fab=fab, cwd=code)
        node = next(iter(json.loads((home / "logs/bootstrap.json").read_text())["nodes"].values()))
        return {"setup": wall, "node": node["seconds"], "rc": rc, "load": load, "fab_cpu": cpu,
                "steps": {s["name"]: s["seconds"] or 0.0 for s in node["steps"]}, "result": node["result"]}
    finally:
        sb.down()
        if home:
            shutil.rmtree(home, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (code, delay): the median counts")
    parser.add_argument("--old", default="/tmp/bench-old", help="a checkout of the code before the graph")
    args = parser.parse_args()
    codes = {"graph (this checkout)": ROOT}
    old = Path(args.old)
    if (old / ".venv/bin/fab").exists():
        codes[f"serial ({old})"] = old
    else:
        print(f"no {old}/.venv/bin/fab: the code before the graph is left out (see this script's docstring)",
              file=sys.stderr)
    for code in codes.values():
        compiled(code)  # as an installed fab is after its first run
    key = new_key()
    runs = {(label, delay): [] for label in codes for delay in (0, DELAY)}
    try:
        for i in range(args.runs):
            for label, code in codes.items():
                for delay in (0, DELAY):
                    r = once(code, delay, key)
                    runs[label, delay].append(r)
                    steps = ", ".join(f"{n} {s:.1f}" for n, s in sorted(r["steps"].items(), key=lambda kv: -kv[1])
                                      if s >= 0.05)
                    print(f"run {i + 1} {label}, delay {f'3x{DELAY}s' if delay else 0}: setup {r['setup']:.1f}s "
                          f"(exit {r['rc']}, {r['result']}), node {r['node']:.1f}s, fab CPU {r['fab_cpu']:.1f}s, "
                          f"load {r['load']:.2f}; steps: {steps}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(key.parent, ignore_errors=True)

    def med(label, delay, what):
        return statistics.median(r[what] for r in runs[label, delay])

    def paired(label, what):  # each run's delayed setup against the undelayed one just before it
        return statistics.median(b[what] - a[what] for a, b in zip(runs[label, 0], runs[label, DELAY]))

    loads = [r["load"] for v in runs.values() for r in v]
    print(f"One node; median of {args.runs} runs each; node = its script's wall time (bootstrap.json `seconds`), "
          f"setup = `fab -H ... setup --tail 0`'s wall time; load average {min(loads):.1f} to {max(loads):.1f} "
          f"on {os.cpu_count()} cores. Goal: difference <= 12 s.")
    print(f"| code | delay 0: node / setup (s) | 3 x {DELAY} s: node / setup (s) | difference of the medians: "
          "node / setup (s) | median of the paired differences: node / setup (s) |")
    print("|---|---|---|---|---|")
    for label in codes:
        base = [med(label, 0, w) for w in ("node", "setup")]
        slow = [med(label, DELAY, w) for w in ("node", "setup")]
        print(f"| {label} | {base[0]:.1f} / {base[1]:.1f} | {slow[0]:.1f} / {slow[1]:.1f} "
              f"| {slow[0] - base[0]:.1f} / {slow[1] - base[1]:.1f} "
              f"| {paired(label, 'node'):.1f} / {paired(label, 'setup'):.1f} |")
    print()
    print("Step times (s, median) with the delay: " + "; ".join(
        f"{label}: " + ", ".join(f"{n} {statistics.median(r['steps'].get(n, 0.0) for r in runs[label, DELAY]):.1f}"
                                 for n in ("workspace", "python", "dotfiles", "tools", "docker"))
        for label in codes) + "; without: " + "; ".join(
        f"{label}: python {statistics.median(r['steps'].get('python', 0.0) for r in runs[label, 0]):.1f}"
        for label in codes))


if __name__ == "__main__":
    main()
