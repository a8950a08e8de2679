"""Unit tests: status's node script (run by real bash, a fake nvidia-smi on PATH), what it says parsed,
and the table made of it (plain, coloured, JSON)."""

import os
import subprocess

from multinode.inventory import Node
from multinode.render import command, render
from multinode.sandbox.nodes import FAKE_LOAD
from multinode.statusview import Gpu, NodeNow, as_json, gpu_summary, parse, plain, rich_table, rows, size

GIB = 2**30
NODES = [Node(0, "rental0", "198.18.0.10", "198.19.0.10"), Node(1, "rental1", "198.18.0.11", "198.19.0.11"),
         Node(2, "rental2", "198.18.0.12", "198.19.0.12")]


def run_status(tmp_path, smi=None, workspace="/nonexistent/ws", head=True):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # No Ray here: this machine's own processes (a sandbox's raylets, run by root) are not this node's.
    (bin_dir / "pgrep").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "pgrep").chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    (bin_dir / "nvidia-smi").unlink(missing_ok=True)
    if smi is not None:
        (bin_dir / "nvidia-smi").write_text("#!/bin/sh\n" + smi)
        (bin_dir / "nvidia-smi").chmod(0o755)
    cmd = command("bash", "-c", render("status.sh.j2"), "status", workspace, str(tmp_path / "jobs"), head)
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, env={**os.environ, "PATH": path})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


def eight_gpus():
    return [Gpu(i, u, 81559 - free, 81559, t, w) for i, (u, free, t, w) in enumerate(FAKE_LOAD)]


def test_the_node_script_says_each_fact_in_one_line(tmp_path):
    # A job as the jobs tasks keep one (templates/job_lib.sh.j2): running while its supervisor runs
    # its job.sh and no exit is recorded.
    supervisors = []
    for name, ended in {"train": False, "old": True, "eval": False, "orphan": False}.items():
        job = tmp_path / "jobs" / name
        job.mkdir(parents=True)
        (job / "job.sh").write_text("sleep 30\n")
        if name != "orphan":  # its supervisor is gone: not running
            supervisors.append(subprocess.Popen(["bash", str(job / "job.sh")]))
        pid = supervisors[-1].pid if name != "orphan" else 999999
        (job / "state").write_text(f"name {name}\nsupervisor {pid}\nstarted 1\npid {pid}\n" + ("exit 0\n" if ended else ""))
    (tmp_path / "jobs/nostate").mkdir()
    try:
        out = run_status(tmp_path, smi='echo "0, 97, 71234, 81559, 71, 690.50"\necho "1, 3, 1024, 81559, 40, [N/A]"\n')
    finally:
        for proc in supervisors:
            proc.kill()
    lines = out.splitlines()
    assert lines[:4] == ["GPU_NOW 0, 97, 71234, 81559, 71, 690.50", "GPU_NOW 1, 3, 1024, 81559, 40, [N/A]",
                         "JOB_RUNNING eval", "JOB_RUNNING train"]
    assert [ln.split()[0] for ln in lines[4:]] == ["DISK", "SHM", "LOAD", "RAY_ALIVE", "END"]
    assert lines[4].endswith(" /") and lines[-2:] == ["RAY_ALIVE no no", "END status"]  # the nearest parent
    now = parse(out)
    assert now.gpus == [Gpu(0, 97, 71234, 81559, 71, 690.5), Gpu(1, 3, 1024, 81559, 40, None)]
    assert now.jobs == ["eval", "train"] and now.disk[2] == "/" and now.disk[0] > 0 and now.shm[0] > 0
    assert now.load[3] >= 1 and (now.raylet, now.gcs) == (False, False)
    worker = parse(run_status(tmp_path, workspace=str(tmp_path), head=False))
    assert (worker.no_gpu, worker.disk[2], worker.gcs) == ("no nvidia-smi", str(tmp_path), None)


def test_a_failing_nvidia_smi_is_said_not_fatal(tmp_path):
    out = run_status(tmp_path, smi="echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'; exit 9\n")
    assert out.splitlines()[0] == ("NO_GPU nvidia-smi fails: NVIDIA-SMI has failed because it could not "
                                   "communicate with the NVIDIA driver.")
    assert out.endswith("END status\n")
    assert run_status(tmp_path, smi="exit 0\n").splitlines()[0] == "NO_GPU nvidia-smi lists no GPU"


