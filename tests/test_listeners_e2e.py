"""End to end: listeners that take only whom they wait for, checks that say what they see.

On the session's sandbox cluster (real sshd, real Ray), through the real `fab` CLI:
the bandwidth ring with strangers connecting first; smoke's Ray part on a node whose
nvidia-smi lists GPUs Ray does not give; smoke's torch launcher binding the rendezvous
to the head's private address (torch itself cannot be installed here: a stand-in
package, tests/fake_torch, records what the launcher gave it and serves the store
on the socket it was handed).
"""

import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import FAB, ROOT
from tests.test_hostkeys_users_e2e import rows

# Connects to TARGET:PORT from SOURCE as soon as something listens there, says "connected",
# then "closed" once the server closes the connection (or "open" if it is still open at the end).
STRANGER = """
import socket, sys, time
target, port, source = sys.argv[1], int(sys.argv[2]), sys.argv[3]
end = time.monotonic() + 60
while True:
    try:
        s = socket.create_connection((target, port), timeout=1, source_address=(source, 0))
        break
    except OSError:
        if time.monotonic() > end:
            sys.exit("never connected")
        time.sleep(0.005)
print("connected", flush=True)
s.settimeout(40)
try:
    print("closed" if s.recv(1) == b"" else "data", flush=True)
except ConnectionError:  # closed too, with a reset
    print("closed", flush=True)
except TimeoutError:
    print("open", flush=True)
"""


def line_within(proc, seconds):
    """The next line ``proc`` prints within ``seconds`` (what it said by then, else "")."""
    end, got = time.monotonic() + seconds, b""
    while not got.endswith(b"\n") and select.select([proc.stdout], [], [], max(0, end - time.monotonic()))[0]:
        byte = os.read(proc.stdout.fileno(), 1)  # unbuffered: the next line stays for the next call
        if not byte:
            break
        got += byte
    return got.decode().strip()


