"""End to end: fab bootstrap on real sandbox nodes, fed by the local forge.

Everything a node fetches comes from the forge for real (git daemon, HTTP):
the workspace and dotfiles repositories, uv, chezmoi, age, the wheelhouse.
Docker alone is preinstalled in the node image (its install needs the
internet); bootstrap puts the login user in its group.
"""

from multinode.sandbox.forge import SECRET_TEXT
from tests.conftest import SECRETS, USERS, WANDB, node_sh
from tests.test_hostkeys_users_e2e import accepted, rows

MANAGED = [
    "~/.env", "~/.netrc", "~/.cache/huggingface/token", "~/key.txt", "~/.config/chezmoi/chezmoi.toml",
    "~/.secret", "~/.bash_aliases", "~/.ssh/multinode_cluster", "~/.ssh/multinode_cluster.pub", "~/.ssh/authorized_keys",
    "~/.gitconfig", "~/.bashrc", "~/.profile", "~/.tmux.conf", "~/.ssh/config", "~/.dotfiles-onchange.log",
    "~/.config/multinode/nccl.env", "/etc/hosts", "/etc/group", "/etc/nccl.conf", "/etc/environment", "/etc/gitconfig",
]


def checksums(sandbox, nid):
    files = " ".join(MANAGED)
    return node_sh(sandbox, nid, f"cd ~ && stat -c '%n %a %Y' {files} && sha256sum {files}").stdout


def no_secret_in(text, where):
    for value in [*SECRETS.values(), WANDB]:
        assert value not in text, f"secret found in {where}"


