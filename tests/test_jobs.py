"""Unit tests: jobs' names, environment, what nodes say of them read back, the table; the node scripts run
here, under a throwaway HOME (a supervisor, its stop, its follower, a vanished one)."""

import os
import re
import socket
import subprocess
import time
from types import SimpleNamespace

import pytest

from multinode.inventory import BadInput
from multinode.jobs import (as_json, check_name, duration, elapsed, environment, first_failure, jobs, message, new_name,
                            node_state, overall, parse_list, table)
from multinode.paths import JOBS, job_dir
from multinode.render import render

NODES = [SimpleNamespace(alias=f"rental{n}", private=f"10.0.0.{n + 1}") for n in range(3)]


def test_names():
    for good in ("train", "a.b_c-9", "x" * 64):
        assert check_name(good) == good
    for bad in ("", "-x", ".hidden", "a b", "a/b", "../x", "x" * 65, "t$(reboot)", "é"):
        with pytest.raises(BadInput):
            check_name(bad)
    assert re.fullmatch(r"train-[0-9a-f]{4}", new_name("python -u src/train.py --lr 3e-4"))
    assert re.fullmatch(r"job-[0-9a-f]{4}", new_name("'!!' x"))
    assert re.fullmatch(r"sleep-[0-9a-f]{4}", new_name("sleep 30"))
    assert check_name(new_name("./--weird.sh"))


def test_the_environment_file_is_quoted_and_has_each_rank(tmp_path):
    text = environment("t", NODES, 2, 29501, torchrun=True)
    path = tmp_path / "env"
    path.write_text(text)
    got = subprocess.run(["bash", "-c", '. "$0"; echo "$NODE_RANK|$NNODES|$MASTER_ADDR:$MASTER_PORT|$MULTINODE_NODE_IPS|'
                          '$PET_NODE_RANK|$PET_NNODES|$PET_MASTER_ADDR|$MULTINODE_NODE"', str(path)],
                         capture_output=True, text=True).stdout
    assert got == "2|3|10.0.0.1:29501|10.0.0.1 10.0.0.2 10.0.0.3|2|3|10.0.0.1|rental2\n"
    assert "PET_" not in environment("t", NODES, 0, 29501, torchrun=False)


def listed(alias, *jobs_):
    """What ``jobs.sh list`` says on ``alias``: for each (name, running, watching, state, watch) a job."""
    lines = []
    for name, running, watching, state, watch in jobs_:
        lines.append(f"JOB {name} {'running' if running else 'ended'} {'watching' if watching else '-'}")
        lines += [f"JOB_STATE {name} {line}" for line in state]
        lines += [f"JOB_WATCH {name} {line}" for line in watch]
        lines.append(f"JOB_COMMAND {name} python train.py --lr 3e-4")
    return parse_list(alias, "\n".join(lines))


def part(alias, rank, *extra):
    return ["id j1", "name train", f"alias {alias}", f"rank {rank}", "members rental0 rental1 rental2", "port 29501",
            "supervisor 11", "started 1000.5", "nproc 8", "pid 12", *extra]


def test_a_failure_and_the_nodes_it_stopped():
    watch = ["id j1", "members rental0 rental1 rental2", "verdict rental2 1010.0 failed 137",
             "first rental2 1010.0 failed 137", "stopping rental2 failed 137",
             "verdict rental1 1010.4 stopped rental2 failed 137", "ended 1011"]
    found = jobs({"rental0": listed("rental0", ("train", False, False, part("rental0", 0, "stopped rental2 failed 137",
                                                                           "exit 143", "ended 1010.5"), watch)),
                  "rental1": listed("rental1", ("train", False, False, part("rental1", 1, "stopped rental2 failed 137",
                                                                           "exit 143", "ended 1010.4"), [])),
                  "rental2": listed("rental2", ("train", False, False, part("rental2", 2, "exit 137", "ended 1010.0"),
                                                []))})
    [job] = found
    assert [node_state(job, a)[0] for a in job.members] == ["stopped", "stopped", "failed 137"]
    assert first_failure(job) == ("rental2", "exited 137")
    assert overall(job) == "failed: rental2 exited 137"
    assert elapsed(job) == pytest.approx(10.0)
    assert message(job) == (False, "job train failed", "job train failed: rental2 exited 137")
    data = as_json(job)
    assert data["first_failure"] == {"node": "rental2", "what": "exited 137"} and data["watchdog"] == "ended"
    assert data["nodes"]["rental2"] == {"rank": 2, "state": "failed 137", "exit": 137, "started": 1000.5,
                                        "ended": 1010.0, "nproc_per_node": 8, "stopped": None}


