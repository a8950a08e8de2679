"""End to end: jobs on a 3-node sandbox cluster, through the real `fab` CLI: launch, jobs, logs, stop.

The cluster is set up once for the module (bootstrap without Ray or dotfiles: the workspace venv,
~/.env's secrets, nccl.env, the cluster key, the head's worker aliases). Each job is a real process
group on real nodes; the head's watchdog follows the workers over real ssh. While jobs start and run,
a sampler on the host reads every sandbox node's process table (argv) every 50 ms.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import FAB, ROOT, SECRETS, Laptop, node_sh
from tests.test_hostkeys_users_e2e import rows

PORT = 8097  # the notification receiver's, on the laptop
REPO = "/workspace/workspace"
SITE = f"{REPO}/venv/lib/python3.11/site-packages"
# Each rank: what it was given, then a TCP rendezvous at MASTER_ADDR:MASTER_PORT (rank 0 listens,
# every other rank connects and says its rank). Ranks from torchrun's variables where it ran.
RDV = r'''
import os, socket, sys, time
env = os.environ
rank, world = int(env.get("RANK", env["NODE_RANK"])), int(env.get("WORLD_SIZE", env["NNODES"]))
addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
keys = ("NODE_RANK", "NNODES", "NPROC_PER_NODE", "MASTER_ADDR", "MASTER_PORT", "MULTINODE_NODE_IPS",
        "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "ANTHROPIC_API_KEY", "VIRTUAL_ENV", "RANK", "LOCAL_RANK",
        "WORLD_SIZE")
print("ENV " + " ".join(f"{k}={env.get(k, '-').replace(' ', ',')}" for k in keys)
      + f" python={sys.executable} cwd={os.getcwd()}", flush=True)
if rank == 0:
    server = socket.create_server((addr, port))
    server.settimeout(60)
    met = []
    for _ in range(world - 1):
        peer, _ = server.accept()
        met.append(int(peer.recv(16).decode()))
        peer.sendall(b"ok")
    print(f"MET rank 0 met {sorted(met)}", flush=True)
else:
    end = time.time() + 60
    while True:
        try:
            peer = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.time() > end:
                raise
            time.sleep(0.1)
    peer.sendall(str(rank).encode())
    assert peer.recv(2) == b"ok"
    print(f"MET rank {rank} met rank 0", flush=True)
time.sleep(float(sys.argv[1]) if sys.argv[1:] else 0)
'''


@pytest.fixture(scope="module")
def cluster(sandbox, laptop_key, tmp_path_factory):
    """The module's laptop, with the session's sandbox cluster bootstrapped; rdv.py in every repo."""
    laptop = Laptop(sandbox, tmp_path_factory.mktemp("jobs") / "home", laptop_key)
    laptop.env.update(SECRETS)
    laptop.configure(**{**sandbox.forge.config(), "ray": {"enabled": False}, "dotfiles": {"repo": ""},
                        "connect_timeout": 3, "jobs": {"lost_after": 4, "grace": 3},
                        "notify": {"urls": [f"json://127.0.0.1:{PORT}/"], "desktop": False}})
    r = laptop.fab("-H", sandbox.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", "head-ssh",
                   timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    for node in sandbox.nodes:
        (Path(node["root"]) / REPO.lstrip("/") / "rdv.py").write_text(RDV)
    inbox = laptop.home / "inbox.jsonl"
    receiver = subprocess.Popen(sandbox.laptop_cmd("python3", str(ROOT / "tests/receiver.py"), str(PORT), str(inbox)))
    yield laptop, sandbox, inbox
    receiver.kill()


class Sampler:
    """Every argv of the sandbox nodes' processes, read every 50 ms from the host (`ps`, by PID namespace)."""

    def __init__(self, sb):
        self.spaces = {os.readlink(f"/proc/{n['init_pid']}/ns/pid")[5:-1] for n in sb.nodes}
        self.seen, self.done = set(), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.done.is_set():
            out = subprocess.run(["ps", "-eo", "pidns=,args="], capture_output=True, text=True).stdout
            self.seen.update(line.split(None, 1)[1] for line in out.splitlines()
                             if line.split(None, 1)[0] in self.spaces and len(line.split(None, 1)) == 2)
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.done.set()
        self.thread.join()


def leaks(argvs):
    """The argvs that hold a secret or a rank's variable."""
    words = [*SECRETS.values(), "NODE_RANK", "node_rank", "node-rank", "PET_", "NNODES=", "MASTER_ADDR="]
    return [argv for argv in argvs if any(word in argv for word in words)]


def jobs_json(laptop):
    r = laptop.fab("jobs", "--json")
    return {job["name"]: job for job in json.loads(r.stdout)["jobs"]}


