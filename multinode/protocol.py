"""What nodes say back: multinode's line protocol, one place for its tags, statuses and parsing.

A protocol line is a TAG in capitals, then its fields, separated by spaces;
the last field may hold spaces (a detail, a reason) or JSON. Templates print
them through one shell helper, ``say TAG FIELD...`` (templates/facts.sh.j2);
the programs nodes run (``verify_probe.py``, ``ray_members.py``, ``smoke_*.py``,
bandwidth's) print them the same way. Any other line is output: shown or
logged, never parsed. In a node script's stream a step's output is tagged
with its step, ``[python] Resolved 3 packages``, so that no tool's output can
pass for a protocol line.

One status vocabulary for what a node reports of itself: ok, changed,
skipped, failed. A check is ok, failed or skipped (not applicable: shown –).
"""

import json
import re

OK, CHANGED, SKIPPED, FAILED = "ok", "changed", "skipped", "failed"
STATUSES = (OK, CHANGED, SKIPPED, FAILED)

# Every tag, what its fields are, and who says it.
TAGS = {
    "BEGIN": "BEGIN STEP: a step of the node script starts (node.sh)",
    "STEP": "STEP NAME STATUS DETAIL [SECONDSs]: how a step went, its duration as the node measured it (node.sh)",
    "CHECK": "CHECK NAME ok|failed|skipped REASON: one check of verify's checklist (verify.sh, steps/*)",
    "FACT": "FACT NAME VALUE: what one job needs alike on every node (steps/gpu)",
    "PYTHON": "PYTHON venv|system VERSION: which Python ran verify's probe (verify_probe.py)",
    "IFACE": "IFACE NAME|none: the interface carrying the node's private address, NCCL's and Gloo's (verify.sh)",
    "PAIR": "PAIR PRIVATE_IP ok|refused|no route|timeout|...: one pair probe (verify_probe.py, verify.sh)",
    "END": "END checklist|teardown|status: the script ran to its end (verify.sh, teardown.sh, status.sh)",
    "REACH": "REACH ALIAS ok|failed DETAIL: the head reached a worker by its alias (head_ssh.sh)",
    "WROTE": "WROTE FILE...|none: the files head-ssh changed (head_ssh.sh)",
    "PLAIN": "PLAIN DROP-IN|none: where a plain `ssh workerK` finds the aliases (head_ssh.sh)",
    "WINDOW": "WINDOW NAME PANES: a window of the tmux session (tmux.sh)",
    "KEPT": "KEPT: the tmux session already held the cluster, kept as it is (tmux.sh)",
    "WIPED": "WIPED WHAT: teardown took it away (teardown.sh)",
    "LEFT": "LEFT FILE: a file still holding a secret value (teardown.sh)",
    "UNREADABLE": "UNREADABLE PATH: a path teardown's search could not read (teardown.sh)",
    "ERROR": "ERROR WHAT: something teardown could not do (teardown.sh)",
    "SEARCHED": "SEARCHED ROOTS...: where teardown searched (teardown.sh)",
    "BW": "BW GBITS: a link's throughput (bandwidth's program)",
    "TORCH": "TORCH VERSION|none: the torch of the workspace venv (smoke.sh)",
    "GPUS": "GPUS COUNT: the GPUs nvidia-smi lists (smoke.sh)",
    "SMOKE": "SMOKE {json}: the all-reduce's result, from rank 0 (smoke_torch.py)",
    "SMOKE_NODE": "SMOKE_NODE {json}: one node's part of the all-reduce (smoke_torch.py)",
    "SMOKE_ERROR": "SMOKE_ERROR REASON: a rank that failed (smoke_torch.py, smoke.sh)",
    "SMOKE_RAY": "SMOKE_RAY {json}: each node's Ray task (smoke_ray.py)",
    "RDMA": "RDMA DEVICE/LINK_LAYER,...|- present|missing: active HCAs and /dev/infiniband (smoke.sh)",
    "NCCL_LOG": "NCCL_LOG LINE: a line of NCCL's debug output that says which transport it chose (smoke_torch.py)",
    "NCCL_ENV": "NCCL_ENV {json}: the NCCL settings the ranks got, {name: [value, where]} (smoke_torch.py)",
    "GPU_NOW": "GPU_NOW INDEX, UTIL, MEM_USED, MEM_TOTAL, TEMP, POWER: a GPU now, as nvidia-smi says it (status.sh)",
    "NO_GPU": "NO_GPU REASON: no GPU to report, or nvidia-smi failing (status.sh)",
    "JOB_RUNNING": "JOB_RUNNING NAME: a job of that name runs (or is watched) on this node (status.sh, jobs.sh)",
    "DISK": "DISK AVAIL_KB TOTAL_KB PATH: the workspace's filesystem (status.sh)",
    "SHM": "SHM SIZE_KB AVAIL_KB: /dev/shm (status.sh)",
    "LOAD": "LOAD 1M 5M 15M CPUS: load average and CPUs (status.sh)",
    "RAY_ALIVE": "RAY_ALIVE RAYLET GCS: yes|no each (- for the GCS off the head) (status.sh)",
    "RAY_MEMBERS": "RAY_MEMBERS [addresses]: the nodes Ray on the head lists alive (ray_members.py)",
    "JOB_PORT": "JOB_PORT PORT: the port MASTER_PORT gets on the rank-0 node (jobs.sh check)",
    "JOB_PORT_BUSY": "JOB_PORT_BUSY PORT: multinode.jobs.port is in use on the rank-0 node (jobs.sh check)",
    "JOB_NO_ALIAS": "JOB_NO_ALIAS workerK: the head has no ssh alias for a worker of the job (jobs.sh check)",
    "JOB_STARTED": "JOB_STARTED PID NPROC: the job's command runs on this node (job.sh start)",
    "JOB_REFUSED": "JOB_REFUSED REASON: the job, or its watchdog, did not start (job.sh, job_watch.sh start)",
    "JOB_WATCHING": "JOB_WATCHING COUNT: the head's watchdog follows that many nodes (job_watch.sh start)",
    "JOB": "JOB NAME running|ended watching|-: a job this node keeps, its supervisor and watchdog (jobs.sh list)",
    "JOB_STATE": "JOB_STATE NAME KEY VALUE: a line of the job's state on this node (jobs.sh list)",
    "JOB_WATCH": "JOB_WATCH NAME KEY VALUE: a line of the watchdog's record, on the head (jobs.sh list)",
    "JOB_COMMAND": "JOB_COMMAND NAME TEXT: the job's command, its first line (jobs.sh list)",
    "JOB_FOLLOWING": "JOB_FOLLOWING ID: a node's follower answers the head's watchdog (job.sh follow)",
    "JOB_ENDED": "JOB_ENDED EXIT TIME [STOPPED-REASON]: the job's part ended on that node (job.sh follow)",
    "JOB_VANISHED": "JOB_VANISHED REASON: its supervisor is gone without recording an exit (job.sh follow)",
}

