"""End to end: Ray across the sandbox nodes, NCCL networking, head-ssh, tmux.

Ray runs for real over the nodes' private network, installed into the
workspace venv from the forge's wheelhouse, kept small by its start flags.
"""

import json
import shlex
import time

from tests.conftest import node_sh
from tests.test_hostkeys_users_e2e import rows

VENV = "/workspace/workspace/venv/bin"

NCCL_ENV = "NCCL_SOCKET_IFNAME=ens7\nGLOO_SOCKET_IFNAME=ens7\nNCCL_IB_DISABLE=1\n"


def ray_pids(sb, nid):
    return node_sh(sb, nid, "pgrep -x raylet; pgrep -x gcs_server || true").stdout.split()


def test_ray_nccl_head_ssh_and_tmux(configured, healthy):
    laptop, sb = configured, healthy
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", "head-ssh", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "===" not in r.stdout  # --tail 0: no log section for a node that succeeded
    assert rows(r.stdout, "ray")["rental0"] == ("ok", "3 of 3 node(s) in the Ray cluster")

    # `ray status` (the autoscaler's view) catches up with the GCS within seconds.
    deadline = time.time() + 60
    while True:
        status = node_sh(sb, 0, f"{VENV}/ray status --address 198.19.0.10:6379")
        if status.stdout.count(" node_") == 3 or time.time() > deadline:
            break
        time.sleep(2)
    assert status.stdout.count(" node_") == 3, status.stdout + status.stderr
    # The head's member query asks the GCS directly (no `import ray`); where that cannot answer (here: a
    # method the GCS does not have), Ray's own client answers, the same.
    from multinode.raycluster import RAY_MEMBERS

    direct = node_sh(sb, 0, f"{VENV}/python -I -c {shlex.quote(RAY_MEMBERS)} 198.19.0.10:6379 0 198.19.0.11")
    forced = RAY_MEMBERS.replace("NodeInfoGcsService/GetAllNodeInfo", "NodeInfoGcsService/NoSuchMethod")
    via_ray = node_sh(sb, 0, f"{VENV}/python -I -c {shlex.quote(forced)} 198.19.0.10:6379 0 198.19.0.11")
    assert direct.returncode == 0 and "asking Ray" not in direct.stderr, direct.stdout + direct.stderr
    assert via_ray.returncode == 0 and "asking Ray" in via_ray.stderr, via_ray.stdout + via_ray.stderr
    members = '["198.19.0.10", "198.19.0.11", "198.19.0.12"]'
    assert direct.stdout.split("RAY_MEMBERS ")[-1].strip() == via_ray.stdout.split("RAY_MEMBERS ")[-1].strip() == members
    # fab smoke: a Ray task pinned to each node reports its host and what NCCL/Gloo will use there.
    smoke = laptop.fab("smoke")
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr
    assert rows(smoke.stdout, "smoke-ray") == {
        f"rental{n}": ("ok", f"node{n}: 0 GPU(s) from Ray, GLOO_SOCKET_IFNAME=ens7 NCCL_IB_DISABLE=1 "
                             "NCCL_SOCKET_IFNAME=ens7") for n in range(3)}
    assert ("smoke: torch part skipped: torch is not in the workspace venv (add it to your repo's requirements "
            "to run the all-reduce)") in smoke.stdout
    # GPUs expected that Ray cannot give a task: each node fails, named with what Ray gave.
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"]["gpu"] = {"count": 8}
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    short = laptop.fab("smoke", "--timeout", "20")
    del config["multinode"]["gpu"]
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    assert short.returncode == 1
    assert rows(short.stdout, "smoke-ray") == {
        f"rental{n}": ("FAILED", f"Ray gives a task 0 GPU(s) on node{n}, 8 expected (multinode.gpu.count)")
        for n in range(3)}
    for nid in range(3):
        sessions = node_sh(sb, nid, "tmux list-sessions -F '#S'").stdout.split()
        assert {"exec", "ray"} <= set(sessions)
        assert NCCL_ENV in sb.exec(nid, "cat", "/etc/environment").stdout
        assert "NCCL_SOCKET_IFNAME=ens7\n" in sb.exec(nid, "cat", "/etc/nccl.conf").stdout
        assert "NCCL" not in node_sh(sb, nid, "cat ~/.bashrc").stdout  # the user's dotfiles' file

    # head-ssh: workers by alias over the private network, strict host keys.
    for nid in (1, 2):
        assert rows(r.stdout, "head-ssh")[f"rental{nid}"] == ("ok", f"rental0 -> worker{nid} (198.19.0.1{nid}): node{nid}")
    hop = node_sh(sb, 0, "ssh -F ~/.ssh/multinode_config -v worker2 hostname")
    assert hop.stdout == "node2\n", hop.stderr
    assert "kex: algorithm: curve25519-sha256\n" in hop.stderr  # head_ssh.kex_algorithms, not sntrup761
    # The head's own ~/.ssh/config (the dotfiles') says `Host *: StrictHostKeyChecking no,
    # UserKnownHostsFile /dev/null`; the worker aliases we use stay strict all the same.
    assert "StrictHostKeyChecking no" in node_sh(sb, 0, "cat ~/.ssh/config").stdout
    alias = node_sh(sb, 0, "ssh -F ~/.ssh/multinode_config -G worker1").stdout.splitlines()
    assert "stricthostkeychecking true" in alias and "batchmode yes" in alias and "forwardagent no" in alias
    assert "userknownhostsfile /home/ubuntu/.ssh/multinode_known_hosts" in alias and "hostname 198.19.0.11" in alias
    # A plain `ssh worker2` works through the system drop-in (which must never break the head's ssh).
    assert node_sh(sb, 0, "ssh worker2 hostname").stdout == "node2\n"
    assert node_sh(sb, 0, "ssh -G localhost").returncode == 0

    # A second bootstrap leaves the running, joined Ray alone.
    before = [ray_pids(sb, n) for n in range(3)]
    again = laptop.fab("bootstrap", "--tail", "0", timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert [ray_pids(sb, n) for n in range(3)] == before
    assert rows(again.stdout, "bootstrap") == {f"rental{n}": ("ok", "13 steps, changed: none") for n in range(3)}

    # tmux: window head, then all-nodes with a pane logged in on each node.
    t = laptop.fab("tmux", "--nodes", "3")
    assert t.returncode == 0, t.stdout + t.stderr
    assert "attach: ssh -t rental0 'tmux attach -t multinode'" in t.stdout
    windows = node_sh(sb, 0, "tmux list-windows -t multinode -F '#{window_name} #{window_panes}'").stdout
    assert windows.splitlines() == ["head 1", "all-nodes 3"]
    want = ["ubuntu@node0", "user@node1", "ubuntu@node2"]
    assert panes_on(sb, "all-nodes", want) == want
    # A rerun keeps the session and what runs in its panes; --rebuild recreates it, never duplicated.
    panes = "tmux list-panes -s -t multinode -F '#{pane_pid}'"
    before = node_sh(sb, 0, panes).stdout
    again = laptop.fab("tmux")
    assert again.returncode == 0 and rows(again.stdout, "tmux")["rental0"] == ("ok", "head (1), all-nodes (3)")
    assert node_sh(sb, 0, panes).stdout == before
    rebuilt = laptop.fab("tmux", "--rebuild")
    assert rebuilt.returncode == 0 and rows(rebuilt.stdout, "tmux")["rental0"][0] == "changed"
    assert node_sh(sb, 0, panes).stdout != before
    assert node_sh(sb, 0, "tmux list-sessions -F '#S'").stdout.split().count("multinode") == 1
    # A changed cluster (two nodes get panes): the pane of the node left out goes, the others stay.
    two = laptop.fab("tmux", "--nodes", "2")
    assert rows(two.stdout, "tmux")["rental0"] == ("changed", "head (1), all-nodes (2); removed rental2")

    # Private addresses swapped by mistake: each leads to the other machine, whose host key is
    # not the one verified for the node named; the strict proof refuses both, nothing is accepted.
    swapped = laptop.fab("-H", "198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.12,198.18.0.12:198.19.0.11", "head-ssh")
    assert swapped.returncode == 1, swapped.stdout + swapped.stderr
    for nid, private in ((1, "198.19.0.12"), (2, "198.19.0.11")):
        status, detail = rows(swapped.stdout, "head-ssh")[f"rental{nid}"]
        assert status == "FAILED" and detail.startswith(f"rental0 -> worker{nid} ({private}): that address offers "
                                                        f"another host key than the one verified for 198.18.0.1{nid}")
    assert node_sh(sb, 0, "ssh -F ~/.ssh/multinode_config worker1 hostname").returncode != 0
    # The users of that new -H were not known yet: head-ssh logged in to find them.
    config = node_sh(sb, 0, "cat ~/.ssh/multinode_config").stdout
    assert "Host worker1\n    HostName 198.19.0.12\n    User user\n" in config and "User None" not in config


def panes_on(sb, window, expected):
    """Each pane's last prompt (user@host), waiting up to 30 s for them to be ``expected``."""
    import re

    deadline = time.time() + 30
    while True:
        ids = node_sh(sb, 0, f"tmux list-panes -t multinode:{window} -F '#{{pane_id}}'").stdout.split()
        prompts = []
        for pane in ids:
            found = re.findall(r"[a-z]+@node[0-9]+", node_sh(sb, 0, f"tmux capture-pane -p -t {pane}").stdout)
            prompts.append(found[-1] if found else "")
        if prompts == expected or time.time() > deadline:
            return prompts
        time.sleep(0.5)


def test_worker_joined_to_another_head_is_restarted(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600).returncode == 0
    # node2 leaves and becomes the head of a cluster of its own.
    node_sh(sb, 2, f"tmux kill-session -t ray; {VENV}/ray stop --force; "
                   f"{VENV}/ray start --head --node-ip-address=198.19.0.12 --port=6379 --num-cpus=1 "
                   "--object-store-memory=100000000 --include-dashboard=false --disable-usage-stats")
    r = laptop.fab("bootstrap", "--tail", "0", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout, "bootstrap")["rental2"] == ("changed", "13 steps, changed: ray")
    log = (laptop.home / "logs/setup_rental2.log").read_text()
    assert "STEP ray changed restarted: was not joined to 198.19.0.10:6379; started worker on 198.19.0.12" in log
    assert rows(r.stdout, "ray")["rental0"] == ("ok", "3 of 3 node(s) in the Ray cluster")


def test_fake_infiniband_hcas_are_used(configured, healthy):
    laptop, sb = configured, healthy
    fake = "/tmp/fakesys/class/infiniband"
    for nid in range(3):
        node_sh(sb, nid, f"mkdir -p {fake}/mlx5_0/ports/1 {fake}/mlx5_1/ports/1 {fake}/mlx5_2/ports/1 && "
                         f"echo '4: ACTIVE' >{fake}/mlx5_0/ports/1/state && echo '1: DOWN' >{fake}/mlx5_1/ports/1/state"
                         f" && echo '4: ACTIVE' >{fake}/mlx5_2/ports/1/state")
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"]["nccl"] = {"sysfs_root": "/tmp/fakesys"}
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    for nid in range(3):
        environment = sb.exec(nid, "cat", "/etc/environment").stdout
        assert "NCCL_IB_HCA=mlx5_0,mlx5_2\n" in environment and "NCCL_IB_DISABLE" not in environment
        assert "NCCL_IB_HCA=mlx5_0,mlx5_2\n" in sb.exec(nid, "cat", "/etc/nccl.conf").stdout
    # What the processes that train see: a new ssh command, and Ray's workers (restarted with it).
    assert "NCCL_IB_HCA=mlx5_0,mlx5_2\n" in laptop.ssh("rental1", "env").stdout
    assert "NCCL_IB_HCA=mlx5_0,mlx5_2" in node_sh(sb, 1, "tr '\\0' '\\n' </proc/$(pgrep -x raylet)/environ").stdout
    del config["multinode"]["nccl"]
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    assert laptop.fab("bootstrap", "--tail", "0", timeout=600).returncode == 0
    assert "NCCL_IB_DISABLE=1\n" in sb.exec(0, "cat", "/etc/environment").stdout
    # The HCAs are gone from what trains, not only from the files: Ray's workers and new panes
    # carry NCCL_IB_DISABLE alone (both at once is a contradiction NCCL resolves its own way).
    raylet = node_sh(sb, 1, "tr '\\0' '\\n' </proc/$(pgrep -x raylet)/environ").stdout
    assert "NCCL_IB_DISABLE=1" in raylet and "NCCL_IB_HCA" not in raylet
    panes = node_sh(sb, 1, "tmux show-environment -g").stdout
    assert "NCCL_IB_DISABLE=1" in panes and "NCCL_IB_HCA" not in panes


def test_single_node_has_no_ray_and_no_nccl(make_sandbox):
    sb, laptop = make_sandbox("mnone", ["ubuntu"])
    laptop.configure(**sb.forge.config(), log_dir=str(laptop.home / "logs"))
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout, "bootstrap")["rental0"][0] == "changed"
    log = (laptop.home / "logs/setup_rental0.log").read_text()
    assert "STEP ray" not in log and "STEP nccl" not in log and "STEP network" not in log
    assert node_sh(sb, 0, "pgrep -x raylet || echo none").stdout == "none\n"
    assert "NCCL" not in node_sh(sb, 0, "cat ~/.bashrc").stdout + sb.exec(0, "cat", "/etc/environment").stdout
    assert sb.exec(0, "test", "-e", "/etc/nccl.conf", check=False).returncode == 1
    assert "exec" in node_sh(sb, 0, "tmux list-sessions -F '#S'").stdout.split()
    assert "head-ssh: a single node has no workers" in laptop.fab("head-ssh").stdout


