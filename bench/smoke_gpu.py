"""The smoke test's torch part on a GPU machine, with the exact commands `fab smoke` sends.

    uv run python bench/smoke_gpu.py prepare DIR    # here: write DIR/run.sh and the commands
    bash DIR/run.sh VENV OUT                         # there: VENV holds torch; results into OUT
    uv run python bench/smoke_gpu.py check OUT      # here: parse them as `fab smoke` does

On one machine with GPUs, the "nodes" are processes on 127.0.0.1: the probe;
an all-reduce with NCCL on the machine's GPUs (one node); Gloo across two
nodes (two launches, node ranks 0 and 1); more ranks than GPUs (a rank
fails, named, and its node's other ranks are stopped); a node that never
joins (stopped at the timeout, named). `check` also prints which transport
NCCL's own debug output says it used (within the one node: no network). After the runs, OUT/listeners holds
what listened on the rendezvous port during the Gloo run (`ss -ltn`): the
store of rank 0, on 127.0.0.1 alone.
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from multinode.config import DEFAULTS  # noqa: E402
from multinode.inventory import parse_hosts  # noqa: E402
from multinode.render import command, render  # noqa: E402
from multinode.protocol import said, tagged  # noqa: E402
from multinode.tasks.smoke import bus_bandwidth, launch_command, torch_plan, transport  # noqa: E402

WORKSPACE = "/tmp/multinode-smoke-ws"
OPTS = {**DEFAULTS, "workspace": WORKSPACE, "repo": {"url": "git://forge/proj.git", "branch": "main", "name": "proj"},
        "smoke": {**DEFAULTS["smoke"], "size_mb": 256}}
# Two nodes whose private address is this machine's loopback (strings only: nothing here connects).
NODES = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
for n in NODES:
    n.private = "127.0.0.1"


def prepare(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    venv = f"{WORKSPACE}/proj/venv"
    cmds = {
        "probe": command("bash", "-c", render("smoke.sh.j2"), "smoke", "probe", venv),
        "nccl": launch_command(OPTS, NODES[:1], 0, "$GPUS", "nccl", 256, 120),
        "gloo0": launch_command(OPTS, NODES, 0, 1, "gloo", 16, 120),
        "gloo1": launch_command(OPTS, NODES, 1, 1, "gloo", 16, 120),
        "toomany": launch_command(OPTS, NODES[:1], 0, "$TOOMANY", "nccl", 1, 60),
        "alone": launch_command(OPTS, NODES, 0, 1, "gloo", 1, 20),
    }
    for name, cmd in cmds.items():
        # $GPUS/$TOOMANY: known only there; the launcher gets them as arguments all the same.
        cmd = cmd.replace("'$GPUS'", '"$GPUS"').replace("'$TOOMANY'", '"$TOOMANY"')
        (out / f"{name}.sh").write_text(cmd + "\n")
    (out / "run.sh").write_text(f"""#!/usr/bin/env bash
# VENV OUT: run the smoke commands with VENV as the workspace venv.
set -u
here=$(dirname "$0") venv=$1 out=$2
mkdir -p {WORKSPACE}/proj && ln -sfn "$venv" {WORKSPACE}/proj/venv
run() {{
    local name=$1 t0 rc
    t0=$(date +%s%N)
    {{ echo "== $name" >&2; bash "$here/$name.sh" >"$out/$name.out"; }} 2>>"$out/stderr.log"
    rc=${{PIPESTATUS[0]}}
    echo "$name exit $rc $(( ($(date +%s%N) - t0) / 1000000 ))ms" | tee -a "$out/exits"
}}
run probe
export GPUS=$(grep '^GPUS ' "$out/probe.out" | cut -d' ' -f2) TOOMANY=$(( $(grep '^GPUS ' "$out/probe.out" | cut -d' ' -f2) + 1 ))
run nccl
# Node 1 starts once node 0's rank 0 serves the rendezvous (it waits for node 1 there): what listens then.
run gloo0 &
for _ in $(seq 600); do ss -ltnH "sport = :{OPTS['smoke']['port']}" | grep -q . && break; sleep 0.1; done
ss -ltnH "sport = :{OPTS['smoke']['port']}" >"$out/listeners"
run gloo1; wait
run toomany
run alone
""")


def check(out):
    out = Path(out)
    text = {p.stem: p.read_text() for p in out.glob("*.out")}
    exits = dict((ln.split()[0], ln.split()[2]) for ln in (out / "exits").read_text().splitlines())
    probe = dict(ln.split(" ", 1) for ln in text["probe"].splitlines())
    plan = torch_plan({"rental0": (probe["TORCH"], int(probe["GPUS"]))})
    print("probe:", probe, "plan:", plan)
    for name in ("nccl", "gloo0", "gloo1"):
        summary = tagged(text[name], "SMOKE")
        speed = bus_bandwidth(summary["bytes"], summary["seconds"], summary["world"]) if summary else None
        print(name, "exit", exits[name], "node:", tagged(text[name], "SMOKE_NODE"), "summary:", summary,
              "GB/s (algorithm, bus):", speed)
    # What NCCL said of its transport (one node here: within it alone; nothing crosses a network).
    print("nccl transport (problem, what, kind):", transport(text["nccl"], False))
    print("NCCL's lines:", *said(text["nccl"], "NCCL_LOG"), "settings:", tagged(text["nccl"], "NCCL_ENV"), sep="\n  ")
    for name in ("toomany", "alone"):
        errors = [ln for ln in text[name].splitlines() if ln.startswith("SMOKE_ERROR")]
        print(name, "exit", exits[name], errors)
    print("listening on the rendezvous port during gloo:", (out / "listeners").read_text().split())
    print(json.dumps(exits))


if __name__ == "__main__":
    {"prepare": prepare, "check": check}[sys.argv[1]](sys.argv[2])
