"""torch.distributed, stand-in: a TCPStore that listens where torch's would, and collectives over it.

Where the store's server listens is what the tests using this are about: handed a socket
(``master_listen_fd``), it serves on that socket as it is, as torch's does; without one, on the
wildcard address, as torch's does too (its server binds no other address). Every rank writes
what it was given (its environment, the store's arguments; the server's: where it listens, and
``ss -ltn`` then) to ``records/RANK.json`` beside this file.
"""

import datetime
import json
import os
import socket
import subprocess
import threading
import time

RECORDS = os.path.join(os.path.dirname(__file__), "records")
ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
       "OMP_NUM_THREADS")
_group = {}


class ReduceOp:
    SUM, MAX = sum, max


class TCPStore:
    """A key-value store over TCP: a JSON line a request (set, or get: it waits for the key)."""

    def __init__(self, host_name, port, world_size=None, is_master=False, timeout=datetime.timedelta(seconds=300),
                 wait_for_workers=True, multi_tenant=False, master_listen_fd=None, use_libuv=None):
        self.args = {"host_name": host_name, "port": port, "world_size": world_size, "is_master": is_master,
                     "timeout": timeout.total_seconds(), "master_listen_fd": master_listen_fd, "use_libuv": use_libuv}
        if is_master:
            if master_listen_fd is None:
                server = socket.create_server(("0.0.0.0", port))
            else:
                server = socket.socket(fileno=master_listen_fd)
                server.listen()
            if server.getsockname()[1] != port:
                raise RuntimeError(f"listen fd {master_listen_fd} is bound to port {server.getsockname()[1]}, not {port}")
            self.args["listening"] = "%s:%d" % server.getsockname()[:2]
            self.args["ss"] = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
            self.data, self.changed = {}, threading.Condition()
            threading.Thread(target=self._serve, args=(server,), daemon=True).start()
        end = time.monotonic() + timeout.total_seconds()
        while True:  # as torch's client: the server may start later
            try:
                self.conn = socket.create_connection((host_name, port), timeout=timeout.total_seconds())
                break
            except OSError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)
        self.file = self.conn.makefile("rw")

    def _serve(self, server):
        while True:
            threading.Thread(target=self._client, args=(server.accept()[0],), daemon=True).start()

    def _client(self, conn):
        with conn, conn.makefile("rw") as f:
            for line in f:
                op, key, *value = json.loads(line)
                with self.changed:
                    if op == "set":
                        self.data[key] = value[0]
                        self.changed.notify_all()
                    else:
                        self.changed.wait_for(lambda key=key: key in self.data)
                    reply = self.data[key]
                f.write(json.dumps(reply) + "\n")
                f.flush()

    def _ask(self, *request):
        self.file.write(json.dumps(request) + "\n")
        self.file.flush()
        return json.loads(self.file.readline())

    def set(self, key, value):
        self._ask("set", key, value)

    def get(self, key):
        return self._ask("get", key)


def init_process_group(backend, init_method=None, timeout=datetime.timedelta(seconds=1800), world_size=-1, rank=-1,
                       store=None):
    if store is None:  # env://, as torch's: rank 0 serves the store, on the wildcard address
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size, rank == 0, timeout)
    _group.update(store=store, rank=rank, world=world_size, calls=0)
    if backend == "nccl" and os.environ.get("NCCL_DEBUG") == "INFO":
        _nccl_debug(rank, world_size)
    os.makedirs(RECORDS, exist_ok=True)
    with open(os.path.join(RECORDS, f"{rank}.json"), "w") as f:
        json.dump({"backend": backend, "rank": rank, "world_size": world_size, "timeout": timeout.total_seconds(),
                   "env": {k: os.environ.get(k) for k in ENV}, "store": store.args,
                   "nccl_debug": {k: os.environ.get(k) for k in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE")}},
                  f)


def _nccl_debug(rank, world):
    """What NCCL 2.21 logs at init with NCCL_DEBUG=INFO on a node without a usable HCA (sockets between
    nodes, shared memory within one), to NCCL_DEBUG_FILE as NCCL does (else standard output)."""
    host, pid, local = socket.gethostname(), os.getpid(), int(os.environ.get("LOCAL_RANK", 0))
    per_node, iface = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), os.environ.get("NCCL_SOCKET_IFNAME") or "eth0"
    head = f"{host}:{pid}:{pid} [{local}] NCCL INFO "
    lines = [f"{head}Bootstrap : Using {iface}:{os.environ['MASTER_ADDR']}<0>"]
    lines.append(f"{head}NCCL version 2.21.5+cuda12.4")
    if os.environ.get("NCCL_IB_DISABLE"):
        lines.append(f"{head}NCCL_IB_DISABLE set by environment to {os.environ['NCCL_IB_DISABLE']}.")
    else:
        lines.append(f"{head}NET/IB : No device found.")
    lines += [f"{head}NET/Socket : Using [0]{iface}:{os.environ['MASTER_ADDR']}<0>", f"{head}Using network Socket"]
    for peer, way in (((rank + 1) % world, "send"), ((rank - 1) % world, "receive")):
        src, dst = (rank, peer) if way == "send" else (peer, rank)
        ends = f"{src}[{src % per_node}] -> {dst}[{dst % per_node}]"
        if peer // per_node == rank // per_node:
            lines.append(f"{head}Channel 00/0 : {ends} via SHM/direct/direct")
        else:
            lines.append(f"{head}Channel 00/0 : {ends} [{way}] via NET/Socket/0")
    text = "\n".join(lines) + "\n"
    if os.environ.get("NCCL_DEBUG_FILE"):
        with open(os.environ["NCCL_DEBUG_FILE"], "a") as f:
            f.write(text)
    else:
        print(text, end="", flush=True)


def get_rank():
    return _group["rank"]


def get_world_size():
    return _group["world"]


def all_reduce(tensor, op=ReduceOp.SUM):
    """Every rank's values through the store, reduced element by element."""
    store, rank, world = _group["store"], _group["rank"], _group["world"]
    _group["calls"] += 1
    key = f"all_reduce/{_group['calls']}/"
    store.set(key + str(rank), tensor.values)
    parts = [store.get(key + str(r)) for r in range(world)]
    tensor.values = [float(op(column)) for column in zip(*parts)]


def barrier(device_ids=None):
    from .. import Tensor

    all_reduce(Tensor([0.0]))


def destroy_process_group():
    """Rank 0 serves the store: it stays until every rank is done reading from it."""
    store, rank = _group["store"], _group["rank"]
    store.set(f"done/{rank}", 1)
    if rank == 0:
        for other in range(_group["world"]):
            store.get(f"done/{other}")