def test_tmux_with_six_nodes(make_sandbox):
    sb, laptop = make_sandbox("mnsix", ["ubuntu"] * 6)
    laptop.configure(repo={"url": ""}, dotfiles={"repo": ""}, tools=[], ray={"enabled": False},
                     installers=sb.forge.config()["installers"], log_dir=str(laptop.home / "logs"),
                     head_ssh={"kex_algorithms": "bogus-kex@example.invalid,curve25519-sha256"})
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", "head-ssh", "tmux",
                   timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # A key exchange the head's ssh does not know is left out (it would break every alias).
    kex = node_sh(sb, 0, "grep -A1 '^Host worker1 worker2' ~/.ssh/multinode_config").stdout
    assert kex == "Host worker1 worker2 worker3 worker4 worker5\n    KexAlgorithms curve25519-sha256\n", kex
    again = laptop.fab("head-ssh")  # a second run changes nothing on the head
    assert again.returncode == 0 and rows(again.stdout, "head-ssh")["rental0"] == (
        "ok", "worker1..worker5 in ~/.ssh/multinode_config (plain `ssh workerK` through /etc/ssh/ssh_config.d/multinode-ubuntu.conf)")
    windows = node_sh(sb, 0, "tmux list-windows -t multinode -F '#{window_name} #{window_panes}'").stdout
    assert windows.splitlines() == ["head 1", "nodes-1 4", "nodes-2 2"]
    for window, nids in (("nodes-1", range(4)), ("nodes-2", range(4, 6))):
        want = [f"ubuntu@node{n}" for n in nids]
        assert panes_on(sb, window, want) == want
    bad = laptop.fab("tmux", "--nodes", "7")
    assert bad.returncode == 2 and "'7'" in bad.stderr

    # A worker the head cannot reach fails in head-ssh; the session is kept as it is (what runs in
    # its panes goes on); rebuilt, it leaves that pane out, the rest carry on.
    sb.stop_sshd(3)
    r = laptop.fab("head-ssh", "tmux")
    assert r.returncode == 1, r.stdout + r.stderr
    status, detail = rows(r.stdout, "head-ssh")["rental3"]
    assert status == "FAILED" and detail.startswith("rental0 -> worker3 (198.19.0.13): ") and "refused" in detail
    assert rows(r.stdout, "tmux")["rental0"] == ("ok", "head (1), nodes-1 (4), nodes-2 (2)")
    r = laptop.fab("head-ssh", "tmux", "--rebuild")
    assert rows(r.stdout, "tmux")["rental0"] == (
        "changed", "head (1), nodes-1 (4), nodes-2 (1); no pane for rental3 (failed earlier)")
    want = ["ubuntu@node0", "ubuntu@node1", "ubuntu@node2", "ubuntu@node4"]
    assert panes_on(sb, "nodes-1", want) == want
    # Failed earlier in the same run (the laptop cannot reach it either): head-ssh says it skips it.
    r = laptop.fab("hostkeys", "head-ssh")
    assert r.returncode == 1
    assert rows(r.stdout, "head-ssh")["rental3"] == ("skipped", "failed earlier in hostkeys")
    assert rows(r.stdout, "head-ssh")["rental5"][0] == "ok"


