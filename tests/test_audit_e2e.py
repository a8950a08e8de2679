"""End to end: the holes an audit reproduced (issue 21), each reproduced here first.

Pins that must outlive another cluster's run; teardown's proof (files only
root can read, values sent earlier, short lines, git's URL-encoded tokens);
the head's ssh drop-in; inputs refused before anything connects; secrets and
state never left behind; a user's task never waiting on the laptop's stdin.
"""

import json
import re
import subprocess
import time
import urllib.parse
from pathlib import Path

from multinode.sandbox.forge import PRIVATE_HTTP, TOKEN, TOKEN_USER
from tests.conftest import FAB, SECRETS, node_sh
from tests.test_hostkeys_users_e2e import accepted, rows


def fingerprint(sb, nid):
    return sb.exec(nid, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]


def fresh_repo(sb):
    """No workspace repo on the nodes: the private repository's clone, not another origin's (and the
    other tests' repo afterwards, not this one)."""
    for nid in range(len(sb.nodes)):
        sb.exec(nid, "rm", "-rf", "/workspace/workspace")


def grep_node(sb, nid, value):
    """The files of node ``nid`` (home, workspace, /tmp, /etc) holding ``value``, searched as root."""
    out = sb.exec(nid, "grep", "-rlF", "-D", "skip", "--", value, "/home", "/root", "/workspace", "/tmp", "/var/tmp",
                  "/etc", check=False)
    return out.stdout.split()


