"""End to end: setup from nothing, verify, notify to a real HTTP receiver; a rerun.

The sandbox forge's dotfiles own ~/.bashrc (with Debian's non-interactive
guard), ~/.profile, ~/.gitconfig, ~/.ssh/config and ~/.tmux.conf; node 2 is
a root-only container (no sudo, no Docker), as RunPod and Vast.ai rent.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SECRETS, node_sh
from tests.test_hostkeys_users_e2e import accepted, rows

PORT = 8099
USERS = ["ubuntu", "user", "root"]  # node 2: a root-only container
# What multinode manages on a node, and what the dotfiles own there: a rerun changes none of them.
NODE_FILES = [
    "~/.env", "~/key.txt", "~/.config/chezmoi/chezmoi.toml", "~/.secret", "~/.bashrc", "~/.profile", "~/.gitconfig",
    "~/.ssh/config", "~/.tmux.conf", "~/.dotfiles-onchange.log", "~/.ssh/multinode_cluster", "~/.ssh/authorized_keys",
    "~/.ssh/multinode_config", "~/.ssh/multinode_known_hosts", "~/.config/multinode/nccl.env", "/etc/hosts",
    "/etc/environment", "/etc/nccl.conf", "/etc/gitconfig", "/etc/group", "~/.cache/multinode/dotfiles.seal",
]
# Every process the nodes run for the user: the tmux servers and their panes, Ray's.
PROCESSES = "(pgrep -x tmux: server; pgrep -x raylet; pgrep -x gcs_server; tmux list-panes -a -F '#{pane_pid}') | sort"


def node_state(sb, nid):
    files = " ".join(f for f in NODE_FILES if nid == 0 or "multinode_" not in f)
    return node_sh(sb, nid, f"cd ~ && stat -c '%n %a %Y' {files} 2>&1; sha256sum {files} 2>&1; {PROCESSES}").stdout


@pytest.fixture
def cluster(make_sandbox):
    sb, laptop = make_sandbox("mnsetup", USERS, containers=(2,))
    inbox = laptop.home / "inbox.jsonl"
    receiver = subprocess.Popen(sb.laptop_cmd("python3", str(ROOT / "tests/receiver.py"), str(PORT), str(inbox)))
    laptop.env.update(SECRETS)
    laptop.configure(**sb.forge.config(), log_dir=str(laptop.home / "logs"),
                     notify={"urls": [f"json://127.0.0.1:{PORT}/"], "desktop": False},
                     setup={"bandwidth": True, "smoke": True})
    time.sleep(0.5)
    yield sb, laptop, inbox
    receiver.kill()


# Run on the head: what a Ray task pinned to each node sees of the NCCL/Gloo environment.
RAY_ENV = """
import json, os, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=0)
def env():
    return [os.environ.get(k) for k in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "NCCL_IB_DISABLE")]
nodes = [n for n in ray.nodes() if n["Alive"]]
got = ray.get([env.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
               for n in nodes])
