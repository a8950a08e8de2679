"""End to end: day-two tasks on the sandbox: exec, sync, a user's own task, teardown."""

import json
import os
import re
import shlex
import shutil
from pathlib import Path

from tests.conftest import ROOT, SECRETS, WANDB, node_sh
from tests.docblocks import block, commands
from tests.test_hostkeys_users_e2e import rows

MULTINODE = str(Path(shutil.which("fab") or ROOT / ".venv/bin/fab").with_name("multinode"))


def test_exec_groups_output_and_names_failures(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    r = laptop.fab("exec", 'echo "same here"; [ "$(hostname)" != node1 ] || { echo bad >&2; exit 3; }')
    assert r.returncode == 1, r.stdout + r.stderr
    assert rows(r.stdout, "exec") == {"rental1": ("FAILED", "exit 3")}
    assert "---------------- rental0, rental2 ----------------\nsame here\n" in r.stdout
    assert "---------------- rental1 (exit 3) ----------------\nsame here\nbad\n" in r.stdout
    assert "rental1  198.18.0.11  exec: exit 3" in r.stdout  # the summary names it
    # Chained after another task, on the same connections; a subset by alias; a timeout.
    chained = laptop.fab("hostkeys", "exec", "uname -s")
    assert chained.returncode == 0 and "---------------- rental0, rental1, rental2 ----------------\nLinux\n" in chained.stdout
    some = laptop.fab("exec", "--nodes", "rental0,rental2", "hostname")
    assert "rental1" not in some.stdout.split("----\n", 1)[1] and "node2" in some.stdout
    assert some.stdout.rstrip().endswith("all 2 node(s) ok"), some.stdout  # the summary counts those it ran on
    slow = laptop.fab("exec", "--timeout", "1", "sleep 30")
    assert slow.returncode == 1 and all(s == "FAILED" and "no answer after 1s" in d for s, d in rows(slow.stdout, "exec").values())
    assert laptop.fab("exec", "--nodes", "rental7", "true").returncode == 2


def test_sync_sends_only_what_differs(configured, healthy, tmp_path):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    src = tmp_path / "src"
    (src / "pkg/__pycache__").mkdir(parents=True)
    (src / "pkg/train.py").write_text("print('v1')\n")
    (src / "pkg/__pycache__/train.cpython-311.pyc").write_bytes(b"\0")
    (src / "run it.sh").write_text("#!/bin/sh\necho run\n")
    (src / "run it.sh").chmod(0o750)
    (src / "data.log").write_text("big\n")
    dest = "/tmp/synced"
    dry = laptop.fab("sync", str(src), "--dest", dest, "--exclude", "*.log", "--dry-run")
    assert dry.returncode == 0 and all("would send 2 file(s)" in d for _, d in rows(dry.stdout, "sync").values())
    assert node_sh(sb, 1, f"test -e {dest}").returncode != 0  # a dry run changes nothing
    first = laptop.fab("sync", str(src), "--dest", dest, "--exclude", "*.log")
    assert first.returncode == 0, first.stdout + first.stderr
    assert {s for s, _ in rows(first.stdout, "sync").values()} == {"changed"}
    for nid in range(3):
        listing = node_sh(sb, nid, f"cd {dest} && find . -type f | sort && stat -c %a 'run it.sh' && cat pkg/train.py").stdout
        assert listing == "./pkg/train.py\n./run it.sh\n750\nprint('v1')\n"
    again = laptop.fab("sync", str(src), "--dest", dest, "--exclude", "*.log")
    assert rows(again.stdout, "sync") == {f"rental{n}": ("ok", f"{dest}: up to date (3 entries)") for n in range(3)}
    (src / "pkg/train.py").write_text("print('v2')\n")
    changed = laptop.fab("sync", str(src), "--dest", dest, "--exclude", "*.log")
    assert all(d.startswith(f"{dest}: sent 1 file(s), 12 B") for _, d in rows(changed.stdout, "sync").values())
    assert [node_sh(sb, n, f"cat {dest}/pkg/train.py").stdout for n in range(3)] == ["print('v2')\n"] * 3
    # A link is sent as a link; pointed elsewhere, it is sent again.
    (src / "latest").symlink_to("pkg/train.py")
    laptop.fab("sync", str(src), "--dest", dest, "--exclude", "*.log")
    assert node_sh(sb, 1, f"readlink {dest}/latest").stdout == "pkg/train.py\n"
    (src / "latest").unlink()
    (src / "latest").symlink_to("run it.sh")
    relinked = laptop.fab("sync", str(src), "--dest", dest, "--exclude", "*.log")
    assert relinked.returncode == 0 and all("sent 0 file(s)" in d for _, d in rows(relinked.stdout, "sync").values())
    assert [node_sh(sb, n, f"readlink {dest}/latest").stdout for n in range(3)] == ["run it.sh\n"] * 3
    assert {s for s, _ in rows(laptop.fab("sync", str(src), "--dest", dest, "--exclude", "*.log").stdout,
                               "sync").values()} == {"ok"}
    assert laptop.fab("sync", str(tmp_path / "nowhere")).returncode == 2


def test_a_users_own_tasks_from_the_docs_run_outside_the_project(configured, healthy, tmp_path):
    """docs/extending.md's fabfile.py and its commands, as they stand there, from a directory of the user's."""
    laptop, sb = configured, healthy
    mine = tmp_path / "myproject"
    mine.mkdir()
    (mine / "fabfile.py").write_text(block("docs/extending.md", "extending-fabfile"))
    least, chained, uptime = [shlex.split(line) for line in commands(block("docs/extending.md", "extending-commands"))]
    assert least[0] == chained[0] == uptime[0] == "multinode"
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    for nid, count in ((0, 8), (1, 8), (2, 7)):
        sb.fake_gpus(nid, count)
    try:
        r = laptop.run(MULTINODE, *least[1:], cwd=mine)
        both = laptop.run(MULTINODE, *chained[1:], cwd=mine)
        up = laptop.run(MULTINODE, *uptime[1:], cwd=mine)
    finally:
        for nid in range(3):
            sb.fake_gpus(nid, 0)
    assert r.returncode == 1, r.stdout + r.stderr
    assert rows(r.stdout, "gpus") == {"rental0": ("ok", "8 GPU(s)"), "rental1": ("ok", "8 GPU(s)"),
                                      "rental2": ("FAILED", "7 GPU(s), fewer than 8")}
    assert [s for s, _ in rows(both.stdout, "hostkeys").values()] == ["ok"] * 3
    assert rows(both.stdout, "gpus")["rental0"] == ("ok", "8 GPU(s)")
    assert up.returncode == 0, up.stdout + up.stderr
    assert sorted(re.findall(r"^(rental\d)  up \d+\.\d h$", up.stdout, re.M)) == ["rental0", "rental1", "rental2"]


def node_files(sb, nid):
    """Every regular file of node ``nid``'s own filesystem (its overlay's upper layer: what changed there)."""
    upper = Path(sb.nodes[nid]["dir"]) / "upper"
    return [p for p in upper.rglob("*") if p.is_file() and not p.is_symlink()]


def holding(sb, nid, values):
    """The files of node ``nid`` holding any of ``values``: the test's own search, from the host."""
    found = []
    for path in node_files(sb, nid):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(v.encode() in data for v in values):
            found.append(str(path))
    return found


def test_teardown_leaves_no_secret_and_forgets_the_cluster(configured, healthy):
    laptop, sb = configured, healthy
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    key = laptop.home / ".config/multinode/cluster_key"
    values = list(SECRETS.values()) + [WANDB] + [ln for ln in key.read_text().splitlines() if not ln.startswith("-")][2:]
    values += [ln for ln in Path(json.loads((laptop.home / ".fabric.yaml").read_text())["multinode"]["dotfiles"]["age_key"])
               .read_text().splitlines() if ln.startswith("AGE-SECRET-KEY-")]
    decrypted = node_sh(sb, 0, "cat ~/.secret").stdout.strip()  # a file the dotfiles decrypt
    assert decrypted
    values.append(decrypted)
    for nid in range(3):
        assert holding(sb, nid, values), "the search must find the secrets before teardown"
    # --dry-run: what the node script's parts remove, and what is forgotten here; nothing changes.
    dry = laptop.fab("teardown", "--dry-run", "--workspace")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    status, detail = rows(dry.stdout, "teardown")["rental1"]
    assert detail.startswith("would remove: Ray and the tmux sessions multinode, exec, ray (stopped); ") and \
        "the age identity (~/key.txt)" in detail and detail.endswith("its venv (--workspace): /workspace"), detail
    assert "teardown: would forget" in dry.stdout and holding(sb, 1, values)
    sb.exec(2, "ip", "link", "set", "eth0", "down")  # rental2 is gone already
    td = laptop.fab("teardown", "--yes", timeout=300)
    assert td.returncode == 1, td.stdout + td.stderr
    for nid in (0, 1):
        status, detail = rows(td.stdout, "teardown")[f"rental{nid}"]
        assert status == "changed" and "no secret value left in /home/" in detail, detail
        assert holding(sb, nid, values) == []
        assert node_sh(sb, nid, "pgrep -x raylet; tmux ls 2>/dev/null").stdout == ""
        assert node_sh(sb, nid, "ls ~/.cache/multinode/dotfiles.seal").returncode == 2  # what chezmoi verify compared
    assert rows(td.stdout, "teardown")["rental2"][0] == "FAILED"
    assert "warning: rental2 (198.18.0.12) could not be reached: its secrets could NOT be wiped" in td.stdout
    assert holding(sb, 2, values)  # still there: it never got the teardown
    # Forgotten here, all three: aliases, host keys, the remembered cluster and its key.
    assert "rental" not in (laptop.home / ".ssh/config").read_text()
    assert "198.18.0.1" not in (laptop.home / ".ssh/known_hosts").read_text()
    assert not any((laptop.home / ".config/multinode" / f).exists()
                   for f in ("cluster.json", "cluster_key", "cluster_key.pub", "cluster_key.cluster"))
    gone = laptop.ssh("rental0", "true")
    assert gone.returncode != 0 and "rental0" in gone.stderr
    assert not os.path.exists(laptop.home / ".config/multinode/cluster.json")
