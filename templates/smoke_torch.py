"""multinode smoke, torch part: one rank of an all-reduce across every node and GPU.

Started by torchrun on every node (``--nnodes N --node-rank K
--nproc-per-node G --master-addr HEAD_PRIVATE``), as training is:

    smoke_torch.py BACKEND SIZE_MB ITERS TIMEOUT

BACKEND is nccl (one rank per GPU) or gloo (one rank per node, on CPU). Each
rank checks the all-reduce's result, then times ITERS all-reduces of SIZE_MB
MiB of float32. Each node's first rank prints ``SMOKE_NODE {...}``, rank 0
``SMOKE {...}`` (the slowest rank's time of one all-reduce); a rank that
fails prints ``SMOKE_ERROR rank R on HOST: reason``.
"""

import datetime
import json
import os
import socket
import sys
import time

import torch
import torch.distributed as dist

backend, size_mb, iters, timeout = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
local_rank = int(os.environ["LOCAL_RANK"])
host = socket.gethostname()


def main():
    if backend == "nccl":
        if torch.cuda.device_count() <= local_rank:
            raise RuntimeError(f"torch sees {torch.cuda.device_count()} GPU(s), this is local rank {local_rank} "
                               f"(torch.cuda.is_available() is {torch.cuda.is_available()})")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        name = torch.cuda.get_device_name(device)
    else:
        device, name = torch.device("cpu"), "cpu"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout))
    rank, world = dist.get_rank(), dist.get_world_size()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # Correct first: every rank contributes rank + 1; every element must be the sum.
    x = torch.full((1024,), float(rank + 1), device=device)
    dist.all_reduce(x)
    sync()
    want = world * (world + 1) / 2
    correct = bool(torch.all(x == want).item())
    if not correct:
        raise RuntimeError(f"all-reduce gave {x[0].item()}, not {want}")
    # Then fast: ITERS all-reduces of SIZE_MB MiB, after two to warm up.
    count = max(1, int(size_mb * 2**20) // 4)
    y = torch.zeros(count, dtype=torch.float32, device=device)
    for _ in range(2):
        dist.all_reduce(y)
    sync()
    dist.barrier(device_ids=[local_rank] if device.type == "cuda" else None)
    start = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(y)
    sync()
    seconds = (time.perf_counter() - start) / iters
    # The slowest rank decides: the longest time of all ranks.
    longest = torch.tensor([seconds], dtype=torch.float64, device=device)
    dist.all_reduce(longest, op=dist.ReduceOp.MAX)
    seconds = longest.item()
    env = {k: os.environ.get(k, "") for k in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")}
    if local_rank == 0:
        print("SMOKE_NODE " + json.dumps({"host": host, "ranks": int(os.environ["LOCAL_WORLD_SIZE"]), "device": name,
                                          "backend": backend, "correct": correct, "env": env}), flush=True)
    if rank == 0:
        print("SMOKE " + json.dumps({"world": world, "backend": backend, "bytes": count * 4, "iters": iters,
                                     "seconds": seconds}), flush=True)
    dist.destroy_process_group()


try:
    main()
except Exception as exc:
    rank = os.environ.get("RANK", "?")
    print(f"SMOKE_ERROR rank {rank} on {host}: {type(exc).__name__}: "
          f"{(str(exc).strip().splitlines() or [''])[0]}", flush=True)
    sys.exit(1)
