"""The churn figure (issue 24): what ``fab replace`` costs, beside a full setup of the cluster.

    uv run python bench/churn.py [--nodes N] [--runs K]

On a fresh sandbox of N + K machines: ``fab -H <N machines> setup --tail 0``
(the whole cluster, the baseline a user had before `replace`), then K times
``fab replace rental1 <a fresh machine> --yes`` (the machine behind rental1
swapped for one never set up: its full bootstrap, Ray joining, the others'
``from=`` and ``/etc/hosts``, the head's alias and pane, the old machine wiped
and proven clean), then ``fab setup`` of the same cluster again (every node
already set up: what a rerun of setup costs, the other way to redo one node
before `replace`). Wall seconds from the laptop namespace, and the SSH logins
each machine accepted from the laptop during a replace. Prints a table. A
script, not a test (root: the sandbox).
"""

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Sandbox, compiled, laptop, logins, new_key, timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="the cluster's size (default 4)")
    parser.add_argument("--runs", type=int, default=2, help="replaces, each by a fresh machine (default 2)")
    args = parser.parse_args()
    compiled()
    key = new_key()
    sb = Sandbox("mnbench")
    try:
        sb.up(["ubuntu"] * (args.nodes + args.runs), Path(f"{key}.pub").read_text(), log=lambda *_: None)
        home, env = laptop(key, sb.forge.config())
        spec = lambda m: f"{sb.nodes[m]['public']}:{sb.nodes[m]['private']}"  # noqa: E731
        hosts = ",".join(spec(m) for m in range(args.nodes))
        first, _, code, _ = timed(sb, env, "churn-setup", "-H", hosts, "setup", "--tail", "0")
        if code:
            sys.exit(f"setup failed (exit {code})")
        replaces = []
        for run in range(args.runs):
            before = logins(sb)
            seconds, _, code, _ = timed(sb, env, f"churn-replace-{run}", "replace", "rental1",
                                        spec(args.nodes + run), "--yes")
            if code:
                sys.exit(f"replace failed (exit {code})")
            replaces.append((seconds, [a - b for a, b in zip(logins(sb), before)]))
        again, _, code, _ = timed(sb, env, "churn-setup-again", "setup", "--tail", "0")
    finally:
        sb.down()
    median = statistics.median(seconds for seconds, _ in replaces)
    print(f"cluster of {args.nodes} nodes, {args.runs} replace(s) of rental1 by a fresh machine")
    lines = [("setup of the cluster (fresh machines)", f"{first:6.1f} s")]
    lines += [(f"replace #{run + 1}", f"{seconds:6.1f} s   logins per machine {counts}")
              for run, (seconds, counts) in enumerate(replaces)]
    lines += [("replace, median", f"{median:6.1f} s   ({median / first:.0%} of the setup)"),
              ("setup again (every node set up already)", f"{again:6.1f} s   (exit {code})")]
    for what, figure in lines:
        print(f"  {what:<40} {figure}")

if __name__ == "__main__":
    main()
