"""End to end: live progress of bootstrap, on a terminal (a tmux pane) and without one."""

import json
import re
import shlex
import time

from tests.conftest import FAB, ROOT, node_sh
from tests.test_hostkeys_users_e2e import rows


def slow_config(laptop, sb, seconds, **extra):
    config = {**sb.forge.config(), "log_dir": str(laptop.home / "logs"), "repo": {"url": ""},
              "dotfiles": {"repo": ""}, "ray": {"enabled": False}, **extra,
              "tools": [{"name": "slow", "check": "test -f ~/.slow-done",
                         "install": f"echo fetching the slow tool; sleep {seconds}; touch ~/.slow-done"}]}
    laptop.configure(**config)


def on_a_terminal(laptop, name, *fab_args):
    """Run ``fab ARGS`` in a tmux pane of its own (a real terminal, 160x40) on the laptop; its exit
    status lands in ``~/exit``. Returns the tmux command prefix that reaches that pane."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in laptop.env.items())
    args = " ".join(shlex.quote(a) for a in fab_args)
    cmd = f"cd {ROOT} && env {env} TERM=xterm-256color {FAB} {args}; echo EXIT=$? >{laptop.home}/exit; sleep 60"
    tmux = ["tmux", "-L", name]
    laptop.run(*tmux, "new-session", "-d", "-x", "160", "-y", "40", "bash", "-c", cmd)
    return tmux


def test_without_a_terminal_a_slow_step_gets_heartbeat_lines(laptop, healthy):
    sb = healthy
    node_sh(sb, 1, "rm -f ~/.slow-done")
    slow_config(laptop, sb, 7, progress_interval=2)
    node = sb.nodes[1]
    r = laptop.fab("-H", f"{node['public']}:{node['private']}", "hostkeys", "detect-user", "bootstrap", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    beats = re.findall(r"^bootstrap\s+rental0  still in step tools after (\d+)s: fetching the slow tool$", r.stdout, re.M)
    assert len(beats) >= 2 and int(beats[-1]) > int(beats[0]), r.stdout
    # Step timings: in the STEP lines, the table's slowest step, the JSON summary.
    assert re.search(r"^rental0 .* tools [78]\.\ds$", r.stdout, re.M), r.stdout
    summary = json.loads((laptop.home / "logs/bootstrap.json").read_text())["nodes"]["rental0"]
    tools = next(s for s in summary["steps"] if s["name"] == "tools")
    assert tools["status"] == "changed" and 7 <= tools["seconds"] < 9
    assert rows(r.stdout, "bootstrap")["rental0"][0] == "changed"


def test_on_a_terminal_a_live_table_shows_each_nodes_step_and_its_time(laptop, healthy):
    sb = healthy
    node_sh(sb, 2, "rm -f ~/.slow-done")
    node_sh(sb, 0, "touch ~/.slow-done")
    slow_config(laptop, sb, 8)
    hosts = ",".join(f"{n['public']}:{n['private']}" for n in (sb.nodes[0], sb.nodes[2]))
    assert laptop.fab("-H", hosts, "hostkeys", "detect-user").returncode == 0
    tmux = on_a_terminal(laptop, "mnprogress", "bootstrap")
    try:
        seen = []
        deadline = time.time() + 60
        while time.time() < deadline and not (laptop.home / "exit").exists():
            screen = laptop.run(*tmux, "capture-pane", "-p").stdout
            m = re.search(r"^rental1\s+bootstrap\s+tools\s+(\d+)s\s+fetching the slow tool", screen, re.M)
            if m:
                seen.append(int(m.group(1)))
            time.sleep(0.5)
        assert (laptop.home / "exit").read_text() == "EXIT=0\n"
        assert len(seen) >= 3 and seen[-1] > seen[0], seen  # the slow node's step, its time growing
        final = laptop.run(*tmux, "capture-pane", "-p", "-S", "-100").stdout
        assert re.search(r"^rental0\s+bootstrap\s+(ok|changed)", final, re.M), final  # the table stays as the summary
        assert re.search(r"^rental1\s+bootstrap\s+changed", final, re.M), final
    finally:
        laptop.run(*tmux, "kill-server")


def test_ctrl_c_on_a_terminal_stops_at_once_and_leaves_it_clean(laptop, healthy):
    sb = healthy
    node_sh(sb, 1, "rm -f ~/.slow-done")
    slow_config(laptop, sb, 40)
    node = sb.nodes[1]
    assert laptop.fab("-H", f"{node['public']}:{node['private']}", "hostkeys", "detect-user").returncode == 0
    tmux = on_a_terminal(laptop, "mnctrlc", "bootstrap")
    try:
        deadline = time.time() + 60
        while "fetching the slow tool" not in laptop.run(*tmux, "capture-pane", "-p").stdout:
            assert time.time() < deadline, "the slow step never showed"
            time.sleep(0.3)
        start = time.monotonic()
        laptop.run(*tmux, "send-keys", "C-c")
        while not (laptop.home / "exit").exists():
            assert time.monotonic() - start < 10, "Ctrl-C did not stop the run"
            time.sleep(0.2)
        assert (laptop.home / "exit").read_text() == "EXIT=130\n"
        screen = laptop.run(*tmux, "capture-pane", "-p", "-S", "-100").stdout
        assert "multinode: interrupted during bootstrap" in screen and "Traceback" not in screen
        assert laptop.run(*tmux, "display", "-p", "#{cursor_flag}").stdout.strip() == "1"  # the cursor is back
    finally:
        laptop.run(*tmux, "kill-server")
        node_sh(sb, 1, "pkill -f multinode/node.sh; pkill -fx 'sleep 40'; true")


def test_every_task_shows_who_is_still_at_it_and_then_only_its_lines(laptop, healthy):
    """A short task on a terminal: a live row per node while it runs (a dead node's time growing),
    then the table goes and the per-node lines stay."""
    sb = healthy
    laptop.configure(log_dir=str(laptop.home / "logs"))
    assert laptop.fab("-H", sb.hosts, "hostkeys").returncode == 0
    sb.exec(2, "ip", "link", "set", "eth0", "down")  # rental2 stops answering
    tmux = on_a_terminal(laptop, "mnshort", "-t", "6", "hostkeys")
    try:
        seen = []
        deadline = time.time() + 30
        while time.time() < deadline and not (laptop.home / "exit").exists():
            m = re.search(r"^rental2\s+hostkeys\s+-\s+(\d+)s", laptop.run(*tmux, "capture-pane", "-p").stdout, re.M)
            if m:
                seen.append(int(m.group(1)))
            time.sleep(0.3)
        assert (laptop.home / "exit").read_text() == "EXIT=1\n"
        assert len(seen) >= 2 and seen[-1] > seen[0], seen
        final = laptop.run(*tmux, "capture-pane", "-p", "-S", "-100").stdout
        assert "last output" not in final  # the live table is gone ...
        assert re.search(r"^hostkeys\s+rental2\s+198\.18\.0\.12\s+FAILED", final, re.M), final  # ... its lines stay
        assert re.search(r"^hostkeys\s+rental0\s+198\.18\.0\.10\s+ok", final, re.M), final
    finally:
        laptop.run(*tmux, "kill-server")
        sb.exec(2, "ip", "link", "set", "eth0", "up")