def test_a_lost_node_seen_through_the_heads_watchdog():
    watch = ["id j1", "members rental0 rental1 rental2", "verdict rental1 1020 lost no answer for 10s",
             "first rental1 1020 lost no answer for 10s"]
    found = jobs({"rental0": listed("rental0", ("train", True, True, part("rental0", 0), watch)),
                  "rental2": listed("rental2", ("train", True, False, part("rental2", 2), []))}, ["rental1"])
    [job] = found
    assert [node_state(job, a) for a in job.members] == [("running", None), ("lost", 1020.0), ("running", None)]
    assert overall(job) == "running (rental1 lost)"
    # Without the watchdog's word, an unreachable node is just that.
    bare = jobs({"rental0": listed("rental0", ("train", True, False, part("rental0", 0), []))}, ["rental1", "rental2"])
    assert node_state(bare[0], "rental1") == ("unreachable", None) and overall(bare[0]) == "running"


def test_finished_stopped_and_vanished():
    def one(*extra, running=False):
        return jobs({"rental0": listed("rental0", ("train", running, False, part("rental0", 0, *extra)[:4] +
                                                   ["members rental0", *part("rental0", 0, *extra)[5:]], []))})[0]
    done = one("exit 0", "ended 4600.5")
    assert overall(done) == "finished" and duration(elapsed(done)) == "1h00m"
    assert message(done)[2] == "job train finished on 1 nodes in 1h00m"
    stopped = one("stopped by fab stop", "exit 143", "ended 1070.5")
    assert overall(stopped) == "stopped" and message(stopped)[2] == "job train stopped after 1m10s"
    vanished = one()  # no exit recorded, and its supervisor is gone
    assert node_state(vanished, "rental0") == ("lost", None) and overall(vanished) == "failed: rental0 lost"
    assert overall(one(running=True)) == "running"


def test_one_name_under_two_ids_is_two_jobs_newest_first():
    old = ["id j0", "name train", "members rental2", "started 500", "exit 0", "ended 600"]
    found = jobs({"rental0": listed("rental0", ("train", True, False, part("rental0", 0), [])),
                  "rental2": listed("rental2", ("train", False, False, old, []))})
    assert [(j.id, j.members) for j in found] == [("j1", ["rental0", "rental1", "rental2"]), ("j0", ["rental2"])]


def test_the_table_a_column_per_node_or_grouped():
    found = jobs({"rental0": listed("rental0", ("train", True, True, part("rental0", 0), [])),
                  "rental1": listed("rental1", ("train", True, False, part("rental1", 1), [])),
                  "rental2": listed("rental2", ("train", False, False, part("rental2", 2, "exit 3", "ended 1001"), []))})
    lines = table(found, ["rental0", "rental1", "rental2"]).splitlines()
    assert lines[0].split() == ["name", "command", "started", "elapsed", "rental0", "rental1", "rental2", "state"]
    assert re.fullmatch(r"train\s+python train.py --lr 3e-4\s+\S+ \S+\s+\d+[hms]\S*\s+running\s+running\s+failed 3\s+"
                        r"running \(rental2 exited 3\)", lines[1]), lines[1]
    grouped = table(found, [f"rental{n}" for n in range(8)]).splitlines()
    assert "nodes" in grouped[0].split() and "running: rental0, rental1; failed 3: rental2" in grouped[1]
    assert duration(59) == "59s" and duration(61) == "1m01s" and duration(3 * 3600 + 12 * 60) == "3h12m"


