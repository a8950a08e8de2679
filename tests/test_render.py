"""Unit tests: rendering node scripts (no network)."""

import platform
import re
import subprocess
import sys

import pytest
from jinja2 import UndefinedError

from multinode import manifest
from multinode.nodescript import node_script, parse_steps
from multinode.paths import repo_name
from multinode.config import DEFAULTS, options
from multinode.inventory import BadInput, parse_hosts
from multinode.render import quote, render, shell_args


def opts(**over):
    return options({"multinode": {**DEFAULTS, **over}})


def rendered_steps(script):
    """The steps a node script runs (its STEPS array), each after what it needs."""
    line = next(ln for ln in script.splitlines() if ln.startswith("STEPS=("))
    return line[len("STEPS=("):-1].split()


def test_values_are_quoted_and_the_script_parses():
    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    o = opts(repo={"url": "git://h/it's $(reboot).git", "branch": "main", "name": ""},
             git={"name": "O'Brien; rm -rf /", "email": "a@b"})
    script = node_script(nodes[1], nodes, o, ["HF_TOKEN"])
    assert "REPO_URL='git://h/it'\"'\"'s $(reboot).git'" in script
    assert "GIT_NAME='O'\"'\"'Brien; rm -rf /'" in script
    assert "NID=1\n" in script and "IHN=false\n" in script and "RAY_HEAD_IP=198.19.0.10\n" in script
    assert "SINGLE_NODE=false\n" in script
    assert rendered_steps(script) == [s.name for s in manifest.applied(2)]
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert node_script(nodes[1], nodes, o, ["HF_TOKEN"]) == script  # same input, same bytes


def test_single_node_and_head_flags():
    nodes = parse_hosts("198.18.0.10:198.19.0.10")
    script = node_script(nodes[0], nodes, opts(), [])
    assert "IHN=true\n" in script and "SINGLE_NODE=true\n" in script


def test_missing_variable_is_an_error_not_an_empty_string():
    with pytest.raises(UndefinedError):
        render("node.sh.j2", nid=0)


def test_helpers():
    assert quote(True) == "true" and quote("a b") == "'a b'"
    assert shell_args(("--index-url", ""), ("--find-links", "http://x/w/"), ("--no-index", True)) == \
        "--find-links http://x/w/ --no-index"
    assert repo_name({"url": "git@github.com:me/proj.git", "name": ""}) == "proj"
    assert repo_name({"url": "https://h/me/proj/", "name": ""}) == "proj"
    assert repo_name({"url": "x", "name": "mine"}) == "mine"
    out = "noise\nSTEP git ok Ada <a@b> [0.4s]\nSTEP docker failed exit 3 [12.0s]\nSTEP tools skipped [0.1s]\nSTEPS x\n"
    assert parse_steps(out) == [("git", "ok", "Ada <a@b>"), ("docker", "failed", "exit 3"), ("tools", "skipped", "")]
    from multinode.nodescript import step_times
    assert step_times(out) == {"git": 0.4, "docker": 12.0, "tools": 0.1}


def test_bad_tools_and_workspace_refused():
    from multinode.inventory import BadInput

    with pytest.raises(BadInput, match=r"multinode.tools .*expected exactly name, check, install"):
        opts(tools=[{"name": "x"}])
    with pytest.raises(BadInput, match="'workspace'"):
        opts(workspace="workspace")
    with pytest.raises(BadInput, match=r"head_ssh.kex_algorithms 'curve25519-sha256\\nHost \*'"):
        opts(head_ssh={"kex_algorithms": "curve25519-sha256\nHost *"})


def test_head_ssh_script_pins_the_verified_keys_and_the_kex():
    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    worker = {"alias": "rental1", "name": "worker1", "private": "198.19.0.11", "user": "user",
              "keys": ["ssh-ed25519 AAAAC3Nza", "ssh-rsa AAAAB3Nza"], "prove": True}
    script = render("head_ssh.sh.j2", head=nodes[0], timeout=10, kex="curve25519-sha256", workers=[worker],
                    known_hosts="multinode_known_hosts", ssh_config="multinode_config")
    assert "198.19.0.11 ssh-ed25519 AAAAC3Nza\n198.19.0.11 ssh-rsa AAAAB3Nza\nKEYS\n" in script
    assert "ssh-keyscan" not in script  # nothing is fetched and accepted blindly
    assert ("    StrictHostKeyChecking yes\n    UserKnownHostsFile ~/.ssh/multinode_known_hosts\n"
            "    GlobalKnownHostsFile /dev/null\n    UpdateHostKeys no\n") in script
    # Our connections read our file alone; the user's ~/.ssh/config is never written.
    assert 'ssh -F "$HOME/.ssh/multinode_config"' in script
    assert 'install_file "$config" "$HOME/.ssh/multinode_config"' in script
    assert 'put_block "$HOME/.ssh/config" multinode-workers "$empty"' in script  # an old block only goes
    assert "for k in curve25519-sha256; do" in script  # kept only if this ssh knows it (ssh -Q kex)
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    default = render("head_ssh.sh.j2", head=nodes[0], timeout=10, kex="", workers=[worker],
                     known_hosts="multinode_known_hosts", ssh_config="multinode_config")
    assert "KexAlgorithms" not in default  # empty: OpenSSH's own default
    assert "say REACH rental1" in script
    # A run on some nodes alone (setup --nodes, churn): every alias written, only its own proven.
    unproven = render("head_ssh.sh.j2", head=nodes[0], timeout=10, kex="", workers=[{**worker, "prove": False}],
                      known_hosts="multinode_known_hosts", ssh_config="multinode_config")
    assert "Host worker1\n" in unproven and "say REACH" not in unproven
    assert subprocess.run(["bash", "-n"], input=unproven, text=True).returncode == 0
    # No worker left (`remove` of the last ones): their aliases, keys and the drop-in go.
    alone = render("head_ssh.sh.j2", head=nodes[0], timeout=10, kex="", workers=[],
                   known_hosts="multinode_known_hosts", ssh_config="multinode_config")
    assert "Host " not in alone and 'rm -f -- "$file"' in alone and 'as_root rm -f -- "$dropin"' in alone
    assert subprocess.run(["bash", "-n"], input=alone, text=True).returncode == 0