def test_a_pinned_key_stays_pinned_whatever_ran_in_between(configured, healthy):
    laptop, sb = configured, healthy
    r = laptop.fab("-H", sb.hosts, "setup", "--tail", "0", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    # Another cluster (here: one machine, named by another private address) becomes the remembered one.
    other = laptop.fab("-H", f"{sb.nodes[0]['public']}:198.19.0.99", "hostkeys")
    assert other.returncode == 0, other.stdout + other.stderr
    old = fingerprint(sb, 1)
    sb.rekey(1)  # the second machine was reinstalled behind its address (or someone sits there now)
    new = fingerprint(sb, 1)
    fresh = "sk-ant-after-rekey-0123456789"
    laptop.env["ANTHROPIC_API_KEY"] = fresh
    again = laptop.fab("-H", sb.hosts, "setup", "--tail", "0", timeout=900)
    assert again.returncode == 1, again.stdout + again.stderr
    status, detail = rows(again.stdout, "hostkeys")["rental1"]
    assert status == "FAILED" and "changed" in detail and old in detail and new in detail, detail
    assert "--reinstalled rental1" in detail
    assert rows(again.stdout, "bootstrap")["rental1"] == ("skipped", "failed earlier in hostkeys")
    assert {rows(again.stdout, "bootstrap")[a][0] for a in ("rental0", "rental2")} <= {"ok", "changed"}
    assert grep_node(sb, 1, fresh) == []  # sent nothing
    assert grep_node(sb, 0, fresh) and grep_node(sb, 2, fresh)  # the others got it
    # The pin history names the machine with its key, in one file of the laptop.
    pins = json.loads((laptop.home / ".config/multinode/pins.json").read_text())["pins"]
    assert {(p["public"], p["private"]) for p in pins} >= {(n["public"], n["private"]) for n in sb.nodes}


def test_forget_and_teardown_release_pins_and_say_so(laptop, healthy):
    sb = healthy
    laptop.configure(**{**sb.forge.config(), "repo": {"url": ""}, "dotfiles": {"repo": ""}, "ray": {"enabled": False},
                        "secrets": {"env": [], "wandb": "", "huggingface": ""}})
    assert laptop.fab("-H", sb.hosts, "hostkeys").returncode == 0
    sb.rekey(2)
    refused = laptop.fab("-H", sb.hosts, "hostkeys")
    assert refused.returncode == 1 and rows(refused.stdout, "hostkeys")["rental2"][0] == "FAILED"
    bad = laptop.fab("hostkeys", "--forget", "198.18.0.99")
    assert bad.returncode == 2 and "bad --forget '198.18.0.99'" in bad.stderr
    gone = laptop.fab("hostkeys", "--forget", sb.nodes[2]["public"])
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert f"forgot the pin of {sb.nodes[2]['public']}" in gone.stdout
    assert sb.nodes[2]["public"] not in (laptop.home / ".ssh/known_hosts").read_text()
    back = laptop.fab("-H", sb.hosts, "hostkeys")
    assert back.returncode == 0, back.stdout + back.stderr
    assert rows(back.stdout, "hostkeys")["rental2"][0] == "changed"
    # teardown gives the machines back: it says which pins it forgets; a new key there is then a new rental's.
    td = laptop.fab("teardown", "--yes", timeout=300)
    assert td.returncode == 0, td.stdout + td.stderr
    assert re.search(r"teardown: forgot .*pins\.json: the host key pins of rental0, rental1, rental2", td.stdout)
    sb.rekey(0)
    assert laptop.fab("-H", sb.hosts, "hostkeys").returncode == 0


def test_teardown_proves_every_value_sent_and_reads_what_only_root_can(configured, healthy, tmp_path):
    laptop, sb = configured, healthy
    config = json.loads((laptop.home / ".fabric.yaml").read_text())["multinode"]
    service = tmp_path / "service.json"  # a secret file of several lines, some as short as "{"
    service.write_text('{\n  "private_key": "-----secret-service-key-7f3a9c-----",\n  "client": "svc-4411a"\n}\n')
    config["secrets"]["env"] = ["ANTHROPIC_API_KEY", "SERVICE_JSON"]
    config["secrets"]["files"]["SERVICE_JSON"] = str(service)
    # A private repository: its token travels as a git credential.
    config["repo"]["url"] = f"http://{TOKEN_USER}:{urllib.parse.quote(TOKEN, safe='')}@{PRIVATE_HTTP[7:]}/git/workspace.git"
    laptop.configure(**config)
    fresh_repo(sb)
    try:
        teardown_proof(laptop, sb)
    finally:
        fresh_repo(sb)


def teardown_proof(laptop, sb):
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    old = SECRETS["ANTHROPIC_API_KEY"]
    laptop.env["ANTHROPIC_API_KEY"] = "sk-ant-changed-since-0987654321"  # the laptop's value changed since
    node_sh(sb, 0, f"printf '%s\\n' {old} >/tmp/copied-secret; printf '{{\\n}}\\n' >/tmp/braces")
    sb.exec(1, "sh", "-c", f"printf '%s\\n' {SECRETS['HF_TOKEN']} >/var/tmp/root-only && chmod 600 /var/tmp/root-only")
    encoded = urllib.parse.quote(TOKEN, safe="")
    node_sh(sb, 1, f"printf '%s\\n' 'http://{TOKEN_USER}:{encoded}@198.18.0.2:8081' >~/.git-credentials")
    node_sh(sb, 2, "cp ~/.env /tmp/env-copy")  # the whole file, several values at once
    sudoers = Path(sb.nodes[2]["root"]) / "etc/sudoers.d/90-ubuntu"
    sb.exec(2, "sh", "-c", "echo unreadable >/var/tmp/not-mine && chmod 600 /var/tmp/not-mine")
    saved = sudoers.read_text()
    sudoers.unlink()  # node 2: no root to read it with
    try:
        td = laptop.fab("teardown", "--yes", timeout=600)
    finally:
        sudoers.write_text(saved)
        sudoers.chmod(0o440)
    assert td.returncode == 1, td.stdout + td.stderr
    got = rows(td.stdout, "teardown")
    assert got["rental0"][0] == "FAILED" and "a secret value is still in /tmp/copied-secret" in got["rental0"][1]
    assert "/tmp/braces" not in got["rental0"][1]
    assert got["rental1"][0] == "FAILED" and "/var/tmp/root-only" in got["rental1"][1], got["rental1"]
    assert node_sh(sb, 1, "cat ~/.git-credentials").returncode != 0  # only our token: the file went
    assert got["rental2"][0] == "FAILED" and "could not read: " in got["rental2"][1] and \
        "/var/tmp/not-mine" in got["rental2"][1] and "still in /tmp/env-copy" in got["rental2"][1], got["rental2"]
    # Not proven clean: what they were sent stays listed on the laptop (0600), for the next teardown.
    ledger = sorted((laptop.home / ".config/multinode/ledger").glob("*.json"))
    assert len(ledger) == 3 and all(p.stat().st_mode & 0o777 == 0o600 for p in ledger)
    node_sh(sb, 0, "rm -f /tmp/copied-secret")
    sb.exec(1, "rm", "-f", "/var/tmp/root-only")
    sb.exec(2, "rm", "-f", "/var/tmp/not-mine")
    # The old value, no longer on the laptop, is still searched for: from the ledger.
    clean = laptop.fab("-H", sb.hosts, "hostkeys", "teardown", "--yes", timeout=600)
    assert rows(clean.stdout, "teardown")["rental0"][0] in ("ok", "changed"), clean.stdout
    assert rows(clean.stdout, "teardown")["rental2"][0] == "FAILED"  # /tmp/env-copy: still there
    assert "/tmp/env-copy" in rows(clean.stdout, "teardown")["rental2"][1]
    node_sh(sb, 2, "rm -f /tmp/env-copy /tmp/braces")


def test_a_repository_token_works_on_every_run_and_stays_off_the_node(laptop, healthy):
    sb = healthy
    url = f"http://{TOKEN_USER}:{urllib.parse.quote(TOKEN, safe='')}@{PRIVATE_HTTP[7:]}/git/workspace.git"
    laptop.configure(**{**sb.forge.config(), "repo": {"url": url, "branch": "main"}, "dotfiles": {"repo": ""},
                        "ray": {"enabled": False}, "secrets": {"env": [], "wandb": "", "huggingface": ""}})
    node_sh(sb, 0, "printf '[credential]\\n    helper = store\\n' >~/.gitconfig")  # the user's own store helper
    fresh_repo(sb)
    try:
        first = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", timeout=900)
        assert first.returncode == 0, first.stdout + first.stderr
        again = laptop.fab("bootstrap", "--tail", "0", timeout=900)  # fetches again, with the token
        assert again.returncode == 0, again.stdout + again.stderr
        origin = node_sh(sb, 0, "git -C /workspace/workspace config --get remote.origin.url").stdout.strip()
        assert origin == f"{PRIVATE_HTTP}/git/workspace.git"  # the token never reaches the node's files
        for nid in range(3):
            assert grep_node(sb, nid, TOKEN) == [] and grep_node(sb, nid, urllib.parse.quote(TOKEN, safe="")) == []
    finally:
        node_sh(sb, 0, "rm -f ~/.gitconfig ~/.git-credentials")
        fresh_repo(sb)


def test_teardown_with_no_value_to_search_matches_no_file(laptop, healthy):
    sb = healthy
    laptop.configure(**{**sb.forge.config(), "repo": {"url": ""}, "dotfiles": {"repo": ""},
                        "secrets": {"env": [], "wandb": "", "huggingface": ""}})
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    (laptop.home / ".config/multinode/cluster_key").unlink(missing_ok=True)
    td = laptop.fab("teardown", "--yes", timeout=300)
    assert td.returncode == 0, td.stdout + td.stderr
    assert all(d.endswith("no secret value is known to have been sent here") for _, d in rows(td.stdout, "teardown").values())


def test_the_heads_drop_in_leaves_every_ssh_working(laptop, healthy):
    sb = healthy
    laptop.configure(**{**sb.forge.config(), "repo": {"url": ""}, "dotfiles": {"repo": ""}, "ray": {"enabled": False},
                        "secrets": {"env": [], "wandb": "", "huggingface": ""}})
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", "--tail", "0", "head-ssh", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    user = sb.nodes[0]["user"]
    assert "/etc/ssh/ssh_config.d/multinode-" in rows(r.stdout, "head-ssh")["rental0"][1]
    for nid in range(3):
        assert sb.exec(nid, "ssh", "-G", "somehost", check=False).returncode == 0  # root's own ssh
        assert node_sh(sb, nid, "ssh -G somehost >/dev/null").returncode == 0
    plain = node_sh(sb, 0, "ssh worker1 hostname; ssh worker2 hostname")
    assert (plain.returncode, plain.stdout) == (0, "node1\nnode2\n"), plain.stderr
    dropin = sb.exec(0, "cat", f"/etc/ssh/ssh_config.d/multinode-{user}.conf").stdout
    assert "Include" not in dropin and f"Match localuser {user} originalhost worker1" in dropin


def test_bad_inputs_are_refused_before_anything_connects_or_is_written(laptop, healthy, tmp_path):
    sb = healthy
    base = {**sb.forge.config(), "repo": {"url": ""}, "dotfiles": {"repo": ""}}
    laptop.configure(**base)
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    state = laptop.home / ".config/multinode/cluster.json"
    logins = [accepted(sb, n) for n in range(3)]
    src = tmp_path / "src"
    src.mkdir()

    def refused(*args, stdin=None, says):
        before = laptop.snapshot()
        r = laptop.fab(*args, stdin=stdin)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], (args, r.stderr)
        assert laptop.snapshot() == before

    for ws in ("//home", "/home/", "/tmp/../etc", "/home/ubuntu", "/root/ws", "/usr/lib", "/var/x/.."):
        laptop.configure(**{**base, "workspace": ws})
        refused("verify", says=f"bad multinode.workspace {ws!r}")
    laptop.configure(**base)
    refused("sync", str(src), "--dest", "../../etc", says="bad --dest '../../etc': climbs out")
    table = f"Public IP  Private IP\n{sb.nodes[0]['public']}  {sb.nodes[0]['private']}\nPublic IP  Private IP\n"
    refused("-H", "-", "hostkeys", stdin=table, says="bad line 3 'Public IP  Private IP': not a node")
    for spec in ("[::ffff:198.18.0.10]:198.19.0.10", "198.18.0.10:169.254.0.7", "[fe80::1]:198.19.0.10"):
        refused("-H", spec, "hostkeys", says="bad ")
    refused("-H", "-", "hostkeys", stdin="::ffff:127.0.0.1 198.19.0.10\n", says="IPv4-mapped")
    # The remembered cluster is read as -H is: a value that would become an ssh option is refused.
    data = json.loads(state.read_text())
    data["nodes"][1]["nid"] = "1\n    ProxyCommand touch /tmp/pwned"
    state.write_text(json.dumps(data))
    refused("detect-user", says="cannot read the remembered cluster")
    data["nodes"][1].update(nid=1, user="ubuntu\nHost *")
    state.write_text(json.dumps(data))
    refused("detect-user", says="cannot read the remembered cluster")
    assert "ProxyCommand" not in (laptop.home / ".ssh/config").read_text()
    assert [accepted(sb, n) for n in range(3)] == logins


