"""The verify ratios (issue 22): ``fab verify`` against plain OpenSSH fan-outs, at N = 1, 8, 16.

    uv run python bench/verify.py [--full] [--runs K] [--also DIR] [--no-compile] [N ...]

For each N: N fresh sandbox nodes, ``fab -H ... setup --tail 0`` from the
laptop namespace (run.py's LIGHT config: no workspace venv, no Ray, no
dotfiles; ``--full``: the forge's whole config), then K rounds (default 5) of,
one after another (a b c b' c' a b c b' c' ...):

  (a) ``fab verify --json``;
  (b) the plain OpenSSH fan-out of ``true``: ``ssh rentalI true &`` for every
      node, then ``wait`` (the laptop's ~/.ssh/config and known_hosts, BatchMode);
  (c) the same fan-out running multinode's own checklist of each node:
      ``ssh rentalI 'bash -s' < verify_I.sh``, each script rendered once before
      timing by multinode.checks.verify_script with the same options;
  (b') and (c'): (b) and (c) with fab's key exchange (curve25519-sha256) instead
      of OpenSSH 9's default (sntrup761x25519, about 14 times the client's CPU).

Each run's wall time, its laptop CPU (wait4's rusage: fab, or bash with its
ssh clients) and the nodes' CPU (their cgroups; sshd and all it starts), and
the 1-minute load average before it (which counts the benchmark's own runs
just before: 16 nodes' checklists lift it too). From (a)'s JSON: each node's
login (``connect_seconds``) and its checklist's round trip (``seconds``). Prints
the medians, fab verify / (c) (goal <= 1.0) and fab verify / (b) (goal <= 1.3),
and the phases. ``--also DIR``: another checkout's ``fab verify --json`` too, as
(a2), in the same rounds (an experiment beside this code). Before timing, the
venvs are byte-compiled, as an installed fab's are after its first run
(``--no-compile``: not; with PYTHONDONTWRITEBYTECODE set, each fab start then
compiles its imports anew). A script, not a test (root: the sandbox).
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multinode import protocol  # noqa: E402
from run import LIGHT, LOGS, ROOT, Sandbox, compiled, laptop, new_key, nodes_cpu, timed  # noqa: E402

SSH = 'ssh -F "$HOME/.ssh/config" -o UserKnownHostsFile="$HOME/.ssh/known_hosts" -o BatchMode=yes'
# paramiko's (fab's) key exchange: OpenSSH 9's default, sntrup761x25519, costs its client
# about 0.14 s of CPU per connection on this machine, curve25519 about 0.01 s.
KEX = "-o KexAlgorithms=curve25519-sha256"
# The timed kinds: (a) fab verify, (b) ssh true, (c) ssh checklist; b2, c2 with fab's key exchange.
NAMES = {"a": "(a) fab verify", "b": "(b) ssh true", "c": "(c) ssh checklist", "b2": "(b') ssh true, curve25519",
         "c2": "(c') ssh checklist, curve25519", "a2": "(a2) fab verify of --also"}


def fan_out(aliases, remote, stdin=None, out=None, options=""):
    """bash that runs ``ssh ALIAS REMOTE`` on every alias at once and waits for all (exit 1 if one failed).

    ``stdin``, ``out``: per-alias file patterns (``{i}``: the node's number); ``options``: more ssh options."""
    lines = ["pids=()"]
    for i, alias in enumerate(aliases):
        redirect = (f" <{stdin.format(i=i)}" if stdin else " </dev/null") + (f" >{out.format(i=i)}" if out else "")
        lines.append(f"{SSH} {options} {alias} {remote}{redirect} & pids+=($!)")
    lines.append('rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; exit $rc')
    return "\n".join(lines)


def checklists(home, dest):
    """Render every node's checklist as fab verify would (the laptop's config and remembered
    cluster): {alias: path}. Reads the laptop's HOME, so it is set while rendering."""
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_CONFIG_HOME")}
    os.environ.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    try:
        from multinode.checks import available_secrets, verify_script
        from multinode.config import options, settings
        from multinode.inventory import load_state

        config = json.loads((home / ".fabric.yaml").read_text())
        opts, conf = options(config), settings(config)
        nodes = load_state(conf.state)
        for node in nodes:
            node.alias = f"{conf.alias_prefix}{node.nid}"
        available = available_secrets(opts)
        paths = {}
        for i, node in enumerate(nodes):
            paths[node.alias] = dest / f"verify_{i}.sh"
            paths[node.alias].write_text(verify_script(node, nodes, opts, available))
        return paths
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def measure(n, key, full, rounds, also=None):
    sb = Sandbox("mnbench")
    home = None
    work = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        sb.up(["ubuntu"] * n, Path(f"{key}.pub").read_text(), log=lambda *_: None)
        home, env = laptop(key, {**sb.forge.config(), **({} if full else LIGHT)})
        setup = timed(sb, env, f"vsetup-{n}", "-H", sb.hosts, "setup", "--tail", "0")
        scripts = checklists(home, work)
        aliases = list(scripts)
        checklist = {"remote": "'bash -s'", "stdin": str(work / "verify_{i}.sh"), "out": str(work / "c_{i}.out")}
        fans = {"b": fan_out(aliases, "true"), "c": fan_out(aliases, **checklist),
                "b2": fan_out(aliases, "true", options=KEX), "c2": fan_out(aliases, **checklist, options=KEX)}
        c = ["bash", "-c", fans["c"]]
        # Once untimed: every checklist over plain ssh runs to its end with no failed check.
        timed(sb, env, f"vcheck-{n}", argv=c)
        for i in range(n):
            out = (work / f"c_{i}.out").read_text()
            failed = [name for name, (status, _) in protocol.checks(out).items() if status == protocol.FAILED]
            if failed or not protocol.ended(out, "checklist"):
                print(f"N={n} node {i}: (c)'s checklist: failed {failed}, ended {protocol.ended(out, 'checklist')}",
                      file=sys.stderr)
        runs = {"a": [], "b": [], "c": [], "b2": [], "c2": [], **({"a2": []} if also else {})}
        for r in range(rounds):
            for kind, done in runs.items():
                load, before = os.getloadavg()[0], nodes_cpu(sb)
                if kind in ("a", "a2"):
                    js, code = work / "a.json", also if kind == "a2" else ROOT
                    wall, _, rc, cpu = timed(sb, env, f"verify-{kind}-{n}", "verify", "--json", stdout=str(js),
                                             fab=str(code / ".venv/bin/fab"), cwd=code)
                    nodes = json.loads(js.read_text())["nodes"].values()
                    phases = {"connect": [x["connect_seconds"] for x in nodes], "checklist": [x["seconds"] for x in nodes]}
                else:
                    wall, _, rc, cpu = timed(sb, env, f"fanout-{kind}-{n}", argv=["bash", "-c", fans[kind]])
                    phases = {}
                done.append({"wall": wall, "rc": rc, "cpu": cpu, "nodes_cpu": nodes_cpu(sb) - before,
                                   "load": load, **phases})
            print(f"N={n} round {r + 1}: " + ", ".join(
                f"({k}) {v[-1]['wall']:.2f}s exit {v[-1]['rc']}" for k, v in runs.items())
                + f", load {runs['a'][-1]['load']:.2f}", file=sys.stderr, flush=True)
        return {"n": n, "setup": setup, "runs": runs}
    finally:
        sb.down()
        shutil.rmtree(work, ignore_errors=True)
        if home:
            shutil.rmtree(home, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the forge's whole config (Ray, venv, dotfiles)")
    parser.add_argument("--runs", type=int, default=5, help="rounds of (a) (b) (c): the median counts")
    parser.add_argument("--also", type=Path, help="a checkout (with its .venv) whose fab verify runs too, as (a2)")
    parser.add_argument("--no-compile", action="store_true",
                        help="leave the venv without .pyc (each fab start then compiles its imports anew)")
    parser.add_argument("sizes", nargs="*", type=int, default=[1, 8, 16])
    args = parser.parse_args()
    if not args.no_compile:
        for code in (ROOT, args.also):
            if code:
                compiled(code)
    key = new_key()
    try:
        results = [measure(n, key, args.full, args.runs, args.also) for n in args.sizes]
    finally:
        shutil.rmtree(key.parent, ignore_errors=True)
    print(f"{'full' if args.full else 'light'} config; {args.runs} rounds, interleaved, the median; "
          f"bytecode {'not ' if args.no_compile else ''}compiled; machine: {os.cpu_count()} cores; "
          f"fab's output in {LOGS}" + (f"; (a2): fab verify of {args.also}" if args.also else ""))
    kinds = list(results[0]["runs"])
    print("Medians (s):")
    print("| N | " + " | ".join(NAMES[k] for k in kinds) + " | load average (min-max) |")
    print("|---" * (len(kinds) + 2) + "|")
    for res in results:
        m = {k: median(r["wall"] for r in v) for k, v in res["runs"].items()}
        loads = [r["load"] for v in res["runs"].values() for r in v]
        print(f"| {res['n']} | " + " | ".join(f"{m[k]:.2f}" for k in kinds) + f" | {min(loads):.1f}-{max(loads):.1f} |")
    print()
    fabs = [k for k in ("a", "a2") if k in kinds]
    ratios = [(f, o) for f in fabs for o in ("c", "b", "c2", "b2")]
    print("Ratios of the medians (goals: a / c <= 1.0, a / b <= 1.3):")
    print("| N | " + " | ".join(f"{f} / {o}" for f, o in ratios) + " |")
    print("|---" * (len(ratios) + 1) + "|")
    for res in results:
        m = {k: median(r["wall"] for r in v) for k, v in res["runs"].items()}
        print(f"| {res['n']} | " + " | ".join(f"{m[f] / m[o]:.2f}" for f, o in ratios) + " |")
    print()
    print("Phases: each node's login and checklist round trip in fab verify --json (median over nodes and runs); "
          "CPU seconds per run (median): the laptop's (wait4: fab, or bash and its ssh clients), the nodes' (cgroups)")
    print("| N | fab | login per node (s) | checklist round trip per node (s), median / max "
          f"| laptop CPU (s): {' / '.join(kinds)} | nodes' CPU (s): {' / '.join(kinds)} "
          "| nodes' CPU per node (ms): login b / b2, checklist c - b, fab verify a |")
    print("|---|---|---|---|---|---|---|")
    for res in results:
        n, runs = res["n"], res["runs"]
        cpu = {k: median(r["cpu"] for r in runs[k]) for k in kinds}
        ncpu = {k: median(r["nodes_cpu"] for r in runs[k]) for k in kinds}
        for fab in fabs:
            connect = [x for r in runs[fab] for x in r["connect"]]
            checklist = [x for r in runs[fab] for x in r["checklist"]]
            print(f"| {n} | ({fab}) | {median(connect):.3f} | {median(checklist):.3f} / {max(checklist):.3f} | "
                  + " / ".join(f"{cpu[k]:.2f}" for k in kinds) + " | " + " / ".join(f"{ncpu[k]:.2f}" for k in kinds)
                  + f" | {1000 * ncpu['b'] / n:.0f} / {1000 * ncpu['b2'] / n:.0f}, "
                  f"{1000 * (ncpu['c'] - ncpu['b']) / n:.0f}, {1000 * ncpu['a'] / n:.0f} |")
    for res in results:
        print(f"N={res['n']}: setup {res['setup'][0]:.1f}s exit {res['setup'][2]}; runs (s): " + "; ".join(
            f"({k}) " + " ".join(f"{r['wall']:.2f}" for r in v) for k, v in res["runs"].items()))


if __name__ == "__main__":
    main()
