"""Unit tests: the smoke test's plan, its launch and what it parses (loopback only).

torch cannot be installed here: the launcher runs for real, with a stand-in
for the venv's Python that records how it was called, or with a real venv
holding a stand-in torch (tests/fake_torch) that records what each rank was
given and serves the rendezvous store on the socket it is handed. The real
all-reduce runs on a GPU machine (bench/smoke_gpu.py).
"""

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multinode.config import DEFAULTS, options
from multinode.inventory import Node, parse_hosts
from multinode.render import command, render
from multinode.protocol import said, tagged
from multinode.tasks.smoke import bus_bandwidth, launch_command, ray_problem, torch_plan, transport

NODES = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11,198.18.0.12:198.19.0.12")
FAKE_TORCH = Path(__file__).resolve().parent / "fake_torch/torch"


def opts(workspace="/workspace", **over):
    return options({"multinode": {**DEFAULTS, "workspace": workspace, **over}})


@pytest.mark.parametrize("probes, plan, problems", [
    ({"a": ("none", 8), "b": ("none", 8)}, None, {}),
    ({"a": ("2.5.1 nccl 2.21.5", 8), "b": ("2.5.1 nccl 2.21.5", 8)}, ("nccl", 8), {}),
    ({"a": ("2.5.1 nccl bundled", 0), "b": ("2.5.1 nccl bundled", 0)}, ("gloo", 1), {}),
    ({"a": ("2.5.1 nccl 2.21.5", 8), "b": ("none", 8)}, ("nccl", 8),
     {"b": "torch is not in the workspace venv, but is on a"}),
    ({"a": ("2.5.1 nccl 2.21.5", 8), "b": ("2.5.1 nccl 2.21.5", 8), "c": ("2.5.1 nccl 2.21.5", 7)}, ("nccl", 8),
     {"c": "7 GPU(s), 8 on the other nodes: one all-reduce needs the same on every node"}),
    ({"a": ("2.5.1 nccl 2.21.5", 0), "b": ("2.4.0 nccl 2.20.5", 0)}, ("gloo", 1),
     {"a": "torch 2.5.1 nccl 2.21.5: the nodes differ (2.4.0 nccl 2.20.5; 2.5.1 nccl 2.21.5)",
      "b": "torch 2.4.0 nccl 2.20.5: the nodes differ (2.4.0 nccl 2.20.5; 2.5.1 nccl 2.21.5)"}),
])
def test_the_plan_follows_what_the_nodes_have(probes, plan, problems):
    backend, nproc, found = torch_plan(probes)
    if plan is None:
        assert backend is None and nproc.startswith("torch is not in the workspace venv") and found == {}
    else:
        assert (backend, nproc) == plan and found == problems


def test_the_launch_is_our_launcher_with_the_head_as_rendezvous(tmp_path):
    """The real launcher script, with a venv whose python records its arguments and the worker it was given."""
    venv = tmp_path / "ws/proj/venv"
    (venv / "bin").mkdir(parents=True)
    record = tmp_path / "record.json"
    (venv / "bin/python").write_text(f"""#!/usr/bin/env python3
import json, os, sys
worker = sys.argv[1]
json.dump({{"argv": sys.argv[1:], "worker": open(worker).read(), "omp": os.environ.get("OMP_NUM_THREADS"),
           "stdin": sys.stdin.read()}}, open({str(record)!r}, "w"))
print("SMOKE_NODE " + json.dumps({{"host": "n", "ranks": 8}}))
""")
    (venv / "bin/python").chmod(0o755)
    o = opts(workspace=str(tmp_path / "ws"), repo={"url": "git://forge/proj.git", "branch": "main", "name": ""})
    cmd = launch_command(o, NODES, 2, 8, "nccl", 64, 300)
    words = shlex.split(cmd)
    assert words[:2] == ["bash", "-c"] and words[3:7] == ["smoke", "launch", str(venv), "/sys"]
    assert words[8:] == ["300", "3", "2", "8", "198.19.0.10", "29500", "nccl", "64", "10", "300"]
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, input="not for the worker")
    assert r.returncode == 0, r.stderr
    assert tagged(r.stdout, "SMOKE_NODE") == {"host": "n", "ranks": 8}
    got = json.loads(record.read_text())
    worker = got["argv"][0]
    assert got["argv"] == [worker, "node", "3", "2", "8", "198.19.0.10", "29500", "nccl", "64", "10", "300"]
    assert "master_listen_fd=fd" in got["worker"] and got["omp"] == "1" and got["stdin"] == ""
    assert not os.path.exists(worker)  # the worker's file is gone afterwards