def test_sync_never_writes_through_a_link_on_the_node(laptop, healthy, tmp_path):
    sb = healthy
    laptop.configure(**{**sb.forge.config(), "repo": {"url": ""}, "dotfiles": {"repo": ""}})
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("mine\n")
    (src / "sub/b.txt").write_text("mine too\n")
    node_sh(sb, 0, "mkdir -p /tmp/dest0 /tmp/victim && echo precious >/tmp/victim/a && "
                   "ln -s /tmp/victim/a /tmp/dest0/.a.txt.multinode-sync")
    node_sh(sb, 1, "mkdir -p /tmp/dest0 /tmp/victim && ln -s /tmp/victim /tmp/dest0/sub")
    node_sh(sb, 2, "mkdir -p /tmp/victim && ln -s /tmp/victim /tmp/dest0")
    try:
        r = laptop.fab("sync", str(src), "--dest", "/tmp/dest0")
        got = rows(r.stdout, "sync")
        assert got["rental0"][0] == "changed", r.stdout + r.stderr
        assert node_sh(sb, 0, "cat /tmp/victim/a /tmp/dest0/a.txt").stdout == "precious\nmine\n"
        assert node_sh(sb, 0, "test -L /tmp/dest0/a.txt").returncode == 1
        assert got["rental1"][0] == "FAILED" and "/tmp/dest0/sub" in got["rental1"][1] and "link" in got["rental1"][1]
        assert got["rental2"][0] == "FAILED" and "symbolic link" in got["rental2"][1]
        for nid in (1, 2):
            assert node_sh(sb, nid, "ls /tmp/victim").stdout == ""
    finally:
        for nid in range(3):
            sb.exec(nid, "rm", "-rf", "/tmp/dest0", "/tmp/victim")


