"""multinode smoke, Ray part: run on the head by the workspace venv's Python.

    python smoke_ray.py ADDRESS TIMEOUT PRIVATE_IP...

One Ray task pinned to each node (NodeAffinitySchedulingStrategy, not soft),
holding the node's GPUs as a training task would, reports what a task there
sees: the hostname, the GPUs Ray gave it, the NCCL/Gloo environment, and the
GPUs ``nvidia-smi -L`` lists there (None without nvidia-smi): Ray counts a
node's GPUs once, when it starts, and may have counted none.
Prints one line, ``SMOKE_RAY {private_ip: result}``; a result with "error"
says why that node's task did not report.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

address, timeout, want = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
ray.init(address=address, logging_level="ERROR", log_to_driver=False)


def listed_gpus():
    """How many GPUs ``nvidia-smi -L`` lists on this node (None: no nvidia-smi; 0 when it fails)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


@ray.remote(num_cpus=0)
def probe():
    return {
        "hostname": socket.gethostname(),
        "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
        "env": {k: v for k, v in os.environ.items() if k.startswith(("NCCL_", "GLOO_"))},
        "nvidia_smi": listed_gpus(),
    }


alive = {n["NodeManagerAddress"]: n for n in ray.nodes() if n["Alive"]}
result, pending = {}, {}
for ip in want:
    node = alive.get(ip)
    if node is None:
        result[ip] = {"error": "not an alive node of the Ray cluster"}
        continue
    gpus = node["Resources"].get("GPU", 0)
    strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
    pending[ip] = (probe.options(num_gpus=gpus, scheduling_strategy=strategy).remote(), gpus)
deadline = time.monotonic() + timeout
for ip, (ref, gpus) in pending.items():
    try:
        result[ip] = {**ray.get(ref, timeout=max(0.1, deadline - time.monotonic())), "ray_gpus": gpus}
    except ray.exceptions.GetTimeoutError:
        why = "its GPUs held by another task?" if gpus else "the node busy?"
        result[ip] = {"error": f"the task did not run within {timeout:g} s ({why})"}
    except Exception as exc:  # the task failed there: say how, in one line
        result[ip] = {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[-1]}
print("SMOKE_RAY " + json.dumps(result), flush=True)
os._exit(0)  # skip the driver's slow shutdown