def wait_for(laptop, name, done, seconds=60):
    """``fab jobs --json``'s view of job ``name`` once ``done(job)`` holds."""
    end = time.monotonic() + seconds
    while True:
        job = jobs_json(laptop).get(name)
        if job and done(job) or time.monotonic() > end:
            return job
        time.sleep(0.5)


def logged(laptop, name, *args):
    r = laptop.fab("logs", name, *args)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def messages(inbox):
    return [json.loads(line) for line in Path(inbox).read_text().splitlines()] if Path(inbox).exists() else []


def test_a_job_gets_its_environment_and_its_ranks_meet(cluster, healthy):
    laptop, sb, inbox = cluster
    sb.fake_gpus(1, 2)  # rental1 has two GPUs: NPROC_PER_NODE=2 there
    try:
        with Sampler(sb) as sampler:
            r = laptop.fab("launch", "python rdv.py 8", "--name", "meet")
            assert r.returncode == 0, r.stdout + r.stderr
            assert "job meet started on 3 node(s): MASTER_ADDR=198.19.0.10 MASTER_PORT=" in r.stdout
            assert {a: s for a, (s, _) in rows(r.stdout, "launch").items()} == {f"rental{n}": "changed" for n in range(3)}
            assert re.search(r"^watchdog\s+rental0 .* ok\s+follows 3 node\(s\)", r.stdout, re.M), r.stdout
            running = jobs_json(laptop)["meet"]  # fab has exited: the job runs on
            assert running["state"] == "running", running
            assert [running["nodes"][f"rental{n}"]["state"] for n in range(3)] == ["running"] * 3
            job = wait_for(laptop, "meet", lambda j: j["ended"])
    finally:
        sb.fake_gpus(1, 0)
    assert job["state"] == "finished" and job["first_failure"] is None, job
    assert [job["nodes"][f"rental{n}"]["exit"] for n in range(3)] == [0, 0, 0]
    out = logged(laptop, "meet")
    port = re.search(r"MASTER_PORT=(\d+)", r.stdout).group(1)
    for nid in range(3):
        env = re.search(rf"^rental{nid} \| ENV (.*)$", out, re.M).group(1)
        assert env == (f"NODE_RANK={nid} NNODES=3 NPROC_PER_NODE={2 if nid == 1 else 1} MASTER_ADDR=198.19.0.10 "
                       f"MASTER_PORT={port} MULTINODE_NODE_IPS=198.19.0.10,198.19.0.11,198.19.0.12 "
                       f"NCCL_SOCKET_IFNAME=ens7 GLOO_SOCKET_IFNAME=ens7 ANTHROPIC_API_KEY={SECRETS['ANTHROPIC_API_KEY']} "
                       f"VIRTUAL_ENV={REPO}/venv RANK=- LOCAL_RANK=- WORLD_SIZE=- python={REPO}/venv/bin/python "
                       f"cwd={REPO}"), env
    assert "rental0 | MET rank 0 met [1, 2]" in out
    assert "rental1 | MET rank 1 met rank 0" in out and "rental2 | MET rank 2 met rank 0" in out
    assert "rental2 | [multinode] exited 0" in out
    assert logged(laptop, "meet", "--node", "rental1", "--tail", "1") == "rental1 | [multinode] exited 0\n"
    assert any("python rdv.py 8" in argv for argv in sampler.seen)  # the sampler saw the job itself
    assert leaks(sampler.seen) == []
    # The table; the job's end notified once (by the first `jobs` that saw it ended), never again.
    listing = laptop.fab("jobs")
    assert re.search(r"^meet\s+python rdv.py 8\s+\S+ \S+\s+\d+s\s+exited 0\s+exited 0\s+exited 0\s+finished$",
                     listing.stdout, re.M), listing.stdout
    told = [m["message"] for m in messages(inbox) if "meet" in m["message"]]
    assert len(told) == 1 and re.fullmatch(r"job meet finished on 3 nodes in \d+s", told[0]), told
    laptop.fab("jobs")
    assert len([m for m in messages(inbox) if "meet" in m["message"]]) == 1


