"""Benchmark: setup and verify on N sandbox nodes, for N = 1, 4, 8, 16 (root).

    uv run python bench/run.py [--light] [N ...]

Besides the table of times, for each N: the orchestration overhead (setup's
wall time minus the slowest node's own script time, as that node measured
it) and the step times summed over the nodes (from bootstrap.json).

For each N: bring up N fresh sandbox nodes (and the forge), time
``fab -H ... setup`` and then ``fab verify`` (five times, the median) from the laptop namespace, count
the SSH logins each node's sshd accepted from the laptop (its -e log), and
read the fab process's peak memory (wait4's ru_maxrss), and the CPU time the
nodes themselves used (the sandbox puts each node in a cgroup). Prints the wall
times, their ratio to N = 1, logins per node, peak memory, the CPU seconds of
the nodes and of fab, and how busy that kept the machine's cores: a setup
whose nodes need more CPU than the machine has cannot be faster than
(nodes' CPU + fab's CPU) / cores, whatever the tool does. A script, not a test.

``--light`` leaves out the CPU-heavy work done on the nodes themselves (the
workspace venv with Ray, Ray, dotfiles): on one 2-core machine, N sandbox
nodes share those 2 cores, which real nodes do not; what remains is
multinode's own fan-out.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multinode.sandbox import Sandbox  # noqa: E402
from multinode.sandbox.cluster import LAPTOP_IP  # noqa: E402

FAB = str(Path(sys.executable).parent / "fab")


def logins(sb):
    pattern = rf"Accepted publickey for \S+ from {re.escape(LAPTOP_IP)} "
    return [len(re.findall(pattern, sb.sshd_log(n))) for n in range(len(sb.nodes))]


def nodes_cpu(sb):
    return sum(sb.cpu_seconds(n) or 0.0 for n in range(len(sb.nodes)))


LOGS = Path(tempfile.gettempdir()) / "multinode-bench"


def timed(sb, env, name, *args, fab=FAB, cwd=ROOT, argv=None, stdout=None):
    """Run fab in the laptop namespace: (seconds, peak RSS MiB, exit code, CPU seconds).

    Its output goes to ``LOGS/<name>.log`` (stdout to ``stdout`` when given), named on
    stderr when fab failed. ``fab`` and ``cwd``: another checkout's; ``argv``: another
    command than fab (its CPU seconds count its children's it waited for).
    """
    LOGS.mkdir(exist_ok=True)
    log = LOGS / f"{name}.log"
    argv = argv or [fab, *args]
    start = time.monotonic()
    with open(log, "w") as out, open(stdout, "w") if stdout else nullcontext(out) as std:
        proc = subprocess.Popen(sb.laptop_cmd(*argv, env=env), cwd=cwd, stdout=std, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"{' '.join(map(str, argv[:1] + argv[-3:]))} exited {code}: see {log}", file=sys.stderr)
    return time.monotonic() - start, usage.ru_maxrss / 1024, code, usage.ru_utime + usage.ru_stime


def laptop(key, config):
    """A laptop home with ``key`` and ``config`` (multinode settings): (home, env for fab)."""
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    (home / ".ssh").mkdir(mode=0o700)
    shutil.copy(key, home / ".ssh/id_ed25519")
    shutil.copy(f"{key}.pub", home / ".ssh/id_ed25519.pub")
    (home / ".fabric.yaml").write_text(json.dumps({"multinode": {**config, "log_dir": str(home / "logs")}}))
    return home, {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


def compiled(code=ROOT):
    """Byte-compile ``code``'s venv and package, as an installed fab has them after its first
    run: with PYTHONDONTWRITEBYTECODE set and no .pyc, every fab compiles paramiko, invoke and
    the rest anew (0.6 s of CPU instead of 0.2 s at each start, measured)."""
    venv = Path(code) / ".venv"
    subprocess.run([str(venv / "bin/python"), "-m", "compileall", "-q", "-j", "0", *map(str, venv.glob("lib/python3*/site-packages")),
                    str(Path(code) / "multinode")], check=True, stdout=subprocess.DEVNULL)


def new_key():
    """A fresh laptop key pair in a directory of its own: the private key's path."""
    key = Path(tempfile.mkdtemp(prefix="bench-key-")) / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


VERIFY_RUNS = 5
LIGHT = {"repo": {"url": ""}, "dotfiles": {"repo": ""}, "ray": {"enabled": False}}


def measure(n, key, light=False):
    sb = Sandbox("mnbench")
    home = None
    try:
        sb.up(["ubuntu"] * n, Path(f"{key}.pub").read_text(), log=lambda *_: None)
        home, env = laptop(key, {**sb.forge.config(), **(LIGHT if light else {})})
        idle = nodes_cpu(sb)
        setup_s, setup_mb, setup_rc, setup_cpu = timed(sb, env, f"setup-{n}", "-H", sb.hosts, "setup", "--tail", "0")
        after_setup, setup_nodes_cpu = logins(sb), nodes_cpu(sb) - idle
        # verify five times (the median counts): one run on a machine this busy is noise.
        runs = [timed(sb, env, f"verify-{n}", "verify") for _ in range(VERIFY_RUNS)]
        verify_s = sorted(r[0] for r in runs)[VERIFY_RUNS // 2]
        verify_mb, verify_rc = max(r[1] for r in runs), max(r[2] for r in runs)
        after_verify = [setup + (later - setup) // VERIFY_RUNS for setup, later in zip(after_setup, logins(sb))]
        summary = json.loads((home / "logs/bootstrap.json").read_text())["nodes"]
        steps = {}
        for node in summary.values():
            for step in node["steps"]:
                steps[step["name"]] = steps.get(step["name"], 0.0) + (step["seconds"] or 0.0)
        # The node's wall time (as the laptop saw it): its steps run as a graph, so
        # script_seconds (their sum) is no longer how long the script took.
        slowest = max(node["seconds"] for node in summary.values())
        return {
            "overhead_s": setup_s - slowest, "slowest_script_s": slowest, "step_sums": steps,
            "n": n, "setup_s": setup_s, "setup_rc": setup_rc, "verify_s": verify_s, "verify_rc": verify_rc,
            "verify_runs": [r[0] for r in runs],
            "setup_logins": sorted(set(after_setup)),
            "verify_logins": sorted({b - a for a, b in zip(after_setup, after_verify)}),
            "peak_mb": max(setup_mb, verify_mb), "setup_cpu": setup_cpu, "nodes_cpu": setup_nodes_cpu,
        }
    finally:
        sb.down()
        if home:
            shutil.rmtree(home, ignore_errors=True)


def main():
    light = "--light" in sys.argv
    sizes = [int(a) for a in sys.argv[1:] if a != "--light"] or [1, 4, 8, 16]
    key = new_key()
    results = []
    for n in sizes:
        results.append(measure(n, key, light))
        r = results[-1]
        print(f"N={n}: setup {r['setup_s']:.1f}s (exit {r['setup_rc']}), verify {r['verify_s']:.2f}s "
              f"(exit {r['verify_rc']}; runs {' '.join(f'{s:.2f}' for s in r['verify_runs'])})", file=sys.stderr, flush=True)
    base = results[0]
    cores = os.cpu_count()
    print(f"| N | setup (s) | x N={base['n']} | CPU in setup (s): nodes / fab | cores busy | verify (s) "
          f"| x N={base['n']} | logins per node: setup / verify | fab peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        busy = (r["nodes_cpu"] + r["setup_cpu"]) / (r["setup_s"] * cores)
        print(f"| {r['n']} | {r['setup_s']:.1f} | {r['setup_s'] / base['setup_s']:.2f} "
              f"| {r['nodes_cpu']:.1f} / {r['setup_cpu']:.1f} | {busy:.0%} of {cores} | {r['verify_s']:.2f} "
              f"| {r['verify_s'] / base['verify_s']:.2f} | {'/'.join(map(str, r['setup_logins']))} / "
              f"{'/'.join(map(str, r['verify_logins']))} | {r['peak_mb']:.0f} |")
    print()
    print("| N | slowest node script (s) | orchestration overhead (s) | step times summed over nodes (s) |")
    print("|---|---|---|---|")
    for r in results:
        top = sorted(r["step_sums"].items(), key=lambda kv: -kv[1])
        print(f"| {r['n']} | {r['slowest_script_s']:.1f} | {r['overhead_s']:.1f} | "
              + ", ".join(f"{name} {seconds:.1f}" for name, seconds in top if seconds >= 0.05) + " |")
    shutil.rmtree(key.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