def test_a_worker_the_head_does_not_list_is_restarted_once(configured, healthy):
    """A worker whose raylet looks joined (it joined a head that restarted meanwhile) but which Ray on the
    head does not list: bootstrap restarts its Ray once, and the cluster is whole again."""
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600).returncode == 0
    # node1's Ray leaves the cluster; a stand-in "raylet" with the right flags and environment stays.
    fake = ("mkdir -p /tmp/stale && printf '#!/bin/bash\\nsleep 600\\n' >/tmp/stale/raylet && chmod +x /tmp/stale/raylet"
            f" && {VENV}/ray stop --force >/dev/null && tmux kill-session -t ray;"
            " set -a; . ~/.config/multinode/nccl.env; set +a;"
            " nohup /tmp/stale/raylet --gcs-address=198.19.0.10:6379 --node-ip-address=198.19.0.11 >/dev/null 2>&1 &")
    made = node_sh(sb, 1, fake)
    assert made.returncode == 0, made.stdout + made.stderr
    from multinode.raycluster import RAY_MEMBERS

    deadline = time.time() + 90  # until the head's GCS has noticed that node1's Ray is gone
    while True:
        listed = node_sh(sb, 0, f"{VENV}/python -c {shlex.quote(RAY_MEMBERS)} 198.19.0.10:6379 0").stdout
        if "198.19.0.11" not in listed.split("RAY_MEMBERS", 1)[-1]:
            break
        assert time.time() < deadline, listed
        time.sleep(2)
    r = laptop.fab("bootstrap", "--tail", "0", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(r.stdout, "ray")
    assert "rental1" in got, r.stdout
    assert got["rental1"] == ("changed", "restarted: the head did not list it; started worker on 198.19.0.11 "
                                         f"(raylet {got['rental1'][1].split('raylet ')[-1]}")
    assert got["rental0"] == ("ok", "3 of 3 node(s) in the Ray cluster")
    node_sh(sb, 1, "pkill -f /tmp/stale/raylet; rm -rf /tmp/stale")
