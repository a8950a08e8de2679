"""End to end: churn (issue 24): replace, add and remove rentals, setup of some nodes only.

One sandbox of six machines for the whole module: machines 0-3 are set up
once as rental0..rental3, machines 4 and 5 are spares; a machine that left
the cluster (wiped) may come back later as a new one. The tests run in file
order on that one cluster, each starting from where the one before left it,
and assert on the machines themselves: Ray membership, the cluster key's
``from=`` line, the aliases (the laptop's ``rentalN``, the head's ``workerN``)
reaching the right machine with strict host keys, the staying nodes' Ray and
tmux processes (same ids), the leaving machine holding no secret value.

Where each alias is, test by test (alias: machine):
  1 setup              rental0:0 rental1:1 rental2:2 rental3:3
  2 replace rental2    rental2:4                  (machine 2 wiped)
  4 add                rental4:5
  5 remove rental4                                 (machine 5 wiped)
  9 replace rental3    rental3:5  machine 3 dead (not wiped)
 10 replace rental1    rental1:2  interrupted, then run again (machine 1 wiped)
 11 remove rental2     (interrupted once its change was remembered: finished by running it again;
                        machine 4 wiped)
 12 replace rental0    rental0:1  --head: Ray restarts everywhere (machine 0 wiped)
 13 remove rental0     --head: rental1 (machine 2) is the head (machine 1 wiped)
 14 remove rental3     only the head is left (machine 5 wiped)
"""

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from multinode.raycluster import RAY_MEMBERS
from multinode.sandbox import Sandbox
from multinode.sshfiles import keys_of, known_host_entries
from tests.conftest import FAB, ROOT, SECRETS, WANDB, Laptop, as_a_user, node_sh
from tests.test_hostkeys_users_e2e import rows

# Machine 3 is a root-only container (as RunPod and Vast.ai rent); the others log in as these users.
USERS = ["ubuntu", "user", "ubuntu", "root", "ubuntu", "user"]
VENV = "/workspace/workspace/venv/bin"
# Where a machine's files are searched for secret values (teardown's proof searches these too).
SEARCHED = ("/home", "/root", "/workspace", "/tmp", "/var/tmp", "/dev/shm", "/etc")
PANES = "tmux list-panes -s -t multinode -F '#{pane_id} #{pane_pid} #{@multinode_node}'"


class Churn:
    """The module's sandbox, its laptop, and what the tests saw of the cluster so far."""

    def __init__(self, sb, laptop):
        self.sb, self.laptop = sb, laptop
        self.procs = {}  # machine: its Ray and tmux server process ids, as seen when it joined
        self.panes = {}  # the head's tmux panes, as last seen: {pane_id: (pane_pid, tag)}
        self.key_lines = []  # lines of the cluster's private key (as the laptop holds it)

    def fab(self, *args, **kw):
        kw.setdefault("timeout", 900)
        return self.laptop.fab(*args, **kw)

    def record(self, *machines):
        for m in machines:
            self.procs[m] = procs(self.sb, m)


