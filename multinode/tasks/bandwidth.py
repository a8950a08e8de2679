"""bandwidth: measure the private network, each node sending to the next in a ring.

Every node runs one small Python program (the node's own python3) at once:
it serves on ``network.bandwidth_port`` (the node sending to it alone: a
stranger that connects first is closed, not measured) and sends to the next
node of the ring for ``--seconds``, counting what went through. The result is each link's
Gbit/s and the slowest named; a link below ``network.min_gbits`` fails its
sending node. This is what an all-reduce across the nodes is limited by.

``--all-pairs`` measures every pair instead, both ways at once, in rounds
where each node is in one pair (N - 1 rounds of ``--seconds``: every link
alone, not sharing a node's bandwidth with another), and prints the matrix.
"""

from invoke import Collection, task

from .. import protocol
from ..connections import NodeError
from ..render import command
from ..report import columns
from ..session import Outcome, checks_arguments, number_arg, session_of

# Run on every node: SECONDS PORT OWN_IP TARGET_IP PEER_IP; serves PEER_IP (the node that sends
# to this one) alone, sends to TARGET_IP from OWN_IP, prints "BW <gbit/s>". A stranger that
# connects first (a scanner, another program's client) is closed and the wait goes on: the
# first connection taken would have left the peer's unread, its send stalled.
PROGRAM = """
import socket, sys, threading, time
seconds, port, own, target, peer = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind((own, port))
server.listen(8)
end = time.monotonic() + seconds + 15
def serve():
    try:
        while True:
            server.settimeout(max(0.01, end - time.monotonic()))
            conn, (addr, _) = server.accept()
            if addr == peer:
                break
            conn.close()
        server.close()
        while conn.recv(1 << 20):
            pass
    except OSError:
        pass
threading.Thread(target=serve, daemon=True).start()
deadline = time.monotonic() + 10
while True:  # the peer's server may start a moment later
    try:
        out = socket.create_connection((target, port), timeout=5, source_address=(own, 0))
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
    return number_arg("seconds", seconds, 3, float, 0.2, 600)


def rounds(nodes):
    """Every pair of ``nodes`` once, in rounds where each node is in one pair at most (the circle method)."""
    circle = list(nodes) + ([None] if len(nodes) % 2 else [])
    found = []
    for _ in range(len(circle) - 1):
        half = len(circle) // 2
        found.append([(a, b) for a, b in zip(circle[:half], reversed(circle[half:])) if a and b])
        circle = [circle[0], circle[-1]] + circle[1:-1]
    return found


def measure(session, targets, duration):
    """Each node of ``targets`` ({alias: node}) sends to its target at once: {(sender, receiver): Gbit/s}.

    Each node's server takes the connection of the node sending to it alone (``peers``), known by
    its private address, which every sender sends from."""
    port = session.options["network"]["bandwidth_port"]
    peers = {target.alias: session.find(sender) for sender, target in targets.items()}

    def send(node, cxn):
        target = targets[node.alias]
        out = cxn.run(command("python3", "-c", PROGRAM, duration, port, node.private, target.private,
                              peers[node.alias].private), hide=True, in_stream=False, timeout=duration + 30).stdout
        measured = protocol.said(out, "BW")
        if not measured:
            raise NodeError(f"no measurement to {target.alias}")
        return Outcome("ok", value=float(measured[-1]))

    senders = [n for n in session.alive() if n.alias in targets]
    got = session.each("bandwidth", send, quiet=True, only=senders)
    return {(alias, targets[alias].alias): out.value for alias, out in got.items()}


def judge(session, links, floor, lines):
    """Fail each sending node with a link below ``floor``, naming those links; ``lines``: the others' links too."""
    sent = {}
    for (sender, receiver), gbits in links.items():
        sent.setdefault(sender, []).append((session.find(receiver), gbits))
    for sender, out in sent.items():
        slow = [f"-> {node.alias}: {gbits:.2f} Gbit/s" for node, gbits in out if floor and gbits < floor]
        if slow:
            session.fail(session.find(sender), "bandwidth", f"{', '.join(slow)}, below multinode.network.min_gbits {floor}")
        elif lines:
            session.report.line("bandwidth", session.find(sender), "ok",
                                "; ".join(f"-> {node.alias} ({node.private}): {gbits:.2f} Gbit/s" for node, gbits in out))


@checks_arguments(seconds_arg)
@task(help={"seconds": "how long each node sends to the next (default 3)",
            "all_pairs": "measure every pair of nodes, one round of pairs after another ((N-1) x seconds)"})
def bandwidth(c, seconds=None, all_pairs=False):
    """Measure the private network: each node sends to the next in a ring (or every pair); Gbit/s per link."""
    session = session_of(c)
    floor = session.options["network"]["min_gbits"]
    duration = seconds_arg(session, seconds)
    nodes = session.alive()
    if len(nodes) < 2:
        session.report.write("bandwidth: needs two nodes or more")
        return
    if all_pairs:
        links = {}
        for pairs in rounds(nodes):  # both ways at once, as an all-reduce's ring uses a link
            targets = {a.alias: b for a, b in pairs} | {b.alias: a for a, b in pairs}
            links.update(measure(session, targets, duration))
        aliases = [n.alias for n in nodes]
        rows = [["Gbit/s"] + [f"-> {a}" for a in aliases]]
        rows += [[s] + ["" if s == r else f"{links[s, r]:.2f}" if (s, r) in links else "?" for r in aliases]
                 for s in aliases]
        session.report.write("\n".join(["bandwidth, every pair (sender -> receiver)"] + columns(rows)))
    else:
        nxt = {n.alias: nodes[(i + 1) % len(nodes)] for i, n in enumerate(nodes)}
        links = measure(session, nxt, duration)
    judge(session, links, floor, lines=not all_pairs)
    if links:
        (sender, receiver), gbits = min(links.items(), key=lambda item: item[1])
        session.report.write(f"bandwidth: slowest link {sender} -> {receiver}: {gbits:.2f} Gbit/s over {duration:g} s")


ns = Collection("bandwidth")
ns.add_task(bandwidth)
