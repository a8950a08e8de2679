"""Unit tests: the node script runs its steps as the manifest's graph (real bash, no node).

Steps that need nothing of each other run at once; a step whose need failed
is skipped, naming it; installers that use the package manager never overlap;
each step's output stays its own (its log, its tag).
"""

import os
import re
import subprocess

import pytest

from multinode import manifest
from multinode.config import options
from multinode.inventory import Node
from multinode.nodescript import node_script

NODES = [Node(0, "rental0", "198.18.0.10", "198.19.0.10"), Node(1, "rental1", "198.18.0.11", "198.19.0.11")]
# An installer that says when it ran: NAME start, a second's work, NAME end.
RECORD = 'echo "{name} start $(date +%s.%N)" >>"$HOME/ran"; sleep 1; {make}; echo "{name} end $(date +%s.%N)" >>"$HOME/ran"'


def run(tmp_path, only, **multinode):
    """The node script of NODES[0] run with ``--only``, HOME in ``tmp_path``: (exit, stdout)."""
    home = tmp_path / "home"
    (home / ".local/bin").mkdir(parents=True, exist_ok=True)
    opts = options({"multinode": {"workspace": str(tmp_path / "ws"), "repo": {"url": ""}, "tools": [], **multinode}})
    (tmp_path / "node.sh").write_text(node_script(NODES[0], NODES, opts, []))
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}  # no uv of this machine's
    r = subprocess.run(["bash", str(tmp_path / "node.sh"), str(home / "stage"), "--only", only], env=env,
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout


def test_the_manifest_is_a_graph_of_its_own_steps_and_verify_keeps_its_order():
    names = manifest.names()
    assert names[:4] == ("workspace", "python", "credentials", "dotfiles") and "gpu" in names
    ordered = [s.name for s in manifest.applied(2)]
    for step in manifest.steps():
        for need in step.needs:
            assert ordered.index(need) < ordered.index(step.name)
    assert "ray" not in [s.name for s in manifest.applied(1)] and "gpu" not in ordered


def test_a_failing_step_skips_what_needs_it_and_nothing_else(tmp_path):
    code, out = run(tmp_path, "python,ray,tools", installers={"uv": "echo no network here; exit 1"},
                    tools=[{"name": "t", "check": "true", "install": "true"}])
    assert code == 1, out
    assert re.search(r"^STEP python failed exit 1: uv is still missing after its installer ran|"
                     r"^STEP python failed exit 1: no network here", out, re.M), out
    assert re.search(r"^STEP ray skipped needs python, which failed \[\d+\.\ds\]$", out, re.M), out
    assert re.search(r"^STEP tools ok present: t", out, re.M)  # not in need of python: it ran
    assert "BEGIN ray" not in out


def test_package_manager_installs_never_overlap_while_their_steps_run_at_once(tmp_path):
    bin_ = "$HOME/.local/bin"
    code, out = run(
        tmp_path, "docker,tools", docker={"required": True},  # both install with scripts that may run apt
        installers={"docker": RECORD.format(name="docker", make=f"printf '#!/bin/sh\\n' >{bin_}/docker; chmod +x {bin_}/docker")},
        tools=[{"name": "t", "check": f"test -x {bin_}/t",
                "install": RECORD.format(name="t", make=f"printf '#!/bin/sh\\n' >{bin_}/t; chmod +x {bin_}/t")}])
    assert code == 0, out
    ran = dict((f"{name} {edge}", float(at)) for name, edge, at in
               (line.split() for line in (tmp_path / "home/ran").read_text().splitlines()))
    first, second = sorted(("docker", "t"), key=lambda n: ran[f"{n} start"])
    assert ran[f"{second} start"] >= ran[f"{first} end"], ran  # one at a time, under the package lock
    lines = out.splitlines()
    begins = [i for i, line in enumerate(lines) if line.startswith("BEGIN ")]
    ends = [i for i, line in enumerate(lines) if line.startswith("STEP ")]
    assert len(begins) == 2 and max(begins) < min(ends), out  # both steps began before either ended


def test_installers_without_the_package_manager_run_at_once(tmp_path):
    # python's uv installer (a download) and a tool's: the tool's holds the lock, uv's does not wait for it.
    bin_ = "$HOME/.local/bin"
    code, out = run(
        tmp_path, "python,tools",
        installers={"uv": RECORD.format(name="uv", make=f"printf '#!/bin/sh\\n' >{bin_}/uv; chmod +x {bin_}/uv")},
        tools=[{"name": "t", "check": f"test -x {bin_}/t",
                "install": RECORD.format(name="t", make=f"printf '#!/bin/sh\\n' >{bin_}/t; chmod +x {bin_}/t")}])
    assert code == 0, out
    ran = dict((f"{name} {edge}", float(at)) for name, edge, at in
               (line.split() for line in (tmp_path / "home/ran").read_text().splitlines()))
    assert ran["uv start"] < ran["t end"] and ran["t start"] < ran["uv end"], ran


def test_independent_steps_run_at_the_same_time(tmp_path):
    # workspace and tools need nothing of each other: a slow tool does not hold the workspace back.
    code, out = run(tmp_path, "workspace,tools", tools=[
        {"name": "slow", "check": "test -e ~/slow", "install": "sleep 2; touch ~/slow"}])
    assert code == 0, out
    lines = out.splitlines()
    workspace_done = next(i for i, line in enumerate(lines) if line.startswith("STEP workspace "))
    tools_done = next(i for i, line in enumerate(lines) if line.startswith("STEP tools "))
    assert workspace_done < tools_done and re.search(r"^STEP tools changed installed: slow \[2\.\ds\]$", out, re.M)


def test_each_steps_output_is_tagged_and_logged_on_its_own(tmp_path):
    code, out = run(tmp_path, "python,tools",
                    installers={"uv": "echo from the uv installer; printf '#!/bin/sh\\n' >$HOME/.local/bin/uv; "
                                      "chmod +x $HOME/.local/bin/uv"},
                    tools=[{"name": "t", "check": "test -e ~/t", "install": "echo from the t installer; touch ~/t"}])
    assert code == 0, out
    assert "[python] from the uv installer" in out and "[tools] from the t installer" in out
    untagged = [ln for ln in out.splitlines() if not re.match(r"^(\[\w+\] |BEGIN |STEP )", ln)]
    assert untagged == [], untagged
    logs = tmp_path / "home/.cache/multinode/steps"
    assert (logs / "python.log").read_text() == "from the uv installer\n"
    assert (logs / "tools.log").read_text() == "from the t installer\n"


@pytest.mark.parametrize("only", ["nothing-such", ""])
def test_only_a_step_that_is_not_one_runs_nothing(tmp_path, only):
    code, out = run(tmp_path, only)
    assert code == 0 and "BEGIN" not in out and "STEP" not in out


def test_a_tools_own_step_line_is_output_not_a_result(tmp_path):
    code, out = run(tmp_path, "tools", tools=[{"name": "liar", "check": "test -e ~/liar",
                                               "install": "echo 'STEP tools ok all fine'; exit 3"}])
    assert code == 1
    assert "[tools] STEP tools ok all fine" in out and re.search(r"^STEP tools failed exit 3", out, re.M)
    assert not re.search(r"^STEP tools ok", out, re.M)
    assert os.path.exists(tmp_path / "home/.cache/multinode/steps/tools.log")
