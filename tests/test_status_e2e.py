"""End to end: `fab status` on the session's sandbox cluster, over the real fab CLI.

rental0 has 8 fake GPUs (the sandbox's nvidia-smi answers status's query with made-up
utilization, memory, temperature and power: GPU 3 idles), a running job and a stand-in
raylet and GCS (processes of those names: status looks for them by name); rental1 has no
GPU and a stand-in raylet; rental2 has 2 fake GPUs, then its sshd is stopped. Where another
test of the session started a real Ray, status counts it the same.
"""

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

from tests.conftest import FAB, ROOT, node_sh
from tests.test_hostkeys_users_e2e import accepted

EIGHT = "8 x 86% 70/80 GiB 74°C 695 W  GPU3 12%"
TWO = "2 x 96% 70/80 GiB 73°C 690 W"


def start_as(sb, nid, name):
    """A process called ``name`` on node ``nid`` (a copy of sleep), as its login user: its pid."""
    got = node_sh(sb, nid, f"cp /bin/sleep /tmp/{name} && {{ setsid /tmp/{name} 600 >/dev/null 2>&1 </dev/null & echo $!; }}")
    return int(got.stdout.split()[-1])


def running(sb, nid, name):
    return node_sh(sb, nid, f"pgrep -u \"$EUID\" -x {name}").returncode == 0


def table_rows(out):
    """{alias: its line} of the plain table."""
    return {line.split()[0]: line for line in out.splitlines() if line.startswith("rental")}


def read_until(fd, count, marker, seconds):
    """What ``fd`` gave until ``marker`` was seen ``count`` times (or ``seconds`` passed)."""
    got, end = b"", time.monotonic() + seconds
    while got.count(marker) < count and time.monotonic() < end:
        if select.select([fd], [], [], max(0, end - time.monotonic()))[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    return got.decode(errors="replace")


def test_status_a_row_per_node_json_watch_and_a_node_that_does_not_answer(laptop, healthy):
    sb = healthy
    started = []
    try:
        sb.fake_gpus(0, 8)
        sb.fake_gpus(2, 2)
        # A job as the jobs tasks keep one: running while its supervisor runs its job.sh, no exit recorded.
        # Its supervisor is `bash /home/USER/.cache/multinode/jobs/NAME/job.sh ...`, as jobs.sh starts it (alone
        # in the background: `a && b &` would make $! a subshell's, whose command line is another).
        node_sh(sb, 0, "J=~/.cache/multinode/jobs; mkdir -p $J/train $J/done && echo 'sleep 120' >$J/train/job.sh; "
                       "setsid bash $J/train/job.sh </dev/null >/dev/null 2>&1 & "
                       "echo \"supervisor $!\" >~/.cache/multinode/jobs/train/state; "
                       "printf 'supervisor 1\\nexit 0\\n' >~/.cache/multinode/jobs/done/state")
        for nid, name in ((0, "raylet"), (0, "gcs_server"), (1, "raylet")):
            if not running(sb, nid, name):
                started.append((nid, start_as(sb, nid, name)))
        ray2 = "✓" if running(sb, 2, "raylet") else "✗ no raylet"
        assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0

        r = laptop.fab("status")
        assert r.returncode == 0, r.stdout + r.stderr
        got = table_rows(r.stdout)
        assert EIGHT in got["rental0"] and "1: train" in got["rental0"] and got["rental0"].endswith("✓ head"), got
        assert " no GPU " in got["rental1"] and got["rental1"].endswith("  ✓"), got
        assert TWO in got["rental2"] and got["rental2"].endswith(ray2), got
        assert r.stdout.rstrip().endswith("all 3 node(s) ok")

        r = laptop.fab("status", "--json")
        assert r.returncode == 0 and r.stderr == "all 3 node(s) ok\n", r.stderr  # stdout: the JSON alone
        doc = json.loads(r.stdout)
        nodes = doc["nodes"]
        assert doc["ok"] is True and sorted(nodes) == ["rental0", "rental1", "rental2"]
        assert [g["utilization_pct"] for g in nodes["rental0"]["gpus"]] == [97, 95, 99, 12, 96, 98, 94, 97]
        assert nodes["rental0"]["gpus"][3] == {"index": 3, "utilization_pct": 12, "memory_used_mib": 21559,
                                               "memory_total_mib": 81559, "temperature_c": 52, "power_w": 140.3}
        assert nodes["rental0"]["jobs"] == ["train"] and nodes["rental0"]["ray"] == {"raylet": True, "gcs": True}
        assert nodes["rental1"]["gpus"] == [] and nodes["rental1"]["no_gpu"] == "no nvidia-smi"
        assert nodes["rental1"]["ray"] == {"raylet": True, "gcs": None}
        for node in nodes.values():
            assert node["disk"]["free_bytes"] > 0 and node["shm"]["size_bytes"] > 0 and node["load"]["cpus"] >= 1

        # --watch without a terminal: the table once per refresh, on the same one connection per node,
        # until Ctrl-C, which ends it with exit 0.
        before = [accepted(sb, n) for n in range(3)]
        watch = subprocess.Popen(sb.laptop_cmd(FAB, "status", "--watch", "--interval", "1", env=laptop.env), cwd=ROOT,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = read_until(watch.stdout.fileno(), 3, b"status at ", 60)
        watch.send_signal(signal.SIGINT)
        rest, err = watch.communicate(timeout=60)
        out += rest.decode()
        assert watch.returncode == 0, out + err.decode()
        assert out.count("status at ") >= 3 and out.count("\nnode     GPUs") >= 3, out
        assert [accepted(sb, n) - b for n, b in enumerate(before)] == [1, 1, 1]

        # On a terminal: rich redraws the table in place, in colour; Ctrl-C still exits 0.
        leader, follower = pty.openpty()
        term = subprocess.Popen(sb.laptop_cmd(FAB, "status", "--watch", "--interval", "1",
                                              env={**laptop.env, "TERM": "xterm-256color", "COLUMNS": "160"}),
                                cwd=ROOT, stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        shown = read_until(leader, 2, b"status at ", 60)
        term.send_signal(signal.SIGINT)
        term.wait(timeout=60)
        shown += read_until(leader, 1, b"node(s) ok", 10)
        os.close(leader)
        assert term.returncode == 0, shown
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
        assert "\x1b[1;31m" in shown and EIGHT in plain and "all 3 node(s) ok" in plain, shown  # bold red: GPU3

        # A node that does not answer is named (its row and the summary), the others shown; exit 1.
        sb.stop_sshd(2)
        r = laptop.fab("status")
        assert r.returncode == 1, r.stdout + r.stderr
        got = table_rows(r.stdout)
        assert EIGHT in got["rental0"] and " no GPU " in got["rental1"]
        assert "no answer: " in got["rental2"] and "rental2  198.18.0.12  status: " in r.stdout, r.stdout
        r = laptop.fab("status", "--json")
        doc = json.loads(r.stdout)
        assert r.returncode == 1 and doc["ok"] is False and doc["nodes"]["rental2"]["failed"]
        assert doc["nodes"]["rental0"]["failed"] is None and "rental2" in r.stderr
        assert laptop.fab("status", "--interval", "0").returncode == 2
    finally:
        for nid, pid in started:
            sb.exec(nid, "kill", str(pid), check=False)
        for nid in range(3):
            sb.fake_gpus(nid, 0)
        node_sh(sb, 0, "pkill -f .cache/multinode/jobs/train/job.sh; rm -rf ~/.cache/multinode/jobs")