def fake_torch_venv(tmp_path, gpus=0):
    """Options whose workspace venv is a real venv holding tests/fake_torch (torch cannot be installed
    here), and an environment whose PATH has an nvidia-smi listing ``gpus`` GPUs."""
    venv = tmp_path / "ws/proj/venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    shutil.copytree(FAKE_TORCH, site / "torch")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n" + "".join(
        f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n" for i in range(gpus)))
    (bin_dir / "nvidia-smi").chmod(0o755)
    o = opts(workspace=str(tmp_path / "ws"), repo={"url": "git://forge/proj.git", "branch": "main", "name": ""},
             smoke={**DEFAULTS["smoke"], "port": free_port()})
    return o, site / "torch/distributed/records", {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_rank_gets_torchruns_environment_and_rank_0_serves_the_store_on_the_master_address(tmp_path):
    """Two "nodes" of two ranks on this machine (the head's private address: 127.0.0.2): the launcher
    starts each rank with torchrun's environment; rank 0 binds the store to that address alone."""
    o, records, env = fake_torch_venv(tmp_path)
    nodes = [Node(0, "rental0", "198.18.0.10", "127.0.0.2"), Node(1, "rental1", "198.18.0.11", "127.0.0.3")]
    runs = [subprocess.Popen(launch_command(o, nodes, rank, 2, "gloo", 0.001, 60), shell=True, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    outs = [run.communicate(timeout=90) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outs
    for out, _ in outs:
        assert tagged(out, "SMOKE_NODE")["ranks"] == 2 and tagged(out, "SMOKE_NODE")["correct"] is True
    summary = tagged(outs[0][0], "SMOKE")
    assert summary["world"] == 4 and summary["bytes"] == 1048 and summary["backend"] == "gloo"
    port = str(o["smoke"]["port"])
    got = {int(p.stem): json.loads(p.read_text()) for p in records.glob("*.json")}
    assert sorted(got) == [0, 1, 2, 3]
    for rank, seen in got.items():
        assert seen["env"] == {"RANK": str(rank), "LOCAL_RANK": str(rank % 2), "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
                               "GROUP_RANK": str(rank // 2), "MASTER_ADDR": "127.0.0.2", "MASTER_PORT": port,
                               "OMP_NUM_THREADS": "1"}
        assert (seen["rank"], seen["world_size"], seen["timeout"]) == (rank, 4, 60)
        assert seen["store"]["host_name"] == "127.0.0.2" and seen["store"]["is_master"] is (rank == 0)
    store = got[0]["store"]
    assert isinstance(store["master_listen_fd"], int) and store["use_libuv"] is False
    assert store["listening"] == f"127.0.0.2:{port}"
    listeners = [line.split()[3] for line in store["ss"].splitlines() if line.split()[3].endswith(f":{port}")]
    assert listeners == [f"127.0.0.2:{port}"]  # not 0.0.0.0, *, nor [::]


def test_a_rank_that_fails_stops_its_node_at_once(tmp_path):
    """Two ranks on a node whose torch sees one GPU: local rank 1 fails, named; rank 0, left waiting for
    it at the rendezvous, is stopped with it (exit 1 long before the timeout), as torchrun does."""
    o, _, env = fake_torch_venv(tmp_path, gpus=1)
    nodes = [Node(0, "rental0", "198.18.0.10", "127.0.0.2")]
    started = time.monotonic()
    r = subprocess.run(launch_command(o, nodes, 0, 2, "nccl", 0.001, 120), shell=True, env=env, text=True,
                       capture_output=True, timeout=60)
    assert r.returncode == 1 and time.monotonic() - started < 30, r.stdout + r.stderr
    assert said(r.stdout, "SMOKE_ERROR") == [f"rank 1 on {socket.gethostname()}: RuntimeError: torch sees 1 GPU(s), "
                                             "this is local rank 1 (torch.cuda.is_available() is True)"]
    tags = [line.split()[0] for line in r.stdout.splitlines()]
    assert tags[:2] == ["RDMA", "SMOKE_ERROR"] and tags[-1] == "NCCL_ENV"  # NCCL's lines, even of a failed run


def test_nccl_tells_its_transport_and_a_node_with_an_active_hca_on_sockets_fails(tmp_path):
    """Two "nodes" of two NCCL ranks (stand-in torch, whose NCCL logs what NCCL 2.21 does on sockets):
    the ranks alone get NCCL's debug output, each into a file of its own, which the launcher reads
    and removes; node 1 has an active HCA (a fake sysfs) and NCCL_IB_DISABLE=1: it fails, naming it."""
    o, records, env = fake_torch_venv(tmp_path, gpus=2)
    ib = tmp_path / "sys/class/infiniband/mlx5_0/ports/1"
    ib.mkdir(parents=True)
    (ib / "state").write_text("4: ACTIVE\n")
    nodes = [Node(0, "rental0", "198.18.0.10", "127.0.0.2"), Node(1, "rental1", "198.18.0.11", "127.0.0.3")]
    on_ib = {**o, "nccl": {"sysfs_root": str(tmp_path / "sys")}}
    runs = [subprocess.Popen(launch_command(opt, nodes, rank, 2, "nccl", 0.001, 60), shell=True, text=True,
                             env={**env, **extra}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for rank, opt, extra in ((0, o, {}), (1, on_ib, {"NCCL_IB_DISABLE": "1"}))]
    outs = [run.communicate(timeout=90)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outs
    assert said(outs[0], "RDMA") == ["- missing"] and said(outs[1], "RDMA") == ["mlx5_0/InfiniBand missing"]
    assert transport(outs[0], True) == (None, "NCCL 2.21.5 between nodes: sockets (eth0); within the node SHM", "sockets")
    problem, told, kind = transport(outs[1], True)
    assert problem == ("NCCL fell back to sockets between nodes though mlx5_0 (InfiniBand) is active here: "
                       "NCCL_IB_DISABLE=1 is set (the environment; multinode's nccl step writes it where it finds "
                       "no active HCA: rerun bootstrap)")
    assert (told, kind) == ("NCCL 2.21.5 between nodes: sockets (eth0); within the node SHM", "sockets")
    assert tagged(outs[1], "NCCL_ENV")["NCCL_IB_DISABLE"] == ["1", "the environment"]
    # Each channel line once: 2 ranks a node, one sends to the other node, one receives from it.
    assert len([ln for ln in said(outs[0], "NCCL_LOG") if "via NET/Socket/0" in ln]) == 2
    debug = {int(p.stem): json.loads(p.read_text())["nccl_debug"] for p in records.glob("*.json")}
    assert sorted(debug) == [0, 1, 2, 3]
    for rank, got in debug.items():
        assert got["NCCL_DEBUG"] == "INFO" and got["NCCL_DEBUG_SUBSYS"] == "INIT,NET,ENV"
        assert got["NCCL_DEBUG_FILE"].endswith(f"/rank{rank % 2}.log")
        assert not os.path.exists(os.path.dirname(got["NCCL_DEBUG_FILE"]))  # removed by the launcher
    assert "NCCL_DEBUG" not in os.environ  # this test's own environment: the ranks' alone had it


def test_a_launch_that_never_ends_is_stopped_at_the_timeout(tmp_path):
    venv = tmp_path / "ws/proj/venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text("#!/bin/sh\nexec sleep 60\n")
    (venv / "bin/python").chmod(0o755)
    o = opts(workspace=str(tmp_path / "ws"), repo={"url": "git://forge/proj.git", "branch": "main", "name": ""})
    r = subprocess.run(launch_command(o, NODES, 1, 1, "gloo", 1, 1), shell=True, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 124
    assert r.stdout == "RDMA - missing\nSMOKE_ERROR stopped after 1s (a node that never joined?)\n"


def test_the_probe_reads_torch_and_counts_gpus_without_importing_torch(tmp_path):
    site = tmp_path / "venv/lib/python3.12/site-packages"
    (site / "torch").mkdir(parents=True)
    (site / "torch/__init__.py").write_text("raise SystemExit('imported')\n")
    # As torch 2.11's own file reads (seen on the GPU machine).
    (site / "torch/version.py").write_text("__all__ = ['__version__', 'debug', 'cuda']\n__version__ = '2.11.0+cu130'\n")
    (site / "nvidia_nccl_cu13-2.28.9.dist-info").mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n[ \"$1\" = -L ] && printf 'GPU 0: NVIDIA H200 (UUID: x)\\n"
                                        "GPU 1: NVIDIA H200 (UUID: y)\\n'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    probe = command("bash", "-c", render("smoke.sh.j2"), "smoke", "probe", str(tmp_path / "venv"))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(probe, shell=True, capture_output=True, text=True, env=env)
    assert r.stdout == "TORCH 2.11.0+cu130 nccl 2.28.9\nGPUS 2\n", r.stderr
    r = subprocess.run(command("bash", "-c", render("smoke.sh.j2"), "smoke", "probe", str(tmp_path / "none")),
                       shell=True, capture_output=True, text=True, env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert r.stdout == "TORCH none\nGPUS 0\n"


def test_what_a_ray_task_saw_passes_or_names_the_problem():
    seen = {"hostname": "node1", "gpu_ids": ["0", "1"], "env": {"NCCL_SOCKET_IFNAME": "ens7", "GLOO_SOCKET_IFNAME": "ens7"}}
    assert ray_problem(seen, 2) == (None, "node1: 2 GPU(s) from Ray, GLOO_SOCKET_IFNAME=ens7 NCCL_SOCKET_IFNAME=ens7")
    assert ray_problem(seen, 8)[0] == "Ray gives a task 2 GPU(s) on node1, 8 expected (multinode.gpu.count)"
    bare = {**seen, "env": {"NCCL_SOCKET_IFNAME": "ens7"}}
    assert ray_problem(bare, 0)[0] == "a Ray task on node1 sees no GLOO_SOCKET_IFNAME (rerun bootstrap: it restarts Ray)"
    assert ray_problem({"error": "not an alive node of the Ray cluster"}, 0) == ("not an alive node of the Ray cluster", "")


def test_ray_gives_the_gpus_nvidia_smi_lists_whatever_gpu_count_says():
    seen = {"hostname": "node1", "gpu_ids": [], "env": {"NCCL_SOCKET_IFNAME": "ens7", "GLOO_SOCKET_IFNAME": "ens7"},
            "nvidia_smi": 8}
    why = "Ray gives a task 0 GPU(s) on node1, nvidia-smi lists 8 (Ray counts them when it starts: `ray stop` there, then rerun bootstrap)"
    assert ray_problem(seen, 0)[0] == ray_problem(seen, 8)[0] == why
    assert ray_problem({**seen, "gpu_ids": ["0", "1"], "nvidia_smi": 1}, 0)[0].startswith("Ray gives a task 2 GPU(s) on node1, nvidia-smi lists 1 ")
    assert ray_problem({**seen, "gpu_ids": [str(i) for i in range(8)]}, 0)[0] is None
    assert ray_problem({**seen, "nvidia_smi": None}, 0)[0] is None  # no nvidia-smi: a CPU node
    assert ray_problem({**seen, "nvidia_smi": 0}, 0)[0] is None


def test_bandwidth_as_nccl_tests_defines_it_and_tagged_lines():
    assert bus_bandwidth(1e9, 1.0, 2) == (1.0, 1.0)
    assert bus_bandwidth(1e9, 0.5, 8) == (2.0, 3.5)
    assert bus_bandwidth(1e9, 1.0, 1) == (1.0, 0.0)  # one rank: nothing crosses a link
    out = 'noise\nSMOKE_NODE {"a": 1}\nSMOKE {"world": 2}\nSMOKE {"world": 3}\n'
    assert tagged(out, "SMOKE") == {"world": 3} and tagged(out, "SMOKE_NODE") == {"a": 1} and tagged(out, "X") is None


@pytest.mark.parametrize("n", [2, 3, 4, 7, 16])
def test_all_pairs_rounds_meet_every_pair_once_with_each_node_once_a_round(n):
    from multinode.tasks.bandwidth import rounds

    found = rounds(list(range(1, n + 1)))
    assert len(found) == (n - 1 if n % 2 == 0 else n)
    pairs = [frozenset(p) for r in found for p in r]
    assert len(pairs) == len(set(pairs)) == n * (n - 1) // 2
    for r in found:
        members = [x for p in r for x in p]
        assert len(members) == len(set(members))