def test_strangers_first_on_the_port_do_not_break_the_ring(configured, healthy):
    """rental1 -> rental2 is held back until two strangers (one on rental0, one on rental2 itself)
    have connected to rental2's bandwidth port: rental2 closes them and measures rental1 all the same."""
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    port = "40100"  # network.bandwidth_port's default
    target = sb.nodes[2]["private"]
    sb.cut(2, 1)  # rental1 cannot reach rental2 yet: it retries for 10 s
    strangers, run = [], None
    try:
        for nid in (0, 2):
            strangers.append(subprocess.Popen(
                ["ip", "netns", "exec", sb.nodes[nid]["ns"], sys.executable, "-c", STRANGER, target, port,
                 sb.nodes[nid]["private"]], stdout=subprocess.PIPE))
        run = subprocess.Popen(sb.laptop_cmd(FAB, "bandwidth", "--seconds", "1", env=laptop.env),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert [line_within(s, 60) for s in strangers] == ["connected", "connected"]
        sb.cut(2, 1, cut=False)  # now rental1 connects: after both strangers
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, out + err
        got = rows(out, "bandwidth")
        for nid in range(3):
            status, detail = got[f"rental{nid}"]
            nxt = (nid + 1) % 3
            assert status == "ok" and detail.startswith(f"-> rental{nxt} (198.19.0.1{nxt}): "), detail
            assert float(detail.split(": ")[1].split()[0]) > 0, detail
        assert [line_within(s, 10) for s in strangers] == ["closed", "closed"]  # each stranger was shown the door
    finally:
        sb.cut(2, 1, cut=False)
        for proc in strangers + [run]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def test_smoke_fails_a_node_whose_gpus_ray_does_not_give(configured, healthy):
    """rental1's nvidia-smi lists 8 GPUs, its (real) Ray counted none: smoke fails it, naming both
    counts, though gpu.count asks for none; the nodes without nvidia-smi pass."""
    laptop, sb = configured, healthy
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    sb.fake_gpus(1, 8)
    try:
        smoke = laptop.fab("smoke", "--timeout", "60", timeout=300)
    finally:
        sb.fake_gpus(1, 0)
    assert smoke.returncode == 1, smoke.stdout + smoke.stderr
    got = rows(smoke.stdout, "smoke-ray")
    assert got["rental1"] == ("FAILED", "Ray gives a task 0 GPU(s) on node1, nvidia-smi lists 8 (Ray counts them when "
                                        "it starts: `ray stop` there, then rerun bootstrap)")
    for nid in (0, 2):
        status, detail = got[f"rental{nid}"]
        assert status == "ok" and detail.startswith(f"node{nid}: 0 GPU(s) from Ray, GLOO_SOCKET_IFNAME=ens7 "), detail


def test_smokes_rendezvous_listens_on_the_heads_private_address_alone(laptop, healthy):
    """fab smoke's torch part over the real CLI, with a stand-in torch in each node's workspace venv
    (tests/fake_torch) and two fake GPUs a node: each rank gets torchrun's environment from our
    launcher, and on the head the store listens on 198.19.0.10:PORT only (`ss -ltn` there, then); NCCL's
    transport is told, and a node with an active HCA (a fake sysfs) where it used sockets fails."""
    sb = healthy
    workspace = "/srv/mnh2-smoke"  # nobody else's: the other tests' nodes keep theirs
    laptop.configure(**{**sb.forge.config(), "workspace": workspace, "ray": {"enabled": False}})
    site = f"{workspace}/workspace/venv/lib/python3.11/site-packages"
    try:
        for nid, node in enumerate(sb.nodes):
            sb.exec(nid, "python3", "-m", "venv", "--without-pip", f"{workspace}/workspace/venv")
            shutil.copytree(ROOT / "tests/fake_torch/torch", Path(node["root"]) / site.lstrip("/") / "torch")
            sb.exec(nid, "chown", "-R", f"{node['user']}:", workspace)
            sb.fake_gpus(nid, 2)
        assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
        r = laptop.fab("smoke", "--size-mb", "0.001", "--timeout", "60", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        got = rows(r.stdout, "smoke-torch")
        assert sorted(got) == ["rental0", "rental1", "rental2"], r.stdout
        for status, detail in got.values():  # NCCL's transport, from the stand-in's NCCL lines (no HCA here)
            assert status == "ok" and re.fullmatch(r"2 rank\(s\) on NVIDIA H100 80GB HBM3 \(nccl\), all-reduce correct; "
                                                   r"NCCL 2\.21\.5 between nodes: sockets \((ens7|eth0)\); within the node "
                                                   r"SHM", detail), detail
        assert "\nsmoke: NCCL between nodes: sockets on every node\n" in r.stdout
        assert re.search(r"^smoke: all-reduce of 0\.000999451 MiB over 6 rank\(s\) \(nccl\): ", r.stdout, re.M), r.stdout
        seen = {}
        for node in sb.nodes:
            for record in (Path(node["root"]) / site.lstrip("/") / "torch/distributed/records").glob("*.json"):
                seen[int(record.stem)] = json.loads(record.read_text())
        assert sorted(seen) == list(range(6))
        for rank, got in seen.items():
            assert got["env"] == {"RANK": str(rank), "LOCAL_RANK": str(rank % 2), "WORLD_SIZE": "6",
                                  "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": str(rank // 2), "MASTER_ADDR": "198.19.0.10",
                                  "MASTER_PORT": "29500", "OMP_NUM_THREADS": "1"}
            assert got["store"]["host_name"] == "198.19.0.10" and got["store"]["is_master"] is (rank == 0)
        store = seen[0]["store"]
        assert store["listening"] == "198.19.0.10:29500" and store["use_libuv"] is False
        listeners = [line.split()[3] for line in store["ss"].splitlines() if line.split()[3].endswith(":29500")]
        assert listeners == ["198.19.0.10:29500"]  # the head's public address, 0.0.0.0, [::]: none
        # rental2 gets an active HCA (a fake sysfs): NCCL on sockets there is the silent slowdown; it fails.
        hca = f"{workspace}/sys/class/infiniband/mlx5_0/ports/1"
        sb.exec(2, "sh", "-c", f"mkdir -p {hca} && echo '4: ACTIVE' >{hca}/state")
        laptop.configure(**{**sb.forge.config(), "workspace": workspace, "ray": {"enabled": False},
                            "nccl": {"sysfs_root": f"{workspace}/sys"}})
        r = laptop.fab("smoke", "--size-mb", "0.001", "--timeout", "60", timeout=300)
        assert r.returncode == 1, r.stdout + r.stderr
        got = rows(r.stdout, "smoke-torch")
        assert [got[f"rental{n}"][0] for n in range(3)] == ["ok", "ok", "FAILED"], r.stdout
        assert re.fullmatch(r"NCCL fell back to sockets between nodes though mlx5_0 \(InfiniBand\) is active here: "
                            r"(no RDMA device in this container: /dev/infiniband is missing .*"
                            r"|NCCL_IB_DISABLE=1 is set \(the environment; .*)", got["rental2"][1]), got["rental2"][1]
    finally:
        for nid in range(len(sb.nodes)):
            sb.fake_gpus(nid, 0)
            sb.exec(nid, "rm", "-rf", workspace)
