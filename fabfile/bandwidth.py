"""bandwidth: measure the private network, each node sending to the next in a ring.

Every node runs one small Python program (the node's own python3) at once:
it serves on ``network.bandwidth_port`` and sends to the next node of the ring
for ``--seconds``, counting what went through. The result is each link's
Gbit/s and the slowest named; a link below ``network.min_gbits`` fails its
sending node. This is what an all-reduce across the nodes is limited by.
"""

from invoke import Collection, task

from .connections import NodeError
from .inventory import BadInput
from .render import command
from .session import Outcome, checks_arguments, session_of

# Run on every node: SECONDS PORT OWN_IP TARGET_IP; serves, sends, prints "BW <gbit/s>".
PROGRAM = """
import socket, sys, threading, time
seconds, port, own, target = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((own, port))
server.listen(8)
server.settimeout(seconds + 15)
def serve():
    try:
        conn = server.accept()[0]
        while conn.recv(1 << 20):
            pass
    except OSError:
        pass
threading.Thread(target=serve, daemon=True).start()
deadline = time.monotonic() + 10
while True:  # the peer's server may start a moment later
    try:
        out = socket.create_connection((target, port), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
chunk, sent = b"\\0" * (1 << 20), 0
start = time.monotonic()
while time.monotonic() - start < seconds:
    sent += out.send(chunk)
out.close()
print("BW %.3f" % (sent * 8 / (time.monotonic() - start) / 1e9), flush=True)
time.sleep(1)  # let the node sending to us finish
"""


def seconds_arg(session, seconds=None, **_):
    value = 3 if seconds is None else seconds
    try:
        value = float(value)
        if not 0.2 <= value <= 600:
            raise ValueError
    except ValueError:
        raise BadInput(f"bad --seconds {seconds!r}: 0.2 to 600") from None
    return value


@checks_arguments(seconds_arg)
@task(help={"seconds": "how long each node sends to the next (default 3)"})
def bandwidth(c, seconds=None):
    """Measure the private network: each node sends to the next in a ring; Gbit/s per link."""
    session = session_of(c)
    opts = session.options
    duration = seconds_arg(session, seconds)
    ring = session.alive()
    if len(ring) < 2:
        session.report.write("bandwidth: needs two nodes or more")
        return
    floor = opts["network"]["min_gbits"]
    port = opts["network"]["bandwidth_port"]
    nxt = {n.alias: ring[(i + 1) % len(ring)] for i, n in enumerate(ring)}

    def measure(node, cxn):
        target = nxt[node.alias]
        out = cxn.run(command("python3", "-c", PROGRAM, duration, port, node.private, target.private), hide=True,
                      in_stream=False, timeout=duration + 30).stdout
        line = next((ln for ln in out.splitlines() if ln.startswith("BW ")), None)
        if line is None:
            raise NodeError(f"no measurement to {target.alias}")
        gbits = float(line.split()[1])
        link = f"-> {target.alias} ({target.private}): {gbits:.2f} Gbit/s"
        if floor and gbits < floor:
            raise NodeError(f"{link}, below multinode.network.min_gbits {floor}")
        return Outcome("ok", link, value=gbits)

    found = session.each("bandwidth", measure, only=ring)
    if found:
        slowest = min(found, key=lambda alias: found[alias].value)
        session.report.write(f"bandwidth: slowest link {slowest} -> {nxt[slowest].alias}: "
                             f"{found[slowest].value:.2f} Gbit/s over {duration:g} s")


ns = Collection("bandwidth")
ns.add_task(bandwidth)