def render_scripts(grace=1):
    return {
        "job.sh": render("job.sh.j2", job="t", dir=job_dir("t"), grace=grace, workspace="/nonexistent",
                         repo="/nonexistent/r", venv="/nonexistent/r/venv", torchrun=False),
        "jobs.sh": render("jobs.sh.j2", jobs=JOBS, ssh_config="multinode_config", lost_after=4),
        "watch.sh": render("job_watch.sh.j2", job="t", dir=job_dir("t"), keep_going=False, lost_after=4,
                           ssh_config="multinode_config", members=[{"alias": "rental0", "target": "local"},
                                                                   {"alias": "rental1", "target": "worker1"}]),
    }


def test_the_node_scripts_parse():
    for name, script in render_scripts().items():
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0, name
        assert "{{" not in script and "{%" not in script


@pytest.fixture
def node(tmp_path):
    """A node's login home here: run(args...) runs bash with HOME there, in it."""
    home = tmp_path / "home"
    home.mkdir()
    scripts = render_scripts()
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}

    def run(*args, script="jobs.sh", stdin=None):
        return subprocess.run(["bash", "-c", scripts[script], script, *args], cwd=home, env=env, text=True,
                              capture_output=True, input=stdin, timeout=60)

    def launch(command):
        new = home / JOBS / ".new-t-1"
        new.mkdir(parents=True)
        files = {"env": "export NODE_RANK=0\n", "command": command, "job.sh": scripts["job.sh"],
                 "state": "id 1\nname t\nalias rental0\nrank 0\nmembers rental0\nport 29501\n"}
        for name, text in files.items():
            (new / name).write_text(text)
        return subprocess.run(["bash", str(new / "job.sh"), "start", str(new)], cwd=home, env=env, text=True,
                              capture_output=True, timeout=30)

    def follow(line=None):
        """job.sh follow, its stdin open (as the watchdog's is) and given ``line``, until it says how the job ended."""
        proc = subprocess.Popen(["bash", str(home / job_dir("t") / "job.sh"), "follow"], cwd=home, env=env, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        if line:
            proc.stdin.write(line)
            proc.stdin.flush()
        out = proc.stdout.read()  # it ends by itself once it said so
        proc.stdin.close()
        proc.wait(timeout=30)
        return out

    yield SimpleNamespace(home=home, dir=home / job_dir("t"), run=run, launch=launch, follow=follow)
    for dirpath in (home / JOBS).glob("*"):  # what a failed test left running: the supervisors, the jobs
        state = dict(ln.split(" ", 1) for ln in (dirpath / "state").read_text().splitlines() if " " in ln)
        for key, kill in (("supervisor", os.kill), ("pid", os.killpg)):
            if int(state.get(key, 0)) > 1:
                try:
                    kill(int(state[key]), 9)
                except OSError:
                    pass


def listed_here(node):
    return parse_list("rental0", node.run("list").stdout)["t"]


def test_a_job_runs_under_its_supervisor_and_says_how_it_ended(node):
    started = node.launch('echo "rank $NODE_RANK"; exit 7')
    assert started.returncode == 0 and re.fullmatch(r"JOB_STARTED \d+ 1\n", started.stdout), started
    ended = node.follow()
    assert re.fullmatch(r"JOB_FOLLOWING 1\nJOB_ENDED 7 \d+\.\d+ \n", ended), ended
    assert (node.dir / "output.log").read_text() == "rank 0\n[multinode] exited 7\n"
    assert oct((node.dir).stat().st_mode)[-3:] == "700"
    for _ in range(50):  # its supervisor ends just after it recorded the exit
        here = listed_here(node)
        if not here.supervised:
            break
        time.sleep(0.05)
    assert here.state["exit"] == "7" and not here.supervised and here.command == 'echo "rank $NODE_RANK"; exit 7'
    assert node.run("tail", "t", "1").stdout == "[multinode] exited 7\n"


def test_stop_takes_the_whole_group_and_a_stubborn_one_gets_kill(node):
    assert node.launch("trap '' TERM; sleep 300 & sleep 300; wait").returncode == 0
    assert node.run("check", "t", "-").stdout == "JOB_RUNNING t\n"
    again = node.launch("true")  # a second start of a running job is refused there too
    assert again.returncode == 3 and "JOB_REFUSED a job t is already running here" in again.stdout
    pgid = listed_here(node).state["pid"]
    begun = time.monotonic()
    assert node.run("stop", "t", "by fab stop").returncode == 0
    assert 1 <= time.monotonic() - begun < 10  # TERM ignored: KILL after the 1 s grace
    left = subprocess.run(["ps", "-o", "stat=", "-g", pgid], capture_output=True, text=True).stdout.split()
    assert [s for s in left if not s.startswith("Z")] == []  # a zombie waits for its reaper, nothing runs
    here = listed_here(node)
    assert here.state["stopped"] == "by fab stop" and here.state["exit"] == "137"
    assert node.run("stop", "t", "again").returncode == 0  # nothing left to stop: fine
    assert node.run("check", "t", "-").stdout == ""


def test_a_stop_line_from_the_watchdog_and_a_vanished_supervisor(node):
    assert node.launch("sleep 300").returncode == 0
    stopped = node.follow("stop rental2 failed 137\n")
    assert re.search(r"^JOB_ENDED 143 \S+ rental2 failed 137$", stopped, re.M), stopped
    assert node.launch("sleep 300").returncode == 0
    here = listed_here(node)
    supervisor, pgid = int(here.state["supervisor"]), int(here.state["pid"])
    assert pgid > 1 and os.getpgid(pgid) == pgid != os.getpgid(0)  # the job's own group, never ours
    os.kill(supervisor, 9)
    os.killpg(pgid, 9)
    time.sleep(0.2)
    assert "JOB_VANISHED its supervisor is gone" in node.follow()
    assert node_state(jobs({"rental0": {"t": listed_here(node)}})[0], "rental0") == ("lost", None)


def test_check_reads_the_heads_aliases_and_picks_a_free_port(node):
    (node.home / ".ssh").mkdir()
    (node.home / ".ssh/multinode_config").write_text(
        "# multinode: the worker aliases\nHost worker1\n    HostName 10.0.0.2\n    User ubuntu\n"
        "Host worker2\n    HostName 10.0.0.9\nHost worker1 worker2\n    KexAlgorithms curve25519-sha256\n")
    out = node.run("check", "t", "0", "worker1:10.0.0.2", "worker2:10.0.0.3", "worker3:10.0.0.4").stdout
    assert re.fullmatch(r"JOB_PORT (\d+)\nJOB_NO_ALIAS worker2\nJOB_NO_ALIAS worker3\n", out), out
    assert 29500 <= int(out.split()[1]) < 30500
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert node.run("check", "t", str(port)).stdout == f"JOB_PORT_BUSY {port}\n"
    assert node.run("check", "t", str(port)).stdout == f"JOB_PORT {port}\n"


FAKE_SSH = """#!/bin/bash
# ssh, stand-in: the options and the host go; the command runs here, in the host's home (FAKE_HOMES/HOST).
while [[ $1 == -* ]]; do case $1 in -F | -o) shift 2 ;; *) shift ;; esac; done
host=$1
shift
if [ ! -d "$FAKE_HOMES/$host" ]; then echo "ssh: connect to host $host port 22: No route to host" >&2; exit 255; fi
cd "$FAKE_HOMES/$host" && HOME="$FAKE_HOMES/$host" exec bash -c "$*"
"""


@pytest.fixture
def pair(tmp_path):
    """The head (rental0) and a worker (rental1, its home FAKE_HOMES/worker1), ssh a stand-in; worker2 unreachable."""
    homes, bin_dir = tmp_path / "homes", tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_HOMES": str(homes)}
    scripts = render_scripts()

    def launch(home, alias, rank, command):
        new = home / JOBS / f".new-t-{alias}"
        new.mkdir(parents=True)
        for name, text in {"env": f"export NODE_RANK={rank}\n", "command": command, "job.sh": scripts["job.sh"],
                           "state": f"id 1\nname t\nalias {alias}\nrank {rank}\nmembers rental0 rental1\n"}.items():
            (new / name).write_text(text)
        assert subprocess.run(["bash", str(new / "job.sh"), "start", str(new)], cwd=home, env={**env, "HOME": str(home)},
                              capture_output=True, timeout=30).returncode == 0

    def watch(keep_going=False, members=("rental0", "rental1")):
        head = homes / "head"
        script = render("job_watch.sh.j2", job="t", dir=job_dir("t"), keep_going=keep_going, lost_after=2,
                        ssh_config="multinode_config", members=[{"alias": a, "target": "local" if a == "rental0"
                                                                 else f"worker{a[-1]}"} for a in members])
        new = head / JOBS / ".watch-t-1"
        new.mkdir(parents=True)
        (new / "watch.sh").write_text(script)
        (new / "watch").write_text("id 1\nname t\n")
        out = subprocess.run(["bash", str(new / "watch.sh"), "start", str(new)], cwd=head,
                             env={**env, "HOME": str(head)}, capture_output=True, text=True, timeout=30)
        assert out.stdout == f"JOB_WATCHING {len(members)}\n", out
        return head / job_dir("t")

    def record(where, name="watch"):
        for _ in range(200):
            text = (where / name).read_text()
            if "\nended " in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"the watchdog did not end: {text}")

    yield SimpleNamespace(head=homes / "head", worker=homes / "worker1", launch=launch, watch=watch, record=record)
    for state in homes.glob(f"*/{JOBS}/t/state"):
        pid = dict(ln.split(" ", 1) for ln in state.read_text().splitlines() if " " in ln).get("pid", "0")
        if int(pid) > 1:
            try:
                os.killpg(int(pid), 9)
            except OSError:
                pass