def test_tmux_layout_windows_of_four_head_first():
    from multinode.tasks.tmux import layout

    three = layout(parse_hosts(",".join(f"198.18.0.{10 + i}:198.19.0.{10 + i}" for i in range(3))))
    assert [(w["name"], [p["worker"] for p in w["panes"]]) for w in three] == [
        ("all-nodes", [None, "worker1", "worker2"])]
    six = layout(parse_hosts(",".join(f"198.18.0.{10 + i}:198.19.0.{10 + i}" for i in range(6))))
    assert [(w["name"], len(w["panes"])) for w in six] == [("nodes-1", 4), ("nodes-2", 2)]
    assert six[1]["panes"][0] == {"alias": "rental4", "private": "198.19.0.14", "worker": "worker4"}


def test_single_node_script_has_no_cluster_steps():
    nodes = parse_hosts("198.18.0.10:198.19.0.10")
    script = node_script(nodes[0], nodes, opts(), [])
    steps = rendered_steps(script)
    assert "ray" not in steps and "nccl" not in steps and "network" not in steps and "tmux" in steps


def test_verify_script_follows_the_config_and_parses():
    from multinode.checks import verify_script

    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    o = opts(workspace="/data/ws", repo={"url": "git://h/proj.git", "branch": "main", "name": ""},
             git={"name": "", "email": "a@b.example"})
    available = {"secrets_env": ["OPENAI_API_KEY"], "wandb": False, "huggingface": True}
    head = verify_script(nodes[0], nodes, o, available)
    worker = verify_script(nodes[1], nodes, o, available)
    assert "WORKSPACE=/data/ws\n" in head and 'REPO_DIR="$WORKSPACE"/proj\n' in head
    assert "t env:OPENAI_API_KEY " in head and "env:ANTHROPIC_API_KEY" not in head
    assert 'na wandb-netrc "no wandb key on the laptop"' in head and "t hf-token " in head
    assert "res ray-cluster ok" in head and 'na ray-cluster "checked on the head"' in worker
    assert "/proc/$worker_pid/environ" in head and "res nccl-ray ok" in worker  # what Ray's workers carry
    # No bare `wait`: it would reap the head's Ray query, which runs in the background meanwhile.
    assert not [ln for ln in head.splitlines() if ln.strip() == "wait"]
    assert "t ssh-config " in head and "aliases worker1" in head and "na ssh-config" in worker
    for script in (head, worker):
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.parametrize("workspace", ["/", "/tmp", "/home/", "/root", "/usr//local", "/etc/..", "//home",
                                       "/workspace/../../usr", "/./var/"])
def test_a_system_directory_is_never_a_workspace(workspace):
    with pytest.raises(BadInput, match=r"multinode.workspace .*a system directory"):
        opts(workspace=workspace)
    assert opts(workspace="/data//ws/")["workspace"] == "/data/ws"  # normalized: one spelling everywhere
    assert opts(workspace="/home/ubuntu/ws")["workspace"] == "/home/ubuntu/ws"


@pytest.mark.parametrize("workspace", ["/tmp/ws", "/home/ubuntu", "//root/x", "/usr/lib", "/etc/ssh/", "/var/lib",
                                       "/home/ubuntu/ws/.."])
def test_a_workspace_directly_inside_a_shared_directory_is_refused(workspace):
    # teardown --workspace would delete it: someone's home, the system's files.
    with pytest.raises(BadInput, match=r"multinode.workspace .*directly inside /"):
        opts(workspace=workspace)


def test_step_timeouts_are_checked_and_rendered():
    with pytest.raises(BadInput, match=r"multinode.step_timeouts .*'pyhton': not a step"):
        opts(step_timeouts={"pyhton": 60})
    with pytest.raises(BadInput, match=r"multinode.step_timeouts .*'python': expected a whole number"):
        opts(step_timeouts={"python": "soon"})
    nodes = parse_hosts("198.18.0.10:198.19.0.10")
    script = node_script(nodes[0], nodes, opts(step_timeout=120, step_timeouts={"python": 1800}), [])
    assert "[python]=1800 " in script and "[workspace]=120 " in script


