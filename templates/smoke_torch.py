"""multinode smoke, torch part: an all-reduce across every node and GPU.

Run once on every node (over its SSH connection, in the environment a plain
``ssh node cmd`` gets), as training is launched:

    smoke_torch.py node NNODES NODE_RANK NPROC MASTER_ADDR MASTER_PORT BACKEND SIZE_MB ITERS TIMEOUT

it starts the node's NPROC ranks, each this program again
(``smoke_torch.py rank BACKEND SIZE_MB ITERS TIMEOUT``) with the environment
torchrun gives its workers (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
GROUP_RANK, MASTER_ADDR, MASTER_PORT); when one fails it stops the others, as
torchrun does, and exits with that rank's code.

Not torchrun itself: the rendezvous store it serves on the head (a TCPStore)
listens on every address of the head, its public one too: torch's TCPStore
server binds the wildcard address, and no argument names another (torchrun's
static and c10d rendezvous alike). Here rank 0 binds MASTER_ADDR:MASTER_PORT,
the head's private address, and hands that socket to its TCPStore
(``master_listen_fd``); every other rank connects to it there.

BACKEND is nccl (one rank per GPU) or gloo (one rank per node, on CPU). Each
rank checks the all-reduce's result, then times ITERS all-reduces of SIZE_MB
MiB of float32. Each node's first rank prints ``SMOKE_NODE {...}``, rank 0
``SMOKE {...}`` (the slowest rank's time of one all-reduce); a rank that
fails prints ``SMOKE_ERROR rank R on HOST: reason``.

With NCCL, the ranks (these alone) log NCCL's own debug output, each to a file
of its own (NCCL_DEBUG=INFO, subsystems INIT, NET and ENV); once they are done,
the launcher prints the lines that say which transport NCCL chose, each once,
as ``NCCL_LOG LINE``, and the NCCL settings the ranks got as ``NCCL_ENV {...}``
(multinode/nccllog.py reads them on the laptop).
"""

import datetime
import json
import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time

host = socket.gethostname()


# NCCL's lines that say which transport it chose, and the settings that decide it.
NCCL_KEEP = ("NCCL version", "NET/", "Using network", " via ", "NCCL_IB", "NCCL_NET", "NVLS", "WARN")
NCCL_SETTINGS = ("NCCL_IB_DISABLE", "NCCL_IB_HCA", "NCCL_NET")


def launch(nnodes, node_rank, nproc, master, port, args):
    """This node's NPROC ranks, each with torchrun's environment for it (and NCCL's debug output, to a
    file of its own, under NCCL), then NCCL's report: 0 when all passed, else the first failure's
    exit code (1 for a rank a signal ended, named: it could not say so itself)."""
    logs = tempfile.mkdtemp(prefix="multinode-nccl.") if args[0] == "nccl" else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the timeout: clean up all the same
    try:
        return run_ranks(nnodes, node_rank, nproc, master, port, args, logs)
    finally:
        if logs:
            nccl_report(logs)
            shutil.rmtree(logs, ignore_errors=True)


def run_ranks(nnodes, node_rank, nproc, master, port, args, logs):
    world = nnodes * nproc
    ranks = {}
    for local in range(nproc):
        env = dict(os.environ, RANK=str(node_rank * nproc + local), LOCAL_RANK=str(local), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(nproc), GROUP_RANK=str(node_rank), MASTER_ADDR=master, MASTER_PORT=str(port))
        if logs:
            env.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT,NET,ENV",
                       NCCL_DEBUG_FILE=os.path.join(logs, f"rank{local}.log"))
        ranks[env["RANK"]] = subprocess.Popen([sys.executable, os.path.abspath(__file__), "rank", *args], env=env,
                                              stdin=subprocess.DEVNULL)
    code = 0
    while ranks:
        time.sleep(0.1)
        for rank, proc in list(ranks.items()):
            if proc.poll() is None:
                continue
            del ranks[rank]
            if proc.returncode and not code:  # the first failure: the others cannot finish without it
                code = proc.returncode if proc.returncode > 0 else 1
                if proc.returncode < 0:
                    print(f"SMOKE_ERROR rank {rank} on {host}: ended by {signal.Signals(-proc.returncode).name}",
                          flush=True)
                for other in ranks.values():
                    other.terminate()
    return code