def test_the_watchdog_stops_the_head_when_a_worker_fails(pair):
    pair.launch(pair.head, "rental0", 0, "sleep 300")
    pair.launch(pair.worker, "rental1", 1, "sleep 1; exit 3")
    record = pair.record(pair.watch())
    assert re.search(r"^verdict rental1 \S+ failed 3$", record, re.M), record
    assert re.search(r"^first rental1 \S+ failed 3$", record, re.M) and "stopping rental1 failed 3" in record
    assert re.search(r"^verdict rental0 \S+ stopped rental1 failed 3$", record, re.M), record
    head = (pair.head / job_dir("t") / "state").read_text()
    assert "stopped rental1 failed 3\n" in head and "exit 143\n" in head


def test_the_watchdog_keeps_going_and_finds_a_node_lost(pair):
    pair.launch(pair.head, "rental0", 0, "sleep 2")
    begun = time.monotonic()
    record = pair.record(pair.watch(keep_going=True, members=("rental0", "rental2")))  # worker2: no route
    assert re.search(r"^verdict rental2 \S+ lost no answer for 2s: ssh: connect to host worker2 port 22: No route",
                     record, re.M), record
    assert re.search(r"^verdict rental0 \S+ exited 0$", record, re.M) and "stopping" not in record
    assert time.monotonic() - begun < 8


def test_stop_takes_a_job_whose_supervisor_vanished(node):
    assert node.launch("sleep 300").returncode == 0
    here = listed_here(node)
    os.kill(int(here.state["supervisor"]), 9)
    pgid = int(here.state["pid"])
    assert pgid > 1 and os.getpgid(pgid) == pgid != os.getpgid(0)
    assert node.run("stop", "t", "by fab stop").returncode == 0
    left = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    assert [s for s in left if not s.startswith("Z")] == []
