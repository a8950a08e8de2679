"""End to end: setup from nothing, verify, notify to a real HTTP receiver."""

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, SECRETS, USERS, node_sh
from tests.test_hostkeys_users_e2e import accepted, rows

PORT = 8099


@pytest.fixture
def cluster(make_sandbox):
    sb, laptop = make_sandbox("mnsetup", USERS)
    inbox = laptop.home / "inbox.jsonl"
    receiver = subprocess.Popen(sb.laptop_cmd("python3", str(ROOT / "tests/receiver.py"), str(PORT), str(inbox)))
    laptop.env.update(SECRETS)
    laptop.configure(**sb.forge.config(), log_dir=str(laptop.home / "logs"),
                     notify={"urls": [f"json://127.0.0.1:{PORT}/"], "desktop": False})
    time.sleep(0.5)
    yield sb, laptop, inbox
    receiver.kill()


def messages(inbox):
    return [json.loads(line) for line in Path(inbox).read_text().splitlines()] if Path(inbox).exists() else []


def test_setup_verify_notify(cluster):
    sb, laptop, inbox = cluster
    r = laptop.fab("-H", sb.hosts, "setup", "--tail", "3", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [accepted(sb, n) for n in range(3)] == [1, 1, 1]  # one login per node for the whole setup
    report = r.stdout[r.stdout.index("\nCluster\n"):]
    for nid, user in enumerate(USERS):
        assert f"rental{nid}  198.18.0.1{nid}  198.19.0.1{nid}  {user:<6}  ok" in report
    assert "  ssh rental0\n" in report and "ssh -t rental0 'tmux attach -t multinode'" in report
    assert "ssh rental0 '/workspace/workspace/venv/bin/ray status'" in report
    assert [(m["title"], m["message"], m["type"]) for m in messages(inbox)] == [
        ("Cluster Ready", "3 node(s) setup and verified", "success")]
    for value in SECRETS.values():
        assert value not in r.stdout + r.stderr

    v = laptop.fab("verify")
    assert v.returncode == 0, v.stdout + v.stderr
    table = v.stdout[v.stdout.index("\ncheck "):]
    assert "✗" not in table and table.count("✓") >= 60
    assert "ray-cluster" in table and "age-recipient" in table and "env:ANTHROPIC_API_KEY" in table

    sb.exec(2, "rm", "/home/ubuntu/key.txt")
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

    n = laptop.fab("notify")
    assert n.returncode == 1
    last = messages(inbox)[-1]
    assert last["title"] == "Cluster NOT ready" and last["type"] == "failure"
    assert last["message"].startswith("1 of 3 node(s) failed: rental2 (verify: ") and "age-key" in last["message"]

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