def test_no_secret_stays_staged_and_no_failed_write_passes(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    # rental1: the script cannot be put in place (a directory in the way) after the secrets went.
    node_sh(sb, 1, "rm -rf ~/.cache/multinode/node.sh && mkdir -p ~/.cache/multinode/node.sh/in-the-way")
    # rental2: a directory where the age key goes: the write fails, and the step with it.
    node_sh(sb, 2, "rm -rf ~/key.txt && mkdir -p ~/key.txt/in-the-way")
    try:
        r = laptop.fab("bootstrap", "--tail", "0", timeout=900)
    finally:
        node_sh(sb, 1, "rm -rf ~/.cache/multinode/node.sh")
        node_sh(sb, 2, "rm -rf ~/key.txt")
    assert r.returncode == 1, r.stdout + r.stderr
    assert rows(r.stdout, "bootstrap")["rental1"][0] == "FAILED", r.stdout
    assert node_sh(sb, 1, "ls -A ~/.cache/multinode/stage").stdout == ""
    assert "STEP dotfiles failed exit 2: writing /home/ubuntu/key.txt did not take" in \
        (laptop.home / "logs/setup_rental2.log").read_text()
    # rental0: another run holds the lock (driven by its own ssh session): this run waits, gives up, and
    # leaves no secret behind.
    holder = subprocess.Popen(sb.laptop_cmd(
        "ssh", "-F", str(laptop.home / ".ssh/config"), "-o", f"UserKnownHostsFile={laptop.home / '.ssh/known_hosts'}",
        "-o", "BatchMode=yes", "rental0", "exec flock ~/.cache/multinode/lock sh -c 'echo $PPID >~/.cache/multinode/lock.pid; sleep 60'",
        env=laptop.env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if node_sh(sb, 0, "test -s ~/.cache/multinode/lock.pid && pgrep -f 'sleep 60'").returncode == 0:
                break
            time.sleep(0.1)
        waited = laptop.fab("bootstrap", "--tail", "0", timeout=300)
    finally:
        holder.kill()
    assert rows(waited.stdout, "bootstrap")["rental0"][0] == "FAILED"
    assert "another multinode bootstrap is still running" in (laptop.home / "logs/setup_rental0.log").read_text()
    assert node_sh(sb, 0, "ls -A ~/.cache/multinode/stage").stdout == ""


def test_a_users_task_never_waits_on_the_laptops_stdin(laptop, healthy, tmp_path):
    sb = healthy
    laptop.configure(**{**sb.forge.config(), "repo": {"url": ""}, "dotfiles": {"repo": ""}})
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "fabfile.py").write_text(
        "from multinode import collection, node_task\n\n\n"
        "@node_task\ndef reads(node, cxn):\n"
        "    return cxn.run('cat; echo done', hide=True).stdout.strip()\n\n\nns = collection(reads)\n")
    multinode = str(Path(FAB).with_name("multinode"))
    proc = subprocess.Popen(sb.laptop_cmd(multinode, "reads", env=laptop.env), cwd=mine, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=60)  # its stdin stays open: only a closed remote stdin ends `cat`
    finally:
        proc.kill()
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, out + err
    assert {d for _, d in rows(out, "reads").values()} == {"done"}