# STEP <name> <status> <detail> [<seconds>s]: the duration as the node measured it.
STEP_RE = re.compile(r"^STEP (\S+) (ok|changed|skipped|failed)\b ?(.*?) ?(?:\[(\d+(?:\.\d+)?)s\])?$")
CHECK_RE = re.compile(r"^CHECK (\S+) (ok|failed|skipped) ?(.*)$")
OUTPUT_RE = re.compile(r"^\[([\w.-]+)\] (.*)$")


def said(output, tag):
    """The rest of every line of ``output`` tagged ``tag``, in order."""
    start = tag + " "
    return [line[len(start):] for line in output.splitlines() if line.startswith(start)]


def fields(output, tag):
    """{first field: the rest} of every ``tag`` line (the last one wins)."""
    return dict(rest.split(" ", 1) for rest in said(output, tag) if " " in rest)


def ended(output, what):
    """Whether ``output`` holds ``END what``: the script that says it ran to its end."""
    return f"END {what}" in output.splitlines()


def tagged(output, tag):
    """The JSON after ``TAG `` on the last such line of ``output``, or None."""
    found = said(output, tag)
    return json.loads(found[-1]) if found else None


def steps(output):
    """[(name, status, detail, seconds or None)] of the STEP lines of ``output``."""
    found = []
    for m in map(STEP_RE.match, output.splitlines()):
        if m:
            found.append((m.group(1), m.group(2), m.group(3), float(m.group(4)) if m.group(4) else None))
    return found


def checks(output):
    """{name: (status, reason)} of the CHECK lines of ``output``."""
    return {m.group(1): (m.group(2), m.group(3)) for m in map(CHECK_RE.match, output.splitlines()) if m}


def step_output(line):
    """(step, text) of a tagged output line of a node script, or None."""
    m = OUTPUT_RE.match(line)
    return (m.group(1), m.group(2)) if m else None


def begun(line):
    """The step a ``BEGIN`` line starts, or None."""
    return line[6:].strip() if line.startswith("BEGIN ") else None
