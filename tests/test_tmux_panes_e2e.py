"""End to end: the tmux session follows the cluster pane by pane (issue 24).

A node joins: it gets a pane, and every other pane, with what runs in it,
stays as it was (same pane, same process, same tmux server). ``--redo``
starts one pane anew, in place. A second run changes nothing.
"""

import time

from multinode.inventory import parse_hosts
from multinode.tasks.tmux import plan
from tests.conftest import node_sh
from tests.test_cluster_e2e import panes_on
from tests.test_hostkeys_users_e2e import rows

SET_UP = ("hostkeys", "detect-user", "bootstrap", "--tail", "0", "head-ssh", "tmux")
PANES = "tmux list-panes -s -t multinode -F '#{pane_id}:#{pane_pid}:#{window_name}:#{@multinode_node}'"


def panes(sb):
    """{alias (the head window's shell: head): (pane id, pane pid, window, tag)} of the head's session."""
    found = {}
    for line in node_sh(sb, 0, PANES).stdout.splitlines():
        pane, pid, window, tag = line.split(":", 3)
        found[tag.split("@")[0] or window] = (pane, pid, window, tag)
    return found


def server(sb):
    return node_sh(sb, 0, "tmux display-message -p -t multinode '#{pid}'").stdout.strip()


def marker(sb):
    """The pids of `sleep 7777` on node1 (typed into rental1's pane, so running there)."""
    return node_sh(sb, 1, "pgrep -fx 'sleep 7777' || true").stdout.split()


