"""Benchmark: how long `fab launch` takes to have every rank running, beside one round trip (root).

    uv run python bench/launch.py [N ...]        # default: 16

For each N: bring up N fresh sandbox nodes (and the forge), set them up light
(no workspace venv, Ray or dotfiles: what a job needs of them is the cluster
key, the head's worker aliases and nccl.env), then, five times each (the
median counts):

- one round trip: ``fab exec true`` (the same fab start, login to every node
  and one command on each);
- ``fab launch`` of a job whose every rank writes the time it started
  (``$EPOCHREALTIME``) and sleeps: from the moment fab is started to the
  last rank's start (read from the nodes' files: one clock, one machine), and
  until fab returned (it also starts the head's watchdog);
- ``fab stop`` of that job (every rank gone, on every node).

Also: the SSH logins each node's sshd accepted from the laptop for one
launch. A script, not a test; each fab run's output is kept in
``$TMPDIR/multinode-bench/``.
"""

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import LIGHT, logins, timed  # noqa: E402
from multinode.sandbox import Sandbox  # noqa: E402

RUNS = 5


def started_times(sb, name):
    """Each node's rank's start, as it wrote it (None where it has not yet)."""
    found = []
    for node in sb.nodes:
        path = Path(node["root"]) / f"tmp/started-{name}"
        found.append(float(path.read_text()) if path.exists() and path.read_text().strip() else None)
    return found


def measure(n, key):
    sb = Sandbox("mnjobs3")
    home = Path(tempfile.mkdtemp(prefix="bench-launch-home-"))
    try:
        (home / ".ssh").mkdir(mode=0o700)
        shutil.copy(key, home / ".ssh/id_ed25519")
        shutil.copy(f"{key}.pub", home / ".ssh/id_ed25519.pub")
        sb.up(["ubuntu"] * n, Path(f"{key}.pub").read_text(), log=lambda *_: None)
        config = {**sb.forge.config(), "log_dir": str(home / "logs"), **LIGHT}
        (home / ".fabric.yaml").write_text(json.dumps({"multinode": config}))
        env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
        setup = timed(sb, env, f"launch-setup-{n}", "-H", sb.hosts, "hostkeys", "detect-user", "bootstrap",
                      "--tail", "0", "head-ssh")
        if setup[2]:
            raise SystemExit(f"N={n}: setup failed (exit {setup[2]})")
        trips, launches, returns, stops, logged = [], [], [], [], []
        for run in range(RUNS):
            trips.append(timed(sb, env, f"exec-{n}-{run}", "exec", "true")[0])
            name, before = f"bench{run}", logins(sb)
            begun = time.time()
            seconds, _, code, _ = timed(sb, env, f"launch-{n}-{run}", "launch", "--name", name,
                                        f"echo $EPOCHREALTIME >/tmp/started-{name}; exec sleep 600")
            if code:
                raise SystemExit(f"N={n}: launch failed (exit {code})")
            logged.append(sorted({b - a for a, b in zip(before, logins(sb))}))
            while None in started_times(sb, name):  # fab returned once each rank ran: this is at once
                time.sleep(0.01)
            launches.append(max(started_times(sb, name)) - begun)
            returns.append(seconds)
            stopped = timed(sb, env, f"stop-{n}-{run}", "stop", name)
            if stopped[2]:
                raise SystemExit(f"N={n}: stop failed (exit {stopped[2]})")
            stops.append(stopped[0])
        return {"n": n, "trip": statistics.median(trips), "running": statistics.median(launches),
                "returned": statistics.median(returns), "stop": statistics.median(stops),
                "runs": launches, "trips": trips, "logins": sorted({x for each in logged for x in each})}
    finally:
        sb.down()
        shutil.rmtree(home, ignore_errors=True)


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [16]
    keydir = Path(tempfile.mkdtemp(prefix="bench-key-"))
    key = keydir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    results = []
    try:
        for n in sizes:
            results.append(measure(n, key))
            r = results[-1]
            print(f"N={n}: every rank running after {' '.join(f'{s:.2f}' for s in r['runs'])} s; "
                  f"round trips {' '.join(f'{s:.2f}' for s in r['trips'])} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(keydir, ignore_errors=True)
    print("| N | one round trip: `fab exec true` (s) | `fab launch` to every rank running (s) | minus the round trip "
          "(s) | `fab launch` returned (s) | `fab stop` (s) | logins per node per launch |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['n']} | {r['trip']:.2f} | {r['running']:.2f} | {r['running'] - r['trip']:+.2f} | "
              f"{r['returned']:.2f} | {r['stop']:.2f} | {'/'.join(map(str, r['logins']))} |")


if __name__ == "__main__":
    main()