def test_gpus_summarized_the_one_that_stands_out_named():
    pieces = gpu_summary(eight_gpus())
    assert "".join(text for text, _, _ in pieces) == "8 x 86% 70/80 GiB 74°C 695 W  GPU3 12%"
    assert pieces[-1] == ("  GPU3 12%", "bad", "")
    busy = [g for g in eight_gpus() if g.index != 3]
    assert "".join(t for t, _, _ in gpu_summary(busy)) == "7 x 97% 70/80 GiB 74°C 695 W"
    hot = busy[:2] + [Gpu(9, 96, 1024, 81559, 88, 700.0)]
    assert [p for p in gpu_summary(hot) if p[1] == "bad"] == [(" 88°C", "bad", "temp"), ("  GPU9 88°C", "bad", "")]
    assert "".join(t for t, _, _ in gpu_summary([Gpu(0)])) == "1 x"  # nvidia-smi said N/A to everything


def test_sizes():
    assert [size(n) for n in (512, 64 * 2**20, 1.5 * GIB, 812 * GIB, 3.25 * 2**40)] == [
        "512 B", "64 MiB", "1.5 GiB", "812 GiB", "3.2 TiB"]


def nows():
    return {
        "rental0": NodeNow(gpus=eight_gpus(), jobs=["train"], disk=(812 * GIB, 2000 * GIB, "/workspace"),
                           shm=(64 * 2**20, 64 * 2**20), load=(3.1, 2.0, 1.0, 16), raylet=True, gcs=True),
        "rental1": NodeNow(no_gpu="no nvidia-smi", disk=(5 * GIB, 100 * GIB, "/"), shm=(16 * GIB, 16 * GIB),
                           load=(40.0, 30.0, 20.0, 8), raylet=False),
    }


def test_a_row_per_node_a_failed_one_named_plain_without_a_terminal():
    table = rows(NODES, nows(), {"rental2": "timed out connecting (10 s)"}, ray_expected=True)
    assert plain(table).splitlines() == [
        "node     GPUs                                    jobs      disk free  /dev/shm  load    Ray",
        "rental0  8 x 86% 70/80 GiB 74°C 695 W  GPU3 12%  1: train  812 GiB    64 MiB    3.1/16  ✓ head",
        "rental1  no GPU                                  –         5 GiB      16 GiB    40/8    ✗ no raylet",
        "rental2  no answer: timed out connecting (10 s)",
    ]


def test_the_worst_of_each_column_and_what_is_past_a_threshold_stand_out():
    table = rows(NODES[:2], nows(), {}, ray_expected=True)
    tones = {(r[0][0][0], text.strip()): tone for r in table[1:] for cell in r for text, tone in cell if tone}
    assert tones == {("rental0", "GPU3 12%"): "bad", ("rental0", "64 MiB"): "bad",  # under 1 GiB
                     ("rental1", "5 GiB"): "bad", ("rental1", "40/8"): "bad", ("rental1", "✗ no raylet"): "bad"}
    # Between two GPU nodes, the hotter one's temperature is the column's worst (yellow, not red).
    cooler = NodeNow(gpus=[Gpu(0, 99, 1024, 81559, 60, 600.0)], disk=(830 * GIB, 2000 * GIB, "/"))
    table = rows(NODES[:2], {"rental0": nows()["rental0"], "rental1": cooler}, {}, ray_expected=False)
    tones = {(r[0][0][0], text.strip()): tone for r in table[1:] for cell in r for text, tone in cell if tone}
    assert tones[("rental0", "74°C")] == tones[("rental0", "86%")] == "warn"  # hotter; the busy cluster's idlest
    assert tones[("rental0", "70/80 GiB")] == "warn" and ("rental1", "99%") not in tones
    assert ("rental0", "812 GiB") not in tones  # 812 and 830 GiB free: not far enough apart to stand out
    assert ("rental1", "–") not in tones  # Ray not expected (one node, or disabled): –


def test_on_a_terminal_the_tones_are_colours():
    from rich.console import Console

    console = Console(record=True, width=160, color_system="truecolor", force_terminal=True)
    console.print(rich_table(rows(NODES[:2], nows(), {}, ray_expected=True), "status at 12:00:00"))
    text = console.export_text(styles=False, clear=False)
    assert text.splitlines()[0].strip() == "status at 12:00:00" and "8 x 86% 70/80 GiB 74°C 695 W  GPU3 12%" in text
    assert "\x1b[1;31m" in console.export_text(styles=True)  # bold red


def test_json_for_scripts():
    node = as_json(NODES[0], nows()["rental0"], None)
    assert node["gpus"][3] == {"index": 3, "utilization_pct": 12.0, "memory_used_mib": 21559.0,
                               "memory_total_mib": 81559.0, "temperature_c": 52.0, "power_w": 140.3}
    assert node["jobs"] == ["train"] and node["ray"] == {"raylet": True, "gcs": True} and node["failed"] is None
    assert node["load"] == {"1m": 3.1, "5m": 2.0, "15m": 1.0, "cpus": 16}
    assert as_json(NODES[2], None, "refused") == {"public": "198.18.0.12", "private": "198.19.0.12", "failed": "refused"}