def test_bootstrap_sets_up_every_node_and_is_idempotent(configured, healthy):
    laptop, sb = configured, healthy
    # Left open by someone: made private again before any secret is written there.
    node_sh(sb, 2, "mkdir -p ~/.cache/multinode/stage && chmod 755 ~/.cache/multinode ~/.cache/multinode/stage")
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user", "bootstrap", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    no_secret_in(r.stdout + r.stderr, "fab's output")
    cluster_pub = (laptop.home / ".config/multinode/cluster_key.pub").read_text()
    laptop_pub = (laptop.home / ".ssh/id_ed25519.pub").read_text()
    for nid, user in enumerate(USERS):
        check = node_sh(sb, nid, (
            "set -e; cd /workspace/workspace; git rev-parse --abbrev-ref HEAD;"
            " venv/bin/python -c 'import six; print(six.__version__)';"
            " stat -c '%a' ~/.env ~/.netrc ~/.cache/huggingface/token ~/key.txt ~/.ssh/multinode_cluster ~/.cache/multinode;"
            " cat ~/.env ~/.netrc ~/.cache/huggingface/token ~/.secret;"
            " git config --system user.email; git config user.email; id -nG;"
            " test -z \"$(ls -A ~/.cache/multinode/stage)\" && echo unstaged"))
        assert check.returncode == 0, check.stdout + check.stderr
        out = check.stdout
        assert out.startswith("main\n1.17.0\n600\n600\n600\n600\n600\n700\n")  # secrets staged in a 0700 dir
        assert f"export ANTHROPIC_API_KEY={SECRETS['ANTHROPIC_API_KEY']}\n" in out
        assert f"machine api.wandb.ai\n  login user\n  password {WANDB}\n" in out
        assert f"{SECRETS['HF_TOKEN']}\n" in out
        assert SECRET_TEXT in out  # the age-encrypted dotfile, decrypted by chezmoi
        # Ours is the machine's default; the user's dotfiles (~/.gitconfig) win over it.
        assert "ada@example.invalid\ndotfiles@example.invalid\n" in out
        assert "docker" in out.split("dotfiles@example.invalid\n")[1]
        assert out.endswith("unstaged\n")
        keys = node_sh(sb, nid, "cat ~/.ssh/multinode_cluster.pub ~/.ssh/authorized_keys").stdout
        # Authorized from the cluster's private addresses only.
        assert keys.startswith(cluster_pub)
        assert f'from="198.19.0.10,198.19.0.11,198.19.0.12" {cluster_pub}' in keys
        assert laptop_pub.split()[1] not in node_sh(sb, nid, "cat ~/.ssh/multinode_cluster").stdout
        hosts = sb.exec(nid, "cat", "/etc/hosts").stdout
        assert "127.0.1.1" not in hosts
        for other in sb.nodes:
            assert f"{other['private']}\trental{other['nid']}" in hosts
        # Logs: on the node and on the laptop, holding the steps and no secret.
        remote_log = sb.exec(nid, "cat", "/workspace/onstart.log").stdout
        local_log = (laptop.home / "logs" / f"setup_rental{nid}.log").read_text()
        assert "STEP dotfiles" in remote_log and "STEP dotfiles" in local_log
        script = node_sh(sb, nid, "cat ~/.cache/multinode/node.sh").stdout
        for text, where in ((remote_log, "onstart.log"), (local_log, "local log"), (script, "node.sh")):
            no_secret_in(text, where)
    # The cluster key works between nodes.
    hop = node_sh(sb, 0, "ssh -i ~/.ssh/multinode_cluster -o StrictHostKeyChecking=no -o BatchMode=yes "
                         f"{USERS[1]}@{sb.nodes[1]['private']} hostname")
    assert hop.stdout == "node1\n", hop.stderr

    before = [checksums(sb, n) for n in range(3)]
    again = laptop.fab("bootstrap", timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    steps = [line for line in again.stdout.splitlines() if line.startswith("STEP ")]
    assert len(steps) == 39 and all(line.split()[2] == "ok" for line in steps), "\n".join(steps)
    assert [checksums(sb, n) for n in range(3)] == before
    assert "node     user    result  duration  changed  ok  skipped  failed" in again.stdout
    assert all(line.split()[4:8] == ["0", "13", "0", "0"] for line in again.stdout.splitlines()
               if line.startswith("rental") and "s " in line and line.split()[2] == "ok")


def test_a_stopped_node_fails_alone(configured, healthy):
    laptop, sb = configured, healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    sb.stop_sshd(2)
    r = laptop.fab("bootstrap", "--tail", "5", timeout=300)
    assert r.returncode == 1
    got = rows(r.stdout, "bootstrap")
    assert got["rental2"][0] == "FAILED" and "connection refused by 198.18.0.12" in got["rental2"][1]
    assert got["rental0"][0] in ("ok", "changed") and got["rental1"][0] in ("ok", "changed")
    assert "rental2  198.18.0.12  bootstrap: connection refused" in r.stdout


def test_dry_run_connects_to_nothing(configured, sandbox):
    laptop = configured
    before = [accepted(sandbox, n) for n in range(3)]
    logs = [sandbox.sshd_log(n) for n in range(3)]
    r = laptop.fab("-H", sandbox.hosts, "bootstrap", "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    for nid in range(3):
        assert f"=== rental{nid} 198.18.0.1{nid}: ~/.cache/multinode/node.sh" in r.stdout
    assert "NID=2\n" in r.stdout and "SINGLE_NODE=false" in r.stdout
    assert "env (" in r.stdout and "age_key (" in r.stdout
    no_secret_in(r.stdout + r.stderr, "--dry-run output")
    assert [sandbox.sshd_log(n) for n in range(3)] == logs and [accepted(sandbox, n) for n in range(3)] == before
    assert not (laptop.home / "logs").exists()
    assert not (laptop.home / ".config/multinode").exists()  # no cluster remembered, no key made
    assert "the cluster's own key pair (cluster_key, .pub, .authorized), made at the first run" in r.stdout


def test_a_hanging_node_script_is_stopped_at_the_timeout(configured, healthy):
    laptop, sb = configured, healthy
    config = __import__("json").loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"].update(script_timeout=3, tools=[{"name": "slow", "check": "false", "install": "sleep 8"}])
    (laptop.home / ".fabric.yaml").write_text(__import__("json").dumps(config))
    node = sb.nodes[0]
    r = laptop.fab("-H", f"{node['public']}:{node['private']}", "hostkeys", "detect-user", "bootstrap", timeout=60)
    assert r.returncode == 1
    assert rows(r.stdout, "bootstrap")["rental0"] == (
        "FAILED", "no answer after 3s: the command was stopped (the node may hang)")
    # Let the abandoned script finish before other tests use the node.
    sb.exec(0, "bash", "-c", "for i in $(seq 1 60); do pgrep -f multinode/node.sh >/dev/null || exit 0; sleep 0.5; done")


def test_ctrl_c_stops_at_once_and_closes_the_node_connections(configured, healthy):
    import json
    import signal
    import subprocess
    import time

    from tests.conftest import FAB, ROOT

    laptop, sb = configured, healthy
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"].update(tools=[{"name": "slow", "check": "false", "install": "sleep 45"}])
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    hosts = ",".join(f"{n['public']}:{n['private']}" for n in sb.nodes[:2])
    proc = subprocess.Popen(sb.laptop_cmd(FAB, "-H", hosts, "hostkeys", "detect-user", "bootstrap", env=laptop.env),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not all(node_sh(sb, n, "pgrep -fx 'sleep 45'").returncode == 0 for n in (0, 1)):
            assert time.time() < deadline and proc.poll() is None, "the slow tool never started"
            time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 5  # not after the node scripts (45 s more)
        assert proc.returncode == 130, out + err
        assert "multinode: interrupted during bootstrap: connections to 2 node(s) closed." in err
        assert "Traceback" not in out + err
        state = json.loads((laptop.home / ".config/multinode/cluster.json").read_text())  # remembered all the same
        assert [(n["alias"], n["user"]) for n in state["nodes"]] == [("rental0", USERS[0]), ("rental1", USERS[1])]
        # The nodes' sshd sessions of that run are gone.
        for n, user in ((0, USERS[0]), (1, USERS[1])):
            gone = node_sh(sb, n, f"for i in $(seq 1 20); do pgrep -f 'sshd: {user}@nott[y]' || exit 0; sleep 0.25; done; exit 1")
            assert gone.returncode == 0, f"node{n} still has the session: {gone.stdout}"
        # The user reruns at once (the old script is still in its silent 45 s step): the new run stops
        # the old one, which its laptop left, and does its work; the old run's cleanup cannot touch it.
        assert node_sh(sb, 0, "pgrep -fx 'sleep 45'").returncode == 0
        config["multinode"].update(tools=[])
        (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
        start = time.monotonic()
        again = laptop.fab("bootstrap", "--tail", "0", timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        assert time.monotonic() - start < 40  # not after the old script's 45 s step
        log = (laptop.home / "logs/setup_rental0.log").read_text()
        assert "stopping the previous run (pid " in log and "left running when its laptop went away" in log
        for n in (0, 1):
            assert node_sh(sb, n, "pgrep -fx 'sleep 45' || echo none").stdout == "none\n"
            assert node_sh(sb, n, "ls -A ~/.cache/multinode/stage").stdout == ""  # each run's stage, removed
    finally:
        proc.kill()
        for n in (0, 1):  # leave the nodes as other tests expect them
            node_sh(sb, n, "pkill -f multinode/node.sh; pkill -fx 'sleep 45'; true")


def test_nothing_waits_for_input(configured, healthy):
    """An installer that asks a question fails its step at once; a remote command gets end-of-file."""
    import json
    import time

    import sys

    laptop, sb = configured, healthy
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"].update(tools=[{"name": "asks", "check": "false",
                                       "install": "read -r -p 'Install it? [y/N] ' answer; test \"$answer\" = y"}])
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    node = sb.nodes[1]
    start = time.monotonic()
    r = laptop.fab("-H", f"{node['public']}:{node['private']}", "hostkeys", "detect-user", "bootstrap", timeout=120)
    assert r.returncode == 1
    assert rows(r.stdout, "bootstrap")["rental0"][1].startswith("node script exited 1; failed step(s): tools")
    assert time.monotonic() - start < 60  # the step's own timeout is 900 s: it never waited
    log = (laptop.home / "logs/setup_rental0.log").read_text()
    assert "STEP tools failed exit 1" in log and "STEP tmux" in log  # the steps after it still ran

    # Fabric leaves a channel's stdin open; ours close it: `cat` ends at once.
    probe = ("import sys; from multinode.session import Session;"
             "from fabric import Config; c = Config(); s = Session(sys.argv[1]); s.start(c);"
             "cxn = s.connection(s.nodes[0]); print(cxn.transport.packetizer._Packetizer__keepalive_interval);"
             "print(cxn.run('cat; echo eof', in_stream=False, hide=True, timeout=20).stdout)")
    out = laptop.run(sys.executable, "-c", probe, f"{node['public']}:{node['private']}", timeout=60)
    assert out.stdout.split() == ["15", "eof"], out.stdout + out.stderr  # keepalives on, stdin closed


def test_a_changed_repo_branch_switches_a_changed_url_fails_naming_both(configured, healthy):
    import json

    laptop, sb = configured, healthy
    node = sb.nodes[2]
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"].update(dotfiles={"repo": ""}, tools=[])
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    hosts = f"{node['public']}:{node['private']}"
    assert laptop.fab("-H", hosts, "hostkeys", "detect-user", "bootstrap", timeout=300).returncode == 0
    log = laptop.home / "logs/setup_rental0.log"
    repo = "cd /workspace/workspace && git rev-parse --abbrev-ref HEAD && ls"

    def bootstrap_with(**repo_settings):
        """bootstrap after the user changed multinode.repo: its exit code; the node's log."""
        config["multinode"]["repo"].update(repo_settings)
        (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
        return laptop.fab("bootstrap", timeout=300).returncode, log.read_text()

    code, text = bootstrap_with(branch="dev")
    assert code == 0 and "STEP workspace changed switched from main to dev; at " in text
    assert node_sh(sb, 2, repo).stdout.startswith("dev\nDEV.md\n")

    # Uncommitted work on the node: never carried or lost by a switch; the step says why.
    node_sh(sb, 2, "echo mine >>/workspace/workspace/train.py")
    code, text = bootstrap_with(branch="main")
    assert code == 1 and ("STEP workspace failed exit 1: /workspace/workspace is on dev with uncommitted changes, "
                          "but multinode.repo.branch is main: commit or stash them, then rerun") in text
    node_sh(sb, 2, "cd /workspace/workspace && git checkout -q train.py")

    # Another URL: a repository of another name is cloned beside; one of the same name is
    # never silently repointed.
    code, text = bootstrap_with(url="git://198.18.0.2/fork.git")
    assert code == 0 and "STEP workspace changed cloned git://198.18.0.2/fork.git into /workspace/fork" in text
    node_sh(sb, 2, "rm -rf /workspace/fork")
    code, text = bootstrap_with(name="workspace")
    assert code == 1 and ("STEP workspace failed exit 1: /workspace/workspace's origin is "
                          "git://198.18.0.2/workspace.git, but multinode.repo.url is git://198.18.0.2/fork.git: "
                          "move /workspace/workspace aside") in text
    assert node_sh(sb, 2, repo).stdout.startswith("dev\n")
    node_sh(sb, 2, "cd /workspace/workspace && git checkout -q main")  # as the other tests expect it


def test_dotfiles_with_their_own_config_template(configured, healthy):
    """chezmoi's config from the repo's template (its prompt answered by its default), written once."""
    import json

    laptop, sb = configured, healthy
    node = sb.nodes[2]
    node_sh(sb, 2, "rm -rf ~/.local/share/chezmoi ~/.config/chezmoi")
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"].update(tools=[], repo={"url": ""})
    config["multinode"]["dotfiles"]["repo"] = "git://198.18.0.2/dotfiles-template.git"
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    try:
        hosts = f"{node['public']}:{node['private']}"
        r = laptop.fab("-H", hosts, "hostkeys", "detect-user", "bootstrap", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        log = laptop.home / "logs/setup_rental0.log"
        assert "cloned git://198.18.0.2/dotfiles-template.git; applied;" in log.read_text()
        files = node_sh(sb, 2, "cat ~/.config/chezmoi/chezmoi.toml ~/.gitconfig ~/.secret; stat -c %Y ~/.config/chezmoi/chezmoi.toml")
        assert 'email = "templated@example.invalid"' in files.stdout and SECRET_TEXT in files.stdout
        assert "email = templated@example.invalid\n" in files.stdout  # the templated dotfile
        again = laptop.fab("bootstrap", "verify", timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "STEP dotfiles ok 1 encrypted file(s) decrypt" in log.read_text()
        assert node_sh(sb, 2, "stat -c %Y ~/.config/chezmoi/chezmoi.toml").stdout == files.stdout.splitlines()[-1] + "\n"

        # Another dotfiles repo configured later: named, never mixed in.
        config["multinode"]["dotfiles"]["repo"] = "git://198.18.0.2/dotfiles.git"
        (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
        assert laptop.fab("bootstrap", timeout=300).returncode == 1
        assert ("chezmoi's source /home/ubuntu/.local/share/chezmoi comes from git://198.18.0.2/dotfiles-template.git, "
                "but multinode.dotfiles.repo is git://198.18.0.2/dotfiles.git") in log.read_text()
    finally:  # the other tests' dotfiles come back on their next run
        node_sh(sb, 2, "rm -rf ~/.local/share/chezmoi ~/.config/chezmoi ~/.gitconfig")


def test_each_cluster_has_its_own_key_authorized_from_its_nodes_only(configured, healthy):
    import json

    laptop, sb = configured, healthy
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"].update(repo={"url": ""}, dotfiles={"repo": ""}, tools=[], ray={"enabled": False})
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    n = sb.nodes
    key = laptop.home / ".config/multinode/cluster_key.pub"
    first = f"{n[0]['public']}:{n[0]['private']},{n[1]['public']}:{n[1]['private']}"
    assert laptop.fab("-H", first, "hostkeys", "detect-user", "bootstrap", timeout=300).returncode == 0
    key_a = key.read_text()
    assert laptop.fab("-H", first, "bootstrap", timeout=300).returncode == 0
    assert key.read_text() == key_a  # the same cluster keeps its key
    hop = "ssh -i ~/.ssh/multinode_cluster -o StrictHostKeyChecking=no -o BatchMode=yes {}@{} hostname"
    assert node_sh(sb, 0, hop.format(USERS[1], n[1]["private"])).stdout == "node1\n"

    # A new cluster (nodes 1 and 2): a new key; node 1 no longer lets the first cluster's key in.
    second = f"{n[1]['public']}:{n[1]['private']},{n[2]['public']}:{n[2]['private']}"
    r = laptop.fab("-H", second, "hostkeys", "detect-user", "bootstrap", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    key_b = key.read_text()
    assert key_b != key_a
    assert node_sh(sb, 0, hop.format(USERS[1], n[1]["private"])).returncode != 0  # node0 holds key A
    assert key_a.split()[1] not in node_sh(sb, 1, "cat ~/.ssh/authorized_keys").stdout
    assert node_sh(sb, 2, hop.format(USERS[1], n[1]["private"])).stdout == "node1\n"
    # Key B only from the cluster's private addresses: the same key from node 0 is refused.
    import shutil

    shutil.copy(f"{n[2]['root']}/home/{USERS[2]}/.ssh/multinode_cluster", f"{n[0]['root']}/tmp/stolen")
    sb.exec(0, "chown", USERS[0], "/tmp/stolen")
    sb.exec(0, "chmod", "600", "/tmp/stolen")
    assert node_sh(sb, 0, "ssh-keygen -y -f /tmp/stolen").stdout.split()[1] == key_b.split()[1]
    stolen = node_sh(sb, 0, f"ssh -i /tmp/stolen -o StrictHostKeyChecking=no -o BatchMode=yes {USERS[1]}@{n[1]['private']} true")
    assert stolen.returncode != 0
    node_sh(sb, 0, "rm -f /tmp/stolen")


def test_a_token_in_a_repo_url_never_leaves_the_credential_file(configured, healthy):
    import json

    laptop, sb = configured, healthy
    token = "s3cret-token-77"
    config = json.loads((laptop.home / ".fabric.yaml").read_text())
    config["multinode"].update(dotfiles={"repo": ""}, tools=[], repo={
        "url": f"http://alice:{token}@198.18.0.2:8080/git/workspace.git", "branch": "main", "name": "tokened"})
    (laptop.home / ".fabric.yaml").write_text(json.dumps(config))
    node = sb.nodes[2]
    try:
        r = laptop.fab("-H", f"{node['public']}:{node['private']}", "hostkeys", "detect-user", "bootstrap", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        dry = laptop.fab("bootstrap", "--dry-run")
        assert "REPO_URL=http://198.18.0.2:8080/git/workspace.git\n" in dry.stdout and "git-credentials (" in dry.stdout
        seen = {
            "fab's output": r.stdout + r.stderr + dry.stdout + dry.stderr,
            "the laptop's log": (laptop.home / "logs/setup_rental0.log").read_text(),
            "the node's files": node_sh(sb, 2, "cat /workspace/onstart.log ~/.cache/multinode/node.sh "
                                              "/workspace/tokened/.git/config; ls -A ~/.cache/multinode/stage").stdout,
        }
        for where, text in seen.items():
            assert token not in text, f"the token is in {where}"
        origin = node_sh(sb, 2, "git -C /workspace/tokened remote get-url origin").stdout
        assert origin == "http://198.18.0.2:8080/git/workspace.git\n"
    finally:
        node_sh(sb, 2, "rm -rf /workspace/tokened")