print(json.dumps(dict(zip([n["NodeManagerAddress"] for n in nodes], got))))
"""


def messages(inbox):
    return [json.loads(line) for line in Path(inbox).read_text().splitlines()] if Path(inbox).exists() else []


def test_setup_verify_notify(cluster):
    sb, laptop, inbox = cluster
    r = laptop.fab("-H", sb.hosts, "setup", "--tail", "3", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [accepted(sb, n) for n in range(3)] == [1, 1, 1]  # one login per node for the whole setup
    report = r.stdout[r.stdout.index("\nCluster\n"):]
    for nid, user in enumerate(USERS):
        assert re.search(rf"rental{nid}  198\.18\.0\.1{nid}  198\.19\.0\.1{nid}  ens7 +{user} +ok", report), report
    assert "  ssh rental0\n" in report and "ssh -t rental0 'tmux attach -t multinode'" in report
    assert "ssh rental0 '/workspace/workspace/venv/bin/ray status'" in report
    # multinode.setup asked for the bandwidth ring and the smoke test: run, every node ok.
    assert [s for s, _ in rows(r.stdout, "bandwidth").values()] == ["ok"] * 3
    assert [s for s, _ in rows(r.stdout, "smoke-ray").values()] == ["ok"] * 3
    assert "smoke: torch part skipped: torch is not in the workspace venv" in r.stdout
    assert [(m["title"], m["message"], m["type"]) for m in messages(inbox)] == [
        ("Cluster Ready", "3 node(s) setup and verified", "success")]
    for value in SECRETS.values():
        assert value not in r.stdout + r.stderr
    # Every applicable check passes, chezmoi verify included; the container has no Docker.
    table = r.stdout[r.stdout.index("\ncheck "):r.stdout.index("\nCluster\n")]
    assert "✗" not in table
    assert re.search(r"^dotfiles +✓ +✓ +✓$", table, re.M) and re.search(r"^docker +✓ +✓ +–$", table, re.M)
    for check in ("nccl", "nccl-tmux", "nccl-ray"):
        assert re.search(rf"^{check} +✓ +✓ +✓$", table, re.M), table
    log2 = (laptop.home / "logs/setup_rental2.log").read_text()
    assert "STEP docker skipped no docker, and no systemd to run its daemon (a container?)" in log2
    assert "sudo" not in log2.lower().replace("no sudo", "")

    # The NCCL/Gloo environment reaches what trains: a plain ssh command (past the
    # dotfiles' "not interactive: return" guard), a new tmux pane, a Ray task on each node.
    for nid in range(3):
        env = laptop.ssh(f"rental{nid}", "env").stdout
        assert "NCCL_SOCKET_IFNAME=ens7\n" in env and "GLOO_SOCKET_IFNAME=ens7\n" in env, env
        pane = node_sh(sb, nid, "tmux new-window -d -t exec 'env >~/pane.env'; sleep 1; cat ~/pane.env; rm ~/pane.env")
        assert "NCCL_SOCKET_IFNAME=ens7\n" in pane.stdout and "GLOO_SOCKET_IFNAME=ens7\n" in pane.stdout
        # ... and none of the bootstrap's own settings (a pane's git may ask for a passphrase).
        assert "GIT_TERMINAL_PROMPT" not in pane.stdout and "GIT_SSH_COMMAND" not in pane.stdout
    seen = node_sh(sb, 0, f"/workspace/workspace/venv/bin/python -c '{RAY_ENV}'")
    assert json.loads(seen.stdout.strip().splitlines()[-1]) == {
        f"198.19.0.1{n}": ["ens7", "ens7", "1"] for n in range(3)}, seen.stderr

    # The user logs in as people do (OpenSSH records the nodes' other key types), then reruns.
    for nid in (0, 1):
        assert laptop.ssh(f"rental{nid}", "true").returncode == 0
    known = (laptop.home / ".ssh/known_hosts").read_text()
    assert known.count("\n") > 3  # RSA and ECDSA keys added beside ours
    ours = lambda snapshot: {k: v for k, v in snapshot.items() if not k.startswith(("logs/", "inbox"))}  # noqa: E731
    before = ours(laptop.snapshot())
    nodes_before = [node_state(sb, n) for n in range(3)]
    again = laptop.fab("setup", "--tail", "0", timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert {s for s, _ in rows(again.stdout, "hostkeys").values()} == {"ok"}
    assert rows(again.stdout, "bootstrap") == {f"rental{n}": ("ok", "13 steps, changed: none") for n in range(3)}
    for nid in range(3):
        steps = [ln.split()[1:3] for ln in (laptop.home / f"logs/setup_rental{nid}.log").read_text().splitlines()
                 if ln.startswith("STEP ")]
        assert len(steps) == 13 and {status for _, status in steps} <= {"ok", "skipped"}, steps
    assert rows(again.stdout, "head-ssh")["rental0"][0] == "ok" and rows(again.stdout, "tmux")["rental0"][0] == "ok", again.stdout
    assert ours(laptop.snapshot()) == before
    assert [node_state(sb, n) for n in range(3)] == nodes_before

    v = laptop.fab("verify")
    assert v.returncode == 0, v.stdout + v.stderr
    table = v.stdout[v.stdout.index("\ncheck "):]
    assert "✗" not in table and table.count("✓") >= 60
    assert "ray-cluster" in table and "age-recipient" in table and "env:ANTHROPIC_API_KEY" in table

    sb.exec(2, "rm", "/root/key.txt")
    bad = laptop.fab("verify")
    assert bad.returncode == 1
    assert "✗ rental2 age-key: ~/key.txt is missing or not 0600" in bad.stdout
    assert "✗ rental2 decrypt: an encrypted dotfile does not decrypt with ~/key.txt" in bad.stdout
    assert rows(bad.stdout, "verify")["rental2"][0] == "FAILED"
    assert rows(bad.stdout, "verify")["rental0"][0] == "ok"
    js = laptop.fab("verify", "--json")
    assert js.returncode == 1
    data = json.loads(js.stdout)
    assert data["ok"] is False and data["nodes"]["rental2"]["checks"]["age-key"]["status"] == "fail"
    assert data["nodes"]["rental1"]["checks"]["age-key"]["status"] == "ok"
    assert data["nodes"]["rental0"]["checks"]["ray-cluster"] == {"status": "ok", "reason": ""}
    # Our chezmoi config names ~/key.txt: chezmoi verify passing decrypted every encrypted dotfile with it.
    assert data["nodes"]["rental1"]["checks"]["decrypt"] == {
        "status": "ok", "reason": "chezmoi verify decrypted them with ~/key.txt (at setup; nothing changed since)"}

    urls = laptop.home / "notify-urls"
    urls.write_text(f"# a second channel, kept out of argv\njson://127.0.0.1:{PORT}/?second=1\n")
    count = len(messages(inbox))
    n = laptop.fab("notify", "--url", f"@{urls}")
    assert n.returncode == 1
    assert "notify: 2 channel(s) notified" in n.stdout and "second=1" not in n.stdout + n.stderr
    assert len(messages(inbox)) == count + 2
    last = messages(inbox)[-1]
    assert last["title"] == "Cluster NOT ready" and last["type"] == "failure"
    assert last["message"].startswith("1 of 3 node(s) failed: rental2 (verify: ") and "age-key" in last["message"]

    # A dotfile edited by hand on node 1: the next setup fails that node's dotfiles step at
    # once, naming the file (never a prompt, never an overwrite); the other nodes finish.
    node_sh(sb, 1, "echo 'alias gs=\"git status\"' >>~/.bashrc")
    edited = node_sh(sb, 1, "sha256sum ~/.bashrc").stdout
    start = time.monotonic()
    r = laptop.fab("setup", "--tail", "0", timeout=120)
    assert time.monotonic() - start < 30, "the dotfiles step waited"
    assert r.returncode == 1
    got = rows(r.stdout, "bootstrap")
    assert got["rental1"] == ("FAILED", "node script exited 1; failed step(s): dotfiles "
                                        f"(log: {laptop.home / 'logs/setup_rental1.log'})")
    assert got["rental0"] == ("ok", "13 steps, changed: none") and got["rental2"][0] == "changed"  # key.txt back
    log = (laptop.home / "logs/setup_rental1.log").read_text()
    assert "STEP dotfiles failed exit 1: changed on this node since chezmoi wrote it: ~/.bashrc. " in log
    assert "multinode.dotfiles.overwrite" in log
    assert node_sh(sb, 1, "sha256sum ~/.bashrc").stdout == edited
    assert rows(r.stdout, "tmux")["rental0"][0] == "ok"  # the session is kept: a failing node does not rebuild it
    assert "rental1  198.18.0.11  bootstrap: node script exited 1; failed step(s): dotfiles" in r.stdout

    # Node 1 comes back with another host key (reinstalled, or someone in between): setup refuses
    # it in hostkeys, before any login, so none of its secrets is sent; the others finish.
    node_sh(sb, 1, "chezmoi apply --force ~/.bashrc || ~/.local/bin/chezmoi apply --force ~/.bashrc")
    sb.rekey(1)
    logins = accepted(sb, 1)
    r = laptop.fab("setup", "--tail", "0", timeout=120)
    assert r.returncode == 1
    status, detail = rows(r.stdout, "hostkeys")["rental1"]
    assert status == "FAILED" and detail.startswith("host key of 198.18.0.11 changed: multinode pinned 256 SHA256:")
    assert "fab hostkeys --reinstalled rental1" in detail
    assert rows(r.stdout, "bootstrap")["rental1"] == ("skipped", "failed earlier in hostkeys")
    assert rows(r.stdout, "bootstrap")["rental0"][0] == "ok"
    assert accepted(sb, 1) == logins  # never logged in to: nothing staged there
    ok = laptop.fab("setup", "--reinstalled", "rental1", "--tail", "0", timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    # Ray gone on node 1: the head's ray-cluster check fails (the query bootstrap waits with, without waiting).
    stopped = node_sh(sb, 1, "/workspace/workspace/venv/bin/ray stop --force")
    assert stopped.returncode == 0, stopped.stderr
    deadline = time.time() + 90  # until the GCS's health checks mark the node dead
    while True:
        ray = json.loads(laptop.fab("verify", "--json").stdout)["nodes"]["rental0"]["checks"]["ray-cluster"]
        if ray["status"] == "fail" or time.time() > deadline:
            break
        time.sleep(2)
    assert ray == {"status": "fail", "reason": "Ray on the head does not list every node"}


def test_verify_reaches_each_node_once(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    before = [accepted(sb, n) for n in range(3)]
    laptop.fab("verify")
    assert [accepted(sb, n) - before[n] for n in range(3)] == [1, 1, 1]


SEALED = "chezmoi verify passed at setup; nothing it compared changed since"


def test_verify_keeps_setups_chezmoi_verify_until_something_it_compared_changes(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600).returncode == 0

    def dotfiles(*flags):
        r = laptop.fab("verify", "--json", *flags)
        return [(c["dotfiles"]["status"], c["dotfiles"]["reason"])
                for c in (json.loads(r.stdout)["nodes"][f"rental{n}"]["checks"] for n in range(3))]

    assert dotfiles() == [("ok", SEALED)] * 3  # no chezmoi run: setup's verdict, nothing changed since
    assert dotfiles("--full") == [("ok", "")] * 3  # chezmoi asked again
    # Node 0: a new file beside managed ones (in ~ and in the dotfiles' ~/.ssh) changes nothing chezmoi
    # compares. Node 1: ~/.bashrc touched, same content: chezmoi is asked again, and passes. Node 2:
    # ~/.profile's first byte replaced, its size and mtime put back: the ctime gives it away.
    node_sh(sb, 0, "touch ~/.ssh/known_hosts_other ~/notes.txt")
    node_sh(sb, 1, "touch ~/.bashrc")
    edit = node_sh(sb, 2, "cp -p ~/.profile /tmp/profile && printf x | dd of=$HOME/.profile bs=1 conv=notrunc status=none"
                          " && touch -r /tmp/profile ~/.profile && stat -c '%s %Y' /tmp/profile ~/.profile && head -c1 ~/.profile")
    assert edit.stdout.splitlines()[0] == edit.stdout.splitlines()[1] and edit.stdout.endswith("x"), edit.stdout
    try:
        assert dotfiles() == [("ok", SEALED), ("ok", ""), ("fail", "chezmoi verify: dotfiles differ from the repository")]
    finally:
        node_sh(sb, 0, "rm -f ~/.ssh/known_hosts_other ~/notes.txt")
        node_sh(sb, 2, "cp -p /tmp/profile ~/.profile")
    # The next bootstrap seals node 1's again (nothing to apply: every step ok).
    r = laptop.fab("bootstrap", "--tail", "0", timeout=300)
    assert rows(r.stdout, "bootstrap")["rental1"] == ("ok", "13 steps, changed: none"), r.stdout
    assert dotfiles()[1] == ("ok", SEALED)


def test_a_checklist_killed_midway_fails_verify(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600).returncode == 0
    # On node 1, the checklist's `git` kills the checklist itself (as an OOM kill or a crash would).
    node_sh(sb, 1, "mkdir -p ~/.local/bin && printf '#!/bin/sh\\nkill -9 $PPID\\n' >~/.local/bin/git && chmod +x ~/.local/bin/git")
    try:
        r = laptop.fab("verify", "--json")
    finally:
        node_sh(sb, 1, "rm -f ~/.local/bin/git")
    assert r.returncode == 1, r.stdout + r.stderr
    data = json.loads(r.stdout)
    checks = data["nodes"]["rental1"]["checks"]
    assert checks["checklist"]["status"] == "fail" and "the checklist stopped early (exit " in checks["checklist"]["reason"]
    assert checks["workspace"]["status"] == "ok"  # what ran before
    assert checks["tmux-exec"]["status"] == "fail"
    assert checks["tmux-exec"]["reason"].startswith("no result: the checklist stopped early (exit ")
    assert data["nodes"]["rental1"]["failed"] is not None
    assert data["ok"] is False


def test_gpu_rows_and_consistency_across_nodes(configured, healthy):
    """Fake nvidia-smi on every node: the GPU rows, then a node one GPU short and a node with another driver."""
    laptop, sb = configured, healthy
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"]["gpu"] = {"count": 8, "model": "H100"}
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    try:
        for nid in range(3):
            sb.fake_gpus(nid, 8)
        assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
        data = json.loads(laptop.fab("verify", "--json").stdout)["nodes"]
        for nid in range(3):
            checks = data[f"rental{nid}"]["checks"]
            assert checks["gpu-count"] == {"status": "ok", "reason": "8 x NVIDIA H100 80GB HBM3, 81559 MiB"}
            assert checks["gpu-driver"] == {"status": "ok", "reason": "550.54.15, CUDA 12.4"}
            assert checks["gpu-ecc"]["status"] == "ok" and checks["consistent"]["status"] == "ok"
            assert data[f"rental{nid}"]["facts"]["driver"] == "550.54.15"

        sb.fake_gpus(2, 7)  # a GPU fell off the bus
        sb.fake_gpus(1, 8, driver="535.104.05", ecc=3)
        r = laptop.fab("verify")
        assert r.returncode == 1
        assert "✗ rental2 gpu-count: 7 GPU(s), 8 expected (multinode.gpu.count)" in r.stdout
        assert "✗ rental1 consistent: differs from the head: driver 535.104.05 (head: 550.54.15)" in r.stdout
        assert "✗ rental1 gpu-ecc: uncorrected ECC errors on GPU 0: 3 (reset or replace it)" in r.stdout
        table = r.stdout[r.stdout.index("consistency (against the head)"):]
        assert re.search(r"^rental1 .*✗ 535\.104\.05", table, re.M) and re.search(r"^rental2 .*✗ 7 x NVIDIA", table, re.M)
        assert "✗ rental0 gpu" not in r.stdout and "✗ rental0 consistent" not in r.stdout  # the head, as it was
    finally:
        for nid in range(3):
            sb.fake_gpus(nid, 0)


def test_every_pair_of_nodes_is_checked_and_a_cut_link_is_named(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    sb.cut(1, 2)  # rental2 has no route back to rental1: the link is gone both ways
    try:
        r = laptop.fab("verify")
    finally:
        sb.cut(1, 2, cut=False)
    section = r.stdout[r.stdout.index("private network: unreachable pairs"):].split("\n\n")[0].splitlines()[1:]
    assert sorted(line.strip() for line in section) == [
        "rental1 -> rental2 (198.19.0.12): timeout", "rental2 -> rental1 (198.19.0.11): no route"]
    assert "✗ rental1 pairs: -> rental2: timeout" in r.stdout and "✗ rental2 pairs: -> rental1: no route" in r.stdout
    assert "✗ rental0 pairs" not in r.stdout
    after = json.loads(laptop.fab("verify", "--json").stdout)["nodes"]
    assert all(after[f"rental{n}"]["checks"]["pairs"]["status"] == "ok" for n in range(3))


def test_bandwidth_ring_over_the_private_network(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    r = laptop.fab("bandwidth", "--seconds", "1", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = rows(r.stdout, "bandwidth")
    for nid in range(3):
        status, detail = got[f"rental{nid}"]
        nxt = (nid + 1) % 3
        m = re.fullmatch(rf"-> rental{nxt} \(198\.19\.0\.1{nxt}\): (\d+\.\d+) Gbit/s", detail)
        assert status == "ok" and m and float(m.group(1)) > 0, detail
    assert re.search(r"^bandwidth: slowest link rental\d -> rental\d: \d+\.\d+ Gbit/s over 1 s$", r.stdout, re.M)
    # Every pair, both ways: a matrix of the six links.
    pairs = laptop.fab("bandwidth", "--all-pairs", "--seconds", "0.3", timeout=120)
    assert pairs.returncode == 0, pairs.stdout + pairs.stderr
    matrix = pairs.stdout[pairs.stdout.index("bandwidth, every pair"):].splitlines()[1:5]
    assert matrix[0].split() == ["Gbit/s", "->", "rental0", "->", "rental1", "->", "rental2"]
    for nid, line in enumerate(matrix[1:]):
        cells = line.split()
        assert cells[0] == f"rental{nid}" and len(cells) == 3 and all(float(c) > 0 for c in cells[1:]), line
    # A floor no link reaches: every sending node fails, naming its link.
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"]["network"] = {"min_gbits": 9999}
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    slow = laptop.fab("bandwidth", "--seconds", "0.5", timeout=120)
    assert slow.returncode == 1
    assert all(s == "FAILED" and "below multinode.network.min_gbits 9999" in d for s, d in rows(slow.stdout, "bandwidth").values())
    assert laptop.fab("bandwidth", "--seconds", "0").returncode == 2