def test_tmux_follows_the_cluster_pane_by_pane(laptop, healthy):
    sb = healthy
    laptop.configure(repo={"url": ""}, dotfiles={"repo": ""}, tools=[], ray={"enabled": False},
                     installers=sb.forge.config()["installers"], log_dir=str(laptop.home / "logs"))
    node_sh(sb, 0, "tmux kill-session -t multinode 2>/dev/null || true")  # an earlier test's
    two = ",".join(sb.hosts.split(",")[:2])
    r = laptop.fab("-H", two, *SET_UP, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout, "tmux")["rental0"] == ("changed", "head (1), all-nodes (2)")
    first = panes(sb)
    assert {alias: pane[2:] for alias, pane in first.items()} == {
        "head": ("head", ""), "rental0": ("all-nodes", "rental0@198.19.0.10"),
        "rental1": ("all-nodes", "rental1@198.19.0.11")}
    assert panes_on(sb, "all-nodes", ["ubuntu@node0", "user@node1"]) == ["ubuntu@node0", "user@node1"]
    # Something the user runs in rental1's pane (on node1, through the pane's ssh).
    node_sh(sb, 0, f"tmux send-keys -t {first['rental1'][0]} 'sleep 7777' Enter")
    deadline = time.time() + 20
    while not marker(sb) and time.time() < deadline:
        time.sleep(0.5)
    running, tmux_server = marker(sb), server(sb)
    assert len(running) == 1 and tmux_server

    # A third node joins: it gets a pane; the others, and what runs in them, stay.
    r = laptop.fab("-H", sb.hosts, *SET_UP, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout, "tmux")["rental0"] == ("changed", "head (1), all-nodes (3); added rental2")
    grown = panes(sb)
    assert grown["rental2"][2:] == ("all-nodes", "rental2@198.19.0.12")
    for alias in ("head", "rental0", "rental1"):
        assert grown[alias] == first[alias], alias
    assert server(sb) == tmux_server and marker(sb) == running
    want = ["ubuntu@node0", "user@node1", "ubuntu@node2"]
    assert panes_on(sb, "all-nodes", want)[2] == "ubuntu@node2"
    again = laptop.fab("tmux")
    assert again.returncode == 0 and rows(again.stdout, "tmux")["rental0"] == ("ok", "head (1), all-nodes (3)")
    assert panes(sb) == grown

    # --redo: that pane alone starts anew, in place (same pane, a new process, its ssh again).
    r = laptop.fab("tmux", "--redo", "rental2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout, "tmux")["rental0"] == ("changed", "head (1), all-nodes (3); restarted rental2")
    redone = panes(sb)
    assert redone["rental2"][0] == grown["rental2"][0] and redone["rental2"][1] != grown["rental2"][1]
    assert redone["rental2"][2:] == ("all-nodes", "rental2@198.19.0.12")
    assert {a: p for a, p in redone.items() if a != "rental2"} == {a: p for a, p in grown.items() if a != "rental2"}
    assert server(sb) == tmux_server and marker(sb) == running
    deadline = time.time() + 20
    command = f"tmux display-message -p -t {redone['rental2'][0]} '#{{pane_current_command}}'"
    while "ssh" not in node_sh(sb, 0, command).stdout:
        assert time.time() < deadline, "rental2's pane did not log in again"
        time.sleep(0.5)
    assert rows(laptop.fab("tmux").stdout, "tmux")["rental0"] == ("ok", "head (1), all-nodes (3)")

    # A bad --redo: exit 2, one line, before any connection.
    logs = [sb.sshd_log(n) for n in range(3)]
    bad = laptop.fab("tmux", "--redo", "rental9")
    assert bad.returncode == 2 and bad.stdout == "", bad.stdout + bad.stderr
    assert "bad --redo 'rental9'" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert [sb.sshd_log(n) for n in range(3)] == logs
    node_sh(sb, 1, "pkill -fx 'sleep 7777' || true")


def test_plan_changes_only_the_panes_that_differ():
    """The plan alone (no sandbox): rental3 gone, rental1 on another machine, rental5 new, rental4 failed earlier."""
    nodes = parse_hosts(",".join(f"198.18.0.{10 + i}:198.19.0.{10 + i}" for i in range(6)))
    for n in nodes:
        n.alias = f"rental{n.nid}"
    nodes[1].private = "198.19.0.21"
    pane = lambda pid, window, name, node: {"pane": pid, "window": window, "name": name, "node": node}  # noqa: E731
    seen = [pane("%0", "@0", "head", ""), pane("%5", "@1", "all-nodes", "rental0@198.19.0.10"),
            pane("%6", "@1", "all-nodes", "rental1@198.19.0.11"), pane("%7", "@1", "all-nodes", "rental2@198.19.0.12"),
            pane("%8", "@1", "all-nodes", "rental3@198.19.0.13"), pane("%9", "@3", "mine", "")]
    live = [n for n in nodes if n.alias not in ("rental3", "rental4")]
    todo = plan(seen, live, {"rental4"}, {"rental2"}, nodes[0])
    assert todo["done"] == "added rental5; removed rental3; restarted rental1, rental2"
    assert todo["kill"] == ["%8"] and todo["tile"] == ["@1"]
    assert [(p["pane"], p["alias"], p["private"], p["worker"]) for p in todo["restart"]] == [
        ("%6", "rental1", "198.19.0.21", "worker1"), ("%7", "rental2", "198.19.0.12", "worker2")]
    grow = [(w["id"], w["name"], [p["alias"] for p in w["panes"]]) for w in todo["grow"]]
    assert grow == [("@1", "all-nodes", ["rental5"])]
    # A fifth pane: a window of its own, and all-nodes becomes nodes-1.
    seen[4] = pane("%8", "@1", "all-nodes", "rental4@198.19.0.14")
    todo = plan(seen, [n for n in nodes if n.alias != "rental3"], set(), set(), nodes[0])
    assert todo["kill"] == [] and todo["done"] == "added rental5; restarted rental1"
    assert [(w["id"], w["name"], len(w["panes"])) for w in todo["grow"]] == [(None, "nodes-2", 1)]
    assert [(w["id"], w["name"]) for w in todo["renamed"]] == [("@1", "nodes-1")]
    # A pane without its node (a session an older multinode made): none, the session is rebuilt.
    seen[2] = pane("%6", "@1", "all-nodes", "")
    assert plan(seen, nodes, set(), set(), nodes[0]) is None