def test_a_job_outlives_fab_and_stops(cluster, healthy):
    """fab launch --follow killed while it follows: the job runs on; fab stop ends it on every node."""
    laptop, sb, _ = cluster
    follow = subprocess.Popen(sb.laptop_cmd(FAB, "launch", "--follow", "--name", "long",
                                            "echo up; sleep 300", env=laptop.env),
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in follow.stdout:
        if line.startswith("rental") and line.rstrip().endswith("| up"):
            break
    follow.send_signal(signal.SIGKILL)
    follow.wait()
    job = jobs_json(laptop)["long"]
    assert job["state"] == "running" and job["watchdog"] == "running", job
    for nid in range(3):
        assert node_sh(sb, nid, "pgrep -fx 'sleep 300'").returncode == 0
    started = time.monotonic()
    r = laptop.fab("stop", "long")
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - started < 15
    assert rows(r.stdout, "stop") == {f"rental{n}": ("changed", "stopped: its processes are gone") for n in range(3)}
    for nid in range(3):
        assert node_sh(sb, nid, "pgrep -fx 'sleep 300'").returncode == 1  # gone, on every node
    job = jobs_json(laptop)["long"]
    assert job["state"] == "stopped" and job["watchdog"] == "ended", job
    assert {p["stopped"] for p in job["nodes"].values()} == {"by fab stop"}
    again = laptop.fab("stop", "long")  # a finished job: nothing to do, still ok
    assert again.returncode == 0 and {d for _, d in rows(again.stdout, "stop").values()} == {"had ended already"}


FAILS = 'if [ "$MULTINODE_NODE" = rental1 ]; then sleep 1; exit 3; fi; sleep 300'


def test_a_failing_rank_stops_its_peers(cluster, healthy):
    laptop, sb, inbox = cluster
    r = laptop.fab("launch", "--name", "fails", FAILS)
    assert r.returncode == 0, r.stdout + r.stderr
    job = wait_for(laptop, "fails", lambda j: j["ended"], seconds=30)
    assert job["state"] == "failed: rental1 exited 3" and job["first_failure"] == {"node": "rental1", "what": "exited 3"}
    nodes = job["nodes"]
    assert [nodes[f"rental{n}"]["state"] for n in range(3)] == ["stopped", "failed 3", "stopped"]
    assert max(nodes[a]["ended"] for a in ("rental0", "rental2")) - nodes["rental1"]["ended"] < 3  # within seconds
    assert nodes["rental0"]["stopped"] == "rental1 failed 3"
    assert re.search(r"^fails .*stopped\s+failed 3\s+stopped\s+failed: rental1 exited 3$", laptop.fab("jobs").stdout, re.M)
    assert "job fails failed: rental1 exited 3" in [m["message"] for m in messages(inbox)]
    # --keep-going: the others run on, and the job says who failed.
    kept = laptop.fab("launch", "--name", "kept", "--keep-going", FAILS)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    job = wait_for(laptop, "kept", lambda j: j["first_failure"], seconds=30)
    assert job["state"] == "running (rental1 exited 3)", job
    assert [job["nodes"][f"rental{n}"]["state"] for n in range(3)] == ["running", "failed 3", "running"]
    assert laptop.fab("stop", "kept").returncode == 0


def test_a_node_lost_mid_job(cluster, healthy):
    """rental2 drops off the network (both links down: the machine is gone for all anyone can tell):
    the head's watchdog finds it lost and stops the others; jobs says so. Then rental1's job vanishes
    (its processes killed, its sshd gone): lost too."""
    laptop, sb, inbox = cluster
    assert laptop.fab("launch", "--name", "gone", "echo up; sleep 300").returncode == 0
    follow = subprocess.Popen(sb.laptop_cmd(FAB, "logs", "gone", "--follow", env=laptop.env), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # following every node
    for ifname in ("eth0", "ens7"):
        sb.exec(2, "ip", "link", "set", ifname, "down")
    # The follow ends by itself: rental2's stream (its link dead) is let go once the watchdog has its verdict.
    out, err = follow.communicate(timeout=60)
    assert follow.returncode == 1 and "rental0 | up" in out, out + err
    assert "job gone failed: rental2 lost" in err and "rental2  198.18.0.12  logs: job gone: lost" in err, err
    job = wait_for(laptop, "gone", lambda j: j["ended"], seconds=40)
    assert job["state"] == "failed: rental2 lost", job
    assert [job["nodes"][f"rental{n}"]["state"] for n in range(3)] == ["stopped", "stopped", "lost"]
    assert job["nodes"]["rental0"]["stopped"].startswith("rental2 lost no answer for 4s")
    assert "job gone failed: rental2 lost" in [m["message"] for m in messages(inbox)]
    for ifname in ("eth0", "ens7"):
        sb.exec(2, "ip", "link", "set", ifname, "up")
    assert laptop.fab("stop", "gone").returncode == 0  # rental2's rank never heard: it is stopped now
    assert node_sh(sb, 2, "pgrep -fx 'sleep 300'").returncode == 1

    assert laptop.fab("launch", "--name", "vanish", "sleep 300").returncode == 0
    sb.stop_sshd(1)
    node_sh(sb, 1, "pkill -KILL -f 'jobs/vanish/job[.]sh supervise'; pkill -KILL -fx 'sleep 300'")  # [.]: not this bash
    sb.start_sshd(1)
    job = wait_for(laptop, "vanish", lambda j: j["ended"], seconds=30)
    assert job["state"] == "failed: rental1 lost" and job["nodes"]["rental1"]["state"] == "lost", job


def test_refusals_start_nothing(cluster, healthy):
    laptop, sb, _ = cluster
    for args, said in ((["  "], "launch needs a command"), (["--name", "a b", "true"], "bad job name 'a b'"),
                       (["--name", "../x", "true"], "bad job name '../x'"),
                       (["--nodes", "rental7", "true"], "bad --nodes 'rental7': not a node of this cluster")):
        r = laptop.fab("launch", *args)
        assert r.returncode == 2 and said in r.stderr and r.stdout == "", (args, r.stdout, r.stderr)
    assert laptop.fab("launch", "--name", "busy", "--nodes", "rental1,rental2", "sleep 300").returncode == 0
    again = laptop.fab("launch", "--name", "busy", "true")
    assert again.returncode == 2 and "rental1: a job 'busy' is running there" in again.stderr, again.stderr
    assert laptop.fab("stop", "busy").returncode == 0
    sb.stop_sshd(2)
    down = laptop.fab("launch", "--name", "partial", "sleep 300")
    assert down.returncode == 2 and "launch refused, nothing was started" in down.stderr, down.stdout + down.stderr
    assert "rental2: connection refused by 198.18.0.12" in down.stderr
    for nid in (0, 1):
        assert node_sh(sb, nid, "ls ~/.cache/multinode/jobs/ | grep partial").stdout == ""


def test_torchrun_gets_its_options_from_the_environment(cluster, healthy):
    """--torchrun with a stand-in torch (tests/fake_torch: its run.py takes no option at all) and two fake
    GPUs a node: six ranks meet, each with torchrun's variables; no rank in any command line."""
    laptop, sb, _ = cluster
    for nid, node in enumerate(sb.nodes):
        shutil.copytree(ROOT / "tests/fake_torch/torch", Path(node["root"]) / SITE.lstrip("/") / "torch",
                        dirs_exist_ok=True)
        sb.exec(nid, "chown", "-R", f"{node['user']}:", f"{SITE}/torch")
        sb.fake_gpus(nid, 2)
    try:
        with Sampler(sb) as sampler:
            r = laptop.fab("launch", "--torchrun", "--name", "torch", "--follow", "rdv.py 1", timeout=120)
    finally:
        for nid in range(3):
            sb.fake_gpus(nid, 0)
            sb.exec(nid, "rm", "-rf", f"{SITE}/torch")
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in range(6):
        env = re.search(rf"^rental{rank // 2} \| ENV NODE_RANK={rank // 2} .* RANK={rank} .*$", r.stdout, re.M)
        assert env and f"LOCAL_RANK={rank % 2} WORLD_SIZE=6 " in env.group(0), r.stdout
    assert "rental0 | MET rank 0 met [1, 2, 3, 4, 5]" in r.stdout
    assert "\njob torch finished on 3 nodes in " in r.stdout
    assert any(argv.endswith("python -m torch.distributed.run rdv.py 1") for argv in sampler.seen), sampler.seen
    assert leaks(sampler.seen) == []


def test_teardown_stops_the_jobs_and_removes_their_output(cluster, healthy):
    """Last: it gives the cluster back. A running job is stopped, every job's directory goes (the output
    `meet` printed holds a secret): teardown's proof finds nothing left."""
    laptop, sb, _ = cluster
    assert laptop.fab("launch", "--name", "last", "sleep 300").returncode == 0
    node_sh(sb, 2, "pkill -KILL -f 'jobs/last/job[.]sh supervise'")  # rental2's part: its supervisor gone, it runs on
    assert node_sh(sb, 0, "grep -l ANTHROPIC_API_KEY= ~/.cache/multinode/jobs/meet/output.log").returncode == 0
    dry = laptop.fab("teardown", "--dry-run")
    assert "; the jobs (fab launch): their processes, each process group (stopped), and their directories, output " \
           "included" in rows(dry.stdout, "teardown")["rental1"][1]
    r = laptop.fab("teardown", "--yes", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr  # its proof: no secret value left anywhere, job output included
    for nid in range(3):
        assert rows(r.stdout, "teardown")[f"rental{nid}"][0] == "changed"
        left = node_sh(sb, nid, "pgrep -af 'sleep 30[0]|job[.]sh|watch[.]sh'")
        assert left.returncode == 1, left.stdout + node_sh(sb, nid, "ps -eo pid,ppid,pgid,etimes,args").stdout
        assert node_sh(sb, nid, "test -e ~/.cache/multinode/jobs").returncode == 1