@pytest.fixture(scope="module")
def churn(laptop_key, tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests need root (network namespaces, mounts); CI runs them as root")
    # A sandbox of its own (names: up to 8 characters), beside the session's.
    sb = Sandbox(os.environ.get("MULTINODE_TEST_SANDBOX", "mntest")[:7] + "c")
    try:
        sb.up(USERS, Path(f"{laptop_key}.pub").read_text(), containers=(3,))
        laptop = as_a_user(Laptop(sb, tmp_path_factory.mktemp("churn") / "home", laptop_key), sb)
        yield Churn(sb, laptop)
    finally:
        sb.down()


# -- helpers -------------------------------------------------------------------

def out(r):
    return r.stdout + r.stderr


def spec(sb, m):
    """Machine ``m`` as -H writes it: PUBLIC:PRIVATE."""
    return f"{sb.nodes[m]['public']}:{sb.nodes[m]['private']}"


def private(sb, m):
    return sb.nodes[m]["private"]


def remembered(c):
    return json.loads((c.laptop.home / ".config/multinode/cluster.json").read_text())


def procs(sb, m):
    """Machine ``m``'s Ray processes (raylet; gcs_server on the head) and its tmux server."""
    ray = sb.exec(m, "pgrep", "-x", "raylet|gcs_server", check=False).stdout.split()
    tmux = node_sh(sb, m, "tmux display-message -p '#{pid}'").stdout.split()
    return {"ray": sorted(ray), "tmux": tmux}


def logins(sb, m):
    """How many SSH logins (from anywhere: the laptop, the head) machine ``m``'s sshd has accepted."""
    return sb.sshd_log(m).count("Accepted publickey for ")


def found_on(sb, m, values):
    """{value: [files]} for each of ``values`` found on machine ``m`` (searched as root, binaries too)."""
    args = [a for v in values for a in ("-e", v)]
    r = sb.exec(m, "grep", "-rHoaF", "-D", "skip", *args, "--", *SEARCHED, check=False)
    found = {}
    for line in r.stdout.splitlines():
        path, _, value = line.rpartition(":")
        found.setdefault(value, []).append(path)
    return found


def secret_values(c):
    return [*SECRETS.values(), WANDB, *c.key_lines]


def ray_view(sb, head=0):
    """(the private addresses the head's GCS lists alive, the nodes `ray status` shows active or idle)."""
    gcs = f"{private(sb, head)}:6379"
    members = node_sh(sb, head, f"{VENV}/python -I -c {shlex.quote(RAY_MEMBERS)} {gcs} 0").stdout
    alive = set(json.loads(members.split("RAY_MEMBERS", 1)[1])) if "RAY_MEMBERS" in members else None
    status = node_sh(sb, head, f"{VENV}/ray status --address {gcs}").stdout
    listed = status.split("Pending:")[0]  # Active: and Idle:, not Pending: nor Recent failures:
    return alive, len(re.findall(r"^\s*\d+ node_[0-9a-f]+", listed, re.M))


def wait_ray(sb, machines, wait=90, head=0):
    """Ray on the head lists exactly these machines (waiting up to ``wait`` s: a node leaving or
    joining reaches `ray status`, the autoscaler's view, within seconds)."""
    want = {private(sb, m) for m in machines}
    deadline = time.time() + wait
    while True:
        alive, count = ray_view(sb, head)
        if (alive, count) == (want, len(want)) or time.time() > deadline:
            break
        time.sleep(3)
    assert (alive, count) == (want, len(want)), f"Ray lists {alive} ({count} in ray status), expected {want}"


def cluster_key_from(sb, m):
    """The ``from=`` addresses of each cluster key line in machine ``m``'s authorized_keys."""
    keys = node_sh(sb, m, "cat ~/.ssh/authorized_keys").stdout
    lines = [line for line in keys.splitlines() if re.search(r"[ \t]multinode-cluster([ \t]|$)", line)]
    return [sorted(re.match(r'from="([^"]*)"', line).group(1).split(",")) if line.startswith("from=") else line
            for line in lines]


def assert_cluster(c, layout):
    """The cluster is ``layout`` ({nid: machine}) on the laptop and on the machines themselves."""
    sb = c.sb
    members = sorted(private(sb, m) for m in layout.values())
    nodes = remembered(c)["nodes"]
    assert {n["nid"]: (n["public"], n["private"]) for n in nodes} == {
        nid: (sb.nodes[m]["public"], private(sb, m)) for nid, m in layout.items()}
    head = layout[next(iter(layout))]  # the first node is the head
    wait_ray(sb, layout.values(), head=head)
    # The head's aliases reach the right machines, strict host keys (its multinode_known_hosts).
    workers = sorted(nid for nid in layout if layout[nid] != head)
    hops = node_sh(sb, head, "for w in " + " ".join(f"worker{nid}" for nid in workers) + "; do "
                   "ssh -F ~/.ssh/multinode_config -o ConnectTimeout=10 $w hostname 2>&1 | tail -1; done")
    assert hops.stdout.splitlines() == [f"node{layout[nid]}" for nid in workers], hops.stdout + hops.stderr
    # And the laptop's: `ssh rentalN` as the user types it.
    for nid, m in layout.items():
        hop = c.laptop.ssh(f"rental{nid}", "hostname")
        assert (hop.returncode, hop.stdout) == (0, f"node{m}\n"), (nid, hop.stderr)
    # The cluster key is authorized from the members' private addresses, exactly, on every member.
    for m in layout.values():
        assert cluster_key_from(sb, m) == [members], (m, node_sh(sb, m, "cat ~/.ssh/authorized_keys").stdout)


def assert_untouched(c, machines):
    """The staying machines' Ray and tmux server run on, the same processes as when they joined."""
    for m in machines:
        assert procs(c.sb, m) == c.procs[m], f"machine {m}: {procs(c.sb, m)}, was {c.procs[m]}"


def assert_wiped(c, m):
    """Machine ``m`` left: no secret value anywhere, no Ray, no cluster key authorized."""
    assert found_on(c.sb, m, secret_values(c)) == {}
    assert c.sb.exec(m, "pgrep", "-x", "raylet|gcs_server", check=False).stdout == ""
    assert cluster_key_from(c.sb, m) == []


def panes(sb, head=0):
    """The head's tmux panes: {pane_id: (pane_pid, tag)}, tag being the pane's @multinode_node."""
    listed = node_sh(sb, head, PANES)
    assert listed.returncode == 0, listed.stderr
    found = {}
    for line in listed.stdout.splitlines():
        pane, pid, tag = (line.split(" ", 2) + [""])[:3]
        found[pane] = (pid, tag)
    return found


def tagged(found, tag):
    return [pane for pane, (_, t) in found.items() if t == tag]


def assert_panes_kept(before, after, leaving=()):
    """Every pane of ``before`` (but the ``leaving`` nodes') is still there, the same process in it."""
    kept = {pane: v for pane, v in before.items() if v[1] not in leaving}
    assert {pane: after.get(pane) for pane in kept} == kept


def prompt(sb, pane, want, wait=30):
    """The last ``user@nodeN`` prompt in the head's pane, waiting up to ``wait`` s for ``want``."""
    deadline = time.time() + wait
    while True:
        found = re.findall(r"[a-z]+@node[0-9]+", node_sh(sb, 0, f"tmux capture-pane -p -t {pane}").stdout)
        last = found[-1] if found else ""
        if last == want or time.time() > deadline:
            return last
        time.sleep(0.5)


def assert_new_pane(c, alias, m):
    """The head's session has one pane for ``alias`` on machine ``m``, logged in there; none for the
    machine it had before."""
    found = panes(c.sb)
    new = tagged(found, f"{alias}@{private(c.sb, m)}")
    assert len(new) == 1, found
    assert prompt(c.sb, new[0], f"{c.sb.nodes[m]['user']}@node{m}") == f"{c.sb.nodes[m]['user']}@node{m}"
    assert [t for _, t in found.values() if t.startswith(f"{alias}@")] == [f"{alias}@{private(c.sb, m)}"]
    return found


def laptop_knows(c, m):
    """(known_hosts keys for machine ``m``'s public address, its host key pins) on the laptop."""
    public = c.sb.nodes[m]["public"]
    keys = keys_of(known_host_entries(c.laptop.home / ".ssh/known_hosts"), public)
    pins = json.loads((c.laptop.home / ".config/multinode/pins.json").read_text())["pins"]
    return keys, [p for p in pins if p["public"] == public]


def head_file(c, name):
    return node_sh(c.sb, 0, f"cat ~/.ssh/{name}").stdout


def refused(c, *args, stdin=""):
    """``fab ARGS`` exits 2 having connected to no machine and written nothing on the laptop."""
    before, seen = c.laptop.snapshot(), [logins(c.sb, m) for m in range(len(c.sb.nodes))]
    r = c.fab(*args, stdin=stdin, timeout=120)  # stdin: a pipe, never a terminal
    assert r.returncode == 2, (args, out(r))
    assert r.stderr.strip(), args  # says why
    assert c.laptop.snapshot() == before, args
    assert [logins(c.sb, m) for m in range(len(c.sb.nodes))] == seen, args
    return r


# -- the tests, in order, on one cluster ------------------------------------------

def test_setup_of_four_nodes(churn):
    c, sb = churn, churn.sb
    r = c.fab("-H", ",".join(spec(sb, m) for m in range(4)), "setup", "--tail", "0")
    assert r.returncode == 0, out(r)
    assert rows(r.stdout, "ray")["rental0"] == ("ok", "4 of 4 node(s) in the Ray cluster")
    assert_cluster(c, {m: m for m in range(4)})
    key = (c.laptop.home / ".config/multinode/cluster_key").read_text().splitlines()
    c.key_lines = [line for line in key[2:] if "-----" not in line]  # past the header's common bytes
    assert c.key_lines
    for m in range(4):
        # Each member holds every secret value (so finding none on a machine that left means something).
        found = found_on(sb, m, secret_values(c))
        assert set(found) >= {*SECRETS.values(), WANDB}, (m, found)
        assert any(p.endswith("/.ssh/multinode_cluster") for v in c.key_lines for p in found.get(v, [])), found
        c.record(m)
        assert len(c.procs[m]["ray"]) == (2 if m == 0 else 1) and len(c.procs[m]["tmux"]) == 1, c.procs[m]
    for m in (4, 5):  # the spares: untouched
        assert logins(sb, m) == 0
    c.panes = panes(sb)
    assert len(c.panes) == 5, c.panes  # window head, then all-nodes: a pane per node


def test_replace_a_worker_leaves_the_others_running(churn):
    c, sb = churn, churn.sb
    tags = {t for _, t in c.panes.values()}
    assert {f"rental{n}@{private(sb, n)}" for n in (1, 2, 3)} <= tags, c.panes
    r = c.fab("replace", "rental2", spec(sb, 4), "--yes")
    assert r.returncode == 0, out(r)
    assert_cluster(c, {0: 0, 1: 1, 2: 4, 3: 3})
    assert_untouched(c, (0, 1, 3))
    assert_wiped(c, 2)
    found = assert_new_pane(c, "rental2", 4)
    assert_panes_kept(c.panes, found, leaving=(f"rental2@{private(sb, 2)}",))
    assert not remembered(c).get("leaving")
    c.record(4)
    c.panes = found


def test_replacing_by_the_current_machine_is_refused(churn):
    c, sb = churn, churn.sb
    refused(c, "replace", "rental2", spec(sb, 4), "--yes")
    assert not remembered(c).get("leaving")  # nothing pending either


def test_add_takes_the_next_number_and_keeps_the_panes(churn):
    c, sb = churn, churn.sb
    assert laptop_knows(c, 5) == ([], [])
    r = c.fab("add", spec(sb, 5))
    assert r.returncode == 0, out(r)
    assert "rental4" in r.stdout
    assert_cluster(c, {0: 0, 1: 1, 2: 4, 3: 3, 4: 5})
    assert_untouched(c, (0, 1, 3, 4))
    found = assert_new_pane(c, "rental4", 5)
    assert_panes_kept(c.panes, found)
    keys, pins = laptop_knows(c, 5)
    assert keys and pins  # what `remove` must take away
    assert re.search(r"^Host rental4$", (c.laptop.home / ".ssh/config").read_text(), re.M)
    assert "worker4" in head_file(c, "multinode_config")
    assert f"{private(sb, 5)} " in head_file(c, "multinode_known_hosts")
    c.record(5)
    c.panes = found


def test_remove_wipes_the_node_and_forgets_it(churn):
    c, sb = churn, churn.sb
    r = c.fab("remove", "rental4", "--yes")
    assert r.returncode == 0, out(r)
    assert_cluster(c, {0: 0, 1: 1, 2: 4, 3: 3})
    assert_untouched(c, (0, 1, 3, 4))
    assert_wiped(c, 5)
    assert laptop_knows(c, 5) == ([], [])
    assert "rental4" not in (c.laptop.home / ".ssh/config").read_text()
    assert "worker4" not in head_file(c, "multinode_config")
    assert private(sb, 5) not in head_file(c, "multinode_known_hosts")
    found = panes(sb)
    assert not [t for _, t in found.values() if t.startswith("rental4@")], found
    assert_panes_kept(c.panes, found, leaving=(f"rental4@{private(sb, 5)}",))
    c.panes = found


def test_setup_of_one_node_contacts_it_and_the_head_only(churn):
    c, sb = churn, churn.sb
    before = [logins(sb, m) for m in range(6)]
    r = c.fab("setup", "--nodes", "rental1", "--tail", "0")
    assert r.returncode == 0, out(r)
    after = [logins(sb, m) for m in range(6)]
    assert after[0] > before[0] and after[1] > before[1], (before, after)
    assert [after[m] - before[m] for m in (2, 3, 4, 5)] == [0, 0, 0, 0], (before, after)
    bootstrapped = rows(r.stdout, "bootstrap")
    assert "rental1" in bootstrapped and not {"rental2", "rental3"} & set(bootstrapped), r.stdout
    assert_untouched(c, (3, 4))
    assert_panes_kept(c.panes, panes(sb), leaving=(f"rental1@{private(sb, 1)}",))


def test_setup_of_the_failed_nodes(churn):
    c, sb = churn, churn.sb
    sb.stop_sshd(3)
    try:
        r = c.fab("setup", "--tail", "0")
    finally:
        sb.start_sshd(3)
    assert r.returncode == 1, out(r)
    assert rows(r.stdout, "hostkeys")["rental3"][0] == "FAILED", r.stdout
    failed = remembered(c).get("failed", [])
    assert 3 in failed or "rental3" in failed, failed
    assert not {0, 1, 2, "rental0", "rental1", "rental2"} & set(failed), failed

    before = [logins(sb, m) for m in range(6)]
    r = c.fab("setup", "--failed", "--tail", "0")
    assert r.returncode == 0, out(r)
    after = [logins(sb, m) for m in range(6)]
    assert after[3] > before[3] and after[0] > before[0], (before, after)
    assert [after[m] - before[m] for m in (1, 2, 4, 5)] == [0, 0, 0, 0], (before, after)
    assert set(rows(r.stdout, "bootstrap")) == {"rental3"}, r.stdout
    assert not remembered(c).get("failed")

    before = [logins(sb, m) for m in range(6)]
    r = c.fab("setup", "--failed", "--tail", "0")
    assert r.returncode == 0, out(r)
    assert "failed" in out(r).lower() and not rows(r.stdout, "bootstrap"), out(r)  # says none failed
    assert [logins(sb, m) for m in (1, 2, 3, 4, 5)] == before[1:], before


def test_bad_churn_is_refused_before_anything_connects(churn):
    c, sb = churn, churn.sb
    every = "rental0,rental1,rental2,rental3"
    refused(c, "replace", "rental9", spec(sb, 2), "--yes")  # not a member
    refused(c, "replace", "rental2", spec(sb, 1), "--yes")  # the new machine is a member already
    refused(c, "replace", "rental0", spec(sb, 2), "--yes")  # the head, without --head
    refused(c, "replace", "rental0", f":{private(sb, 2)}", "--yes", "--head")  # a head without a public address
    refused(c, "replace", "rental2", "1.2.3:x", "--yes")  # malformed
    refused(c, "add", spec(sb, 1))  # a member already
    refused(c, "add", "1.2.3:x")  # malformed
    refused(c, "remove", "rental9", "--yes")  # not a member
    refused(c, "remove", every, "--yes", "--head")  # every node
    refused(c, "remove", "rental0", "--yes")  # the head, without --head
    refused(c, "remove", "rental3")  # no terminal to ask on, and no --yes
    refused(c, "setup", "--nodes", "rental9")  # not a member
    assert_cluster(c, {0: 0, 1: 1, 2: 4, 3: 3})


def test_a_dead_machine_is_replaced_and_shut_out(churn):
    c, sb = churn, churn.sb
    # Machine 3 (rental3, a root container) can log in to the head with the cluster key: it is a member.
    hop = ("ssh -i ~/.ssh/multinode_cluster -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           f"-o BatchMode=yes -o ConnectTimeout=10 {sb.nodes[0]['user']}@{private(sb, 0)} hostname")
    assert node_sh(sb, 3, hop).stdout == "node0\n"
    old_pub = (c.laptop.home / ".config/multinode/cluster_key.pub").read_text().split()[1]
    # It dies: its Ray and its sshd are gone, the laptop cannot reach it at all.
    node_sh(sb, 3, f"{VENV}/ray stop --force")
    sb.stop_sshd(3)
    sb.hide(3)
    try:
        r = c.fab("replace", "rental3", spec(sb, 5), "--yes")
    finally:
        sb.hide(3, False)
        sb.start_sshd(3)
    assert r.returncode == 1, out(r)
    assert "could NOT be wiped" in out(r)
    assert_cluster(c, {0: 0, 1: 1, 2: 4, 3: 5})
    assert_untouched(c, (0, 1, 4))
    assert_new_pane(c, "rental3", 5)
    # Back, it still holds the old cluster key, which no member accepts from its address any more; and
    # the members have a new one.
    shut = node_sh(sb, 3, hop)
    assert shut.returncode != 0 and shut.stdout == "", shut.stdout
    assert node_sh(sb, 3, "test -s ~/.ssh/multinode_cluster").returncode == 0  # refused for its address
    assert "rental3-old kept the cluster key: the members get a new one" in r.stdout
    pub = (c.laptop.home / ".config/multinode/cluster_key.pub").read_text().split()[1]
    assert pub != old_pub and node_sh(sb, 3, "cat ~/.ssh/multinode_cluster.pub").stdout.split()[1] == old_pub
    for m in (0, 1, 4, 5):
        assert node_sh(sb, m, "cat ~/.ssh/multinode_cluster.pub").stdout.split()[1] == pub, m
        assert old_pub not in node_sh(sb, m, "cat ~/.ssh/authorized_keys").stdout, m
    key = (c.laptop.home / ".config/multinode/cluster_key").read_text().splitlines()
    c.key_lines += [line for line in key[2:] if "-----" not in line]  # both keys: no machine given back holds either
    c.record(5)
    c.panes = panes(sb)


def test_an_interrupted_replace_is_completed_by_running_it_again(churn, tmp_path):
    c, sb = churn, churn.sb
    command = ("replace", "rental1", spec(sb, 2), "--yes")
    log = tmp_path / "interrupted.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            sb.laptop_cmd(FAB, *command, env={**c.laptop.env, "PYTHONUNBUFFERED": "1"}), cwd=ROOT,
            stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Ctrl-C once the new machine's bootstrap runs (its node script is there and running).
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if sb.exec(2, "pgrep", "-f", "multinode/node.sh", check=False).returncode == 0:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "replace ended before its bootstrap could be interrupted:\n" + log.read_text()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, log.read_text()
    remembered(c)  # whole: written atomically, or not at all

    again = c.fab(*command)
    assert again.returncode == 0, log.read_text() + "\n--- run again:\n" + out(again)
    assert_cluster(c, {0: 0, 1: 2, 2: 4, 3: 5})
    assert_untouched(c, (0, 4, 5))
    assert_wiped(c, 1)
    assert_new_pane(c, "rental1", 2)
    assert not remembered(c).get("leaving")


def test_a_remove_remembered_but_not_finished_is_finished_by_running_it_again(churn):
    c = churn
    # As a `remove rental2` stopped after it remembered the change leaves cluster.json: rental2 (machine
    # 4) no longer a member, listed as leaving; its host key and pin still known (forgotten once wiped).
    state = c.laptop.home / ".config/multinode/cluster.json"
    data = json.loads(state.read_text())
    data["leaving"] = [n for n in data["nodes"] if n["nid"] == 2]
    data["nodes"] = [n for n in data["nodes"] if n["nid"] != 2]
    state.write_text(json.dumps(data))
    r = c.fab("remove", "rental2", "--yes")
    assert r.returncode == 0, out(r)
    assert rows(r.stdout, "wipe")["rental2"][0] == "changed", r.stdout
    assert_cluster(c, {0: 0, 1: 2, 3: 5})
    assert_untouched(c, (0, 5))
    assert_wiped(c, 4)
    assert laptop_knows(c, 4) == ([], [])
    assert not remembered(c).get("leaving")
    assert "worker2" not in head_file(c, "multinode_config")
    refused(c, "remove", "rental2", "--yes")  # done: no longer a member, nothing pending
    c.record(2)


def test_replacing_the_head_restarts_ray_on_the_new_head(churn):
    c, sb = churn, churn.sb
    r = c.fab("replace", "rental0", spec(sb, 1), "--yes", "--head")
    assert r.returncode == 0, out(r)
    assert "the head moves to rental0" in r.stdout
    assert_cluster(c, {0: 1, 1: 2, 3: 5})
    assert_wiped(c, 0)
    for m in (2, 5):  # the workers' Ray restarted, joined to the new head; their tmux server ran on
        assert procs(sb, m)["ray"] != c.procs[m]["ray"] and procs(sb, m)["tmux"] == c.procs[m]["tmux"], m
    tags = sorted(t for _, t in panes(sb, head=1).values() if t)
    assert tags == [f"rental0@{private(sb, 1)}", f"rental1@{private(sb, 2)}", f"rental3@{private(sb, 5)}"], tags


def test_removing_the_head_makes_the_next_member_the_head(churn):
    c, sb = churn, churn.sb
    refused(c, "remove", "rental0", "--yes")  # without --head
    r = c.fab("remove", "rental0", "--yes", "--head")
    assert r.returncode == 0, out(r)
    assert "the head moves to rental1" in r.stdout
    assert_cluster(c, {1: 2, 3: 5})  # no alias renumbered: rental1 is the head now
    assert_wiped(c, 1)
    assert procs(sb, 5)["tmux"] == c.procs[5]["tmux"]
    tags = sorted(t for _, t in panes(sb, head=2).values() if t)
    assert tags == [f"rental1@{private(sb, 2)}", f"rental3@{private(sb, 5)}"], tags


def test_removing_every_worker_leaves_the_head_alone_and_without_aliases(churn):
    c, sb = churn, churn.sb
    assert "Host worker3" in node_sh(sb, 2, "cat ~/.ssh/multinode_config").stdout
    r = c.fab("remove", "rental3", "--yes")
    assert r.returncode == 0, out(r)
    assert [n["nid"] for n in remembered(c)["nodes"]] == [1]
    assert_wiped(c, 5)
    gone = node_sh(sb, 2, "ls ~/.ssh/multinode_config ~/.ssh/multinode_known_hosts /etc/ssh/ssh_config.d/multinode-*")
    assert gone.stdout == "" and gone.returncode != 0, gone.stdout  # no alias of a machine given back
    wait_ray(sb, [2], head=2)
    assert cluster_key_from(sb, 2) == [[private(sb, 2)]]
    tags = sorted(t for _, t in panes(sb, head=2).values() if t)
    assert tags == [f"rental1@{private(sb, 2)}"], tags
