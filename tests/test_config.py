"""The config schema through the real CLI: each bad value is one line, exit 2, nothing written.

docs/configuration.md, generated from the same declaration, is checked by tests/test_docs.py."""

import json
import os
import subprocess

import pytest

from tests.conftest import FAB, ROOT

HOSTS = "198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11"

BAD_CONFIG = [
    ({"worksapce": "/data"}, "unknown key multinode.worksapce (did you mean multinode.workspace?)"),
    ({"repo": {"ulr": "git://h/r.git"}}, "unknown key multinode.repo.ulr (did you mean multinode.repo.url?)"),
    ({"tools": None}, "bad multinode.tools None: expected a list"),
    ({"tools": [{"name": "a b", "check": "true", "install": "true"}]}, "a tool name"),
    ({"tools": [{"name": "x", "check": "true"}]}, "expected exactly name, check, install"),
    ({"secrets": {"env": "OPENAI_API_KEY"}}, "bad multinode.secrets.env 'OPENAI_API_KEY': expected a list"),
    ({"secrets": {"env": ["OPENAI-KEY"]}}, "'OPENAI-KEY': expected an environment variable name"),
    ({"secrets": {"env": ["X=1; rm -rf ~"]}}, "expected an environment variable name"),
    ({"script_timeout": "1h"}, "bad multinode.script_timeout '1h': expected a whole number"),
    ({"script_timeout": 0}, "bad multinode.script_timeout 0: expected a whole number"),
    ({"ray": {"port": "abc"}}, "bad multinode.ray.port 'abc': expected a whole number from 1 to 65535"),
    ({"ray": {"port": 70000}}, "bad multinode.ray.port 70000"),
    ({"ray": {"enabled": "false"}}, "bad multinode.ray.enabled 'false': expected true or false"),
    ({"network": {"check_port": "22; reboot"}}, "bad multinode.network.check_port"),
    ({"alias_prefix": "gpu\n"}, "bad multinode.alias_prefix 'gpu\\n'"),
    ({"alias_prefix": "node1"}, "bad multinode.alias_prefix 'node1'"),
    ({"repo": {"url": "git://h/r.git", "branch": "--upload-pack=touch /tmp/pwned"}}, "expected a git branch name"),
    ({"repo": {"url": "--upload-pack=sh"}}, "bad multinode.repo.url '--upload-pack=sh': must not start with '-'"),
    ({"dotfiles": {"repo": "-oProxyCommand=x"}}, "bad multinode.dotfiles.repo"),
    ({"workspace": "/tmp"}, "a system directory"),
    ({"workspace": "relative/ws"}, "expected an absolute path"),
    ({"users": []}, "bad multinode.users []: expected at least one entry"),
    ({"users": ["Root"]}, "'Root': expected login user names"),
    ({"git": {"email": "a@b\n[core]\n\tsshCommand = x"}}, "bad multinode.git.email"),
    ({"step_timeouts": {"pyhton": 60}}, "'pyhton': not a step"),
    ({"notify": {"desktop": "yes"}}, "bad multinode.notify.desktop 'yes'"),
    ({"head_ssh": {"kex_algorithms": "curve25519-sha256\nHost *"}}, "bad multinode.head_ssh.kex_algorithms"),
    ({"workers": 0}, "bad multinode.workers 0"),
    ({"smoke": {"size_mb": 0}}, "bad multinode.smoke.size_mb 0: expected a number from 0.001 to 16384"),
    ({"setup": {"smoke": "yes"}}, "bad multinode.setup.smoke 'yes': expected true or false"),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh/id_ed25519")], check=True)
    return home


def files(home):
    return {str(p): p.read_bytes() for p in home.rglob("*") if p.is_file()}


@pytest.mark.parametrize("config,named", BAD_CONFIG, ids=[json.dumps(c)[:60] for c, _ in BAD_CONFIG])
def test_bad_config_exits_2_with_one_line_and_writes_nothing(home, config, named):
    (home / ".fabric.yaml").write_text(json.dumps({"multinode": config}))
    before = files(home)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    # Unroutable (198.18/15 has a blackhole route or none at all): nothing may connect anyway.
    r = subprocess.run([FAB, "-H", HOSTS, "hostkeys", "detect-user", "bootstrap"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert named in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == "" and files(home) == before


def test_a_damaged_remembered_cluster_is_a_clear_error(home):
    (home / ".fabric.yaml").write_text("{}")
    state = home / ".config/multinode/cluster.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    for damage in ('{"nodes": [{"nid": 0}]}', '{"nodes": 3}', "[]", "{not json"):
        state.write_text(damage)
        r = subprocess.run([FAB, "verify"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "cannot read the remembered cluster" in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, named", [
    (["smoke", "--size-mb", "0"], "bad --size-mb '0': 0.001 to 16384 (MiB)"),
    (["smoke", "--timeout", "2"], "bad --timeout '2': 5 to 3600 (seconds)"),
    (["bandwidth", "--all-pairs", "--seconds", "0"], "bad --seconds '0': 0.2 to 600"),
    (["launch", " "], "launch needs a command"),
    (["launch", "--name", "a/b", "true"], "bad job name 'a/b': letters, digits, - _ ."),
    (["launch", "--nodes", "rental0,rental5", "true"], "bad --nodes 'rental5': not a node of this cluster"),
    (["logs", "x y"], "bad job name 'x y'"),
    (["logs", "train", "--tail", "-1"], "bad --tail '-1': 0 to 999999 (lines)"),
    (["stop", ".x"], "bad job name '.x'"),
])
def test_a_bad_argument_of_a_later_task_stops_the_run_before_the_first(tmp_path, args, named):
    home = tmp_path
    (home / ".ssh").mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh/id_ed25519")], check=True)
    before = files(home)
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    r = subprocess.run([FAB, "-H", HOSTS, "hostkeys", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and named in r.stderr and r.stdout == "", r.stdout + r.stderr
    assert files(home) == before