def nccl_report(logs):
    """The ranks' NCCL lines that say which transport it chose, each once (a channel line once per
    way of reaching a peer: 32 channels of 8 ranks say the same), then the NCCL settings."""
    seen = set()
    for name in sorted(os.listdir(logs)):
        with open(os.path.join(logs, name), errors="replace") as lines:
            for line in (ln.rstrip("\n") for ln in lines):
                text = line.split(" NCCL ", 1)[-1]  # without "host:pid:tid [dev]"
                key = text.split(" via ", 1)[-1] + ("<" if "[receive]" in text else "") if " via " in text else text
                if any(k in line for k in NCCL_KEEP) and key not in seen and len(seen) < 200:
                    seen.add(key)
                    print("NCCL_LOG " + line)
    print("NCCL_ENV " + json.dumps(nccl_settings()), flush=True)


def nccl_settings():
    """{name: [value, where]} of the NCCL settings the ranks got, as NCCL reads them: the
    environment, else ~/.nccl.conf (NCCL_CONF_FILE's file instead, when set), else /etc/nccl.conf."""
    found = {k: [os.environ[k], "the environment"] for k in NCCL_SETTINGS if os.environ.get(k)}
    for path in (os.environ.get("NCCL_CONF_FILE") or os.path.expanduser("~/.nccl.conf"), "/etc/nccl.conf"):
        try:
            with open(path) as conf:
                lines = conf.read().splitlines()
        except OSError:
            continue
        for name, eq, value in (ln.strip().partition("=") for ln in lines):
            if eq and value and name in NCCL_SETTINGS and name not in found:
                found[name] = [value, path]
    return found


def rendezvous(timeout):
    """The job's store: rank 0 serves it on MASTER_ADDR:MASTER_PORT alone; the other ranks connect to it.

    use_libuv=False: torch's libuv server (its default since 2.4) listens on a handed socket only
    since pytorch#150215 (2025); before, it took the socket and never accepted on it."""
    from torch.distributed import TCPStore

    addr, port, world = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"])
    if int(os.environ["RANK"]):
        return TCPStore(addr, port, world, False, timeout)
    fd = socket.create_server((addr, port)).detach()  # the store owns (and closes) it from here
    try:
        return TCPStore(addr, port, world, True, timeout, master_listen_fd=fd, use_libuv=False)
    except TypeError:  # a torch older than use_libuv (2.2): that server is its only one
        return TCPStore(addr, port, world, True, timeout, master_listen_fd=fd)


def main(backend, size_mb, iters, timeout):
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "nccl":
        if torch.cuda.device_count() <= local_rank:
            raise RuntimeError(f"torch sees {torch.cuda.device_count()} GPU(s), this is local rank {local_rank} "
                               f"(torch.cuda.is_available() is {torch.cuda.is_available()})")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        name = torch.cuda.get_device_name(device)
    else:
        device, name = torch.device("cpu"), "cpu"
    limit = datetime.timedelta(seconds=timeout)
    dist.init_process_group(backend, store=rendezvous(limit), rank=int(os.environ["RANK"]),
                            world_size=int(os.environ["WORLD_SIZE"]), timeout=limit)
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


if __name__ == "__main__":
    if sys.argv[1] == "node":
        sys.exit(launch(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]),
                        sys.argv[7:]))
    try:
        main(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    except Exception as exc:
        print(f"SMOKE_ERROR rank {os.environ.get('RANK', '?')} on {host}: {type(exc).__name__}: "
              f"{(str(exc).strip().splitlines() or [''])[0]}", flush=True)
        sys.exit(1)