def test_the_node_script_never_writes_a_users_shell_file():
    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    script = node_script(nodes[0], nodes, opts(git={"name": "A", "email": "a@b.example"}), [])
    for managed in ("~/.bashrc", "~/.profile", "~/.gitconfig", "~/.ssh/config"):
        path = managed.replace("~", "$HOME")
        writes = [ln for ln in script.splitlines() if path in ln and ("put_block" in ln or "install_file" in ln
                                                                    or ">>" in ln)]
        # ~/.bashrc: only the block an older multinode put there is taken out (an empty body).
        assert all("/dev/null" in ln for ln in writes), writes
    assert "git config --global" not in script
    assert script.count("sudo") == render("lib.sh.j2").count("sudo")  # root work through as_root alone


def test_verify_knows_every_check_its_checklist_holds():
    from multinode.checks import expected_checks, verify_script

    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    o = opts(git={"name": "a", "email": "a@b.example"}, dotfiles={"repo": "git://h/d.git"},
             tools=[{"name": "nvtop", "check": "command -v nvtop", "install": "true"}])
    available = {"secrets_env": ["A_KEY"], "wandb": True, "huggingface": False}
    head = expected_checks(verify_script(nodes[0], nodes, o, available))
    assert head == ["workspace", "repo", "venv-python", "uv", "env-file", "env:A_KEY", "wandb-netrc", "hf-token",
                    "chezmoi", "age", "age-key", "chezmoi-toml", "age-recipient", "decrypt", "dotfiles", "ssh-key",
                    "ssh-config", "git-email", "docker", "docker-group", "gpu-count", "gpu-driver", "gpu-ecc",
                    "gpu-fabricmanager", "shm", "disk", "public-address", "etc-hosts", "nccl", "nccl-tmux",
                    "tmux-exec", "tmux-ray", "nccl-ray", "ray-cluster", "tool:nvtop"]


def test_credentials_in_repository_urls_are_split_off():
    from multinode.staging import split_credentials

    assert split_credentials("https://bob:gh_T0k%2Fen@git.example:8443/org/r.git?x=1") == (
        "https://git.example:8443/org/r.git?x=1", "https://bob:gh_T0k%2Fen@git.example:8443")
    assert split_credentials("https://git.example/org/r.git") == ("https://git.example/org/r.git", None)
    assert split_credentials("git@github.com:org/r.git") == ("git@github.com:org/r.git", None)  # a user, not a secret
    nodes = parse_hosts("198.18.0.10:198.19.0.10")
    script = node_script(nodes[0], nodes, opts(repo={"url": "https://bob:tok@h.example/r.git", "branch": "main",
                                                      "name": ""}), [])
    assert "tok@" not in script and "REPO_URL=https://h.example/r.git\n" in script


def test_verify_reads_python_torch_and_nccl_from_the_venv_without_importing_torch(tmp_path):
    """The consistency facts: torch's version from torch/version.py, NCCL's from its wheel."""
    from multinode.checks import verify_script

    nodes = parse_hosts("198.18.0.10:198.19.0.10")
    o = opts(workspace=str(tmp_path), repo={"url": "git://h/proj.git", "branch": "main", "name": ""})
    venv = tmp_path / "proj/venv"
    site = venv / "lib/python3.11/site-packages"
    (site / "torch").mkdir(parents=True)
    (venv / "bin").mkdir()
    (venv / "bin/python").symlink_to(sys.executable)
    # A torch that would fail on import: the facts must not import it.
    (site / "torch/__init__.py").write_text("raise SystemExit('imported')\n")
    (site / "torch/version.py").write_text("from typing import Optional\n__version__ = '2.5.1+cu124'\ncuda = '12.4'\n")
    for dist in ("nvidia_nccl_cu12-2.21.5.dist-info", "torch-2.5.1.dist-info", "numpy-2.1.0.dist-info"):
        (site / dist).mkdir()
    script = verify_script(nodes[0], nodes, o, {"secrets_env": [], "wandb": False, "huggingface": False})
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path).stdout
    facts = dict(line[5:].split(" ", 1) for line in out.splitlines() if line.startswith("FACT "))
    assert facts["python"] == platform.python_version()
    assert facts["torch"] == "2.5.1+cu124 nccl 2.21.5"
    assert re.fullmatch(r"[0-9a-f]{12}", facts["packages"])
    assert "CHECK venv-python ok " + platform.python_version() in out
    (site / "nvidia_nccl_cu12-2.21.5.dist-info").rename(site / "nvidia_nccl_cu12-2.23.4.dist-info")
    again = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path).stdout
    assert "FACT torch 2.5.1+cu124 nccl 2.23.4" in again
    assert f"FACT packages {facts['packages']}" not in again  # another NCCL: another package set
    (site / "nvidia_nccl_cu12-2.23.4.dist-info").rmdir()  # a torch that carries its own NCCL
    assert "FACT torch 2.5.1+cu124 nccl bundled" in subprocess.run(["bash", "-c", script], capture_output=True,
                                                                    text=True, cwd=tmp_path).stdout
