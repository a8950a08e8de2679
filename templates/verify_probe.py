# verify's probe: which Python ran it, then every other node over the private network.
# Arguments: WHICH (venv|system) TIMEOUT PORT OWN_IP PEER_IP...
# Prints "PYTHON WHICH VERSION", then "PAIR <peer> ok|refused|no route|timeout" per
# peer (a rarer failure in the system's words, never an errno's name). Each node
# listens on PORT for a few seconds (a high port, as NCCL's are; probing sshd
# instead made every node's sshd fork once per peer) and probes its peers, all at
# once, retrying a refusal while a peer's listener is not up yet.
import errno
import os
import selectors
import socket
import sys
import time

which, timeout, port, own, peers = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5:]
print("PYTHON", which, ".".join(map(str, sys.version_info[:3])), flush=True)
if not peers:
    sys.exit(0)
deadline = time.monotonic() + timeout
try:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Beside an earlier run's listener, which may still hold the port for a moment and then go.
    listener.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_REUSEPORT", socket.SO_REUSEADDR), 1)
    listener.bind((own, port))
    listener.listen(256)
except OSError:
    listener = None  # the port is another program's: the peers' probes say "refused"
if listener is not None and os.fork() == 0:  # the listener lives on a little after this checklist
    os.setsid()
    for fd in (0, 1, 2):
        os.close(fd)
    listener.settimeout(0.2)
    end = deadline + 2
    while time.monotonic() < end:
        try:
            listener.accept()[0].close()
        except OSError:
            pass
    os._exit(0)


# What a failed connect says, in words: a route that drops the packet says so at once, each
# kind in its own errno (an "unreachable" route EHOSTUNREACH, a "prohibit" one EACCES, a
# "blackhole" one EINVAL); a local firewall EPERM. Any other: the system's own words for it.
WORDS = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timeout", errno.EHOSTUNREACH: "no route",
         errno.ENETUNREACH: "no route", errno.EHOSTDOWN: "no route", errno.ENETDOWN: "no route",
         errno.EINVAL: "no route", errno.EACCES: "no route", errno.EPERM: "blocked by this node's firewall",
         errno.ECONNRESET: "connection reset", errno.ECONNABORTED: "connection reset"}


def why(err):
    return "ok" if err == 0 else WORDS.get(err) or os.strerror(err).lower()


RETRIED = ("refused", "timeout", "connection reset")
result, waiting = {}, set(peers)
while waiting and time.monotonic() < deadline:
    sel = selectors.DefaultSelector()
    for ip in waiting:
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex((ip, port))
        if err in (0, errno.EINPROGRESS):
            sel.register(s, selectors.EVENT_WRITE, ip)
        else:
            result[ip] = why(err)
            s.close()
    round_end = min(deadline, time.monotonic() + 1.0)
    while sel.get_map() and time.monotonic() < round_end:
        for key, _ in sel.select(max(0.0, round_end - time.monotonic())):
            result[key.data] = why(key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
            sel.unregister(key.fileobj)
            key.fileobj.close()
    for key in list(sel.get_map().values()):  # still connecting: a timeout, unless a later round answers
        result.setdefault(key.data, "timeout")
        key.fileobj.close()
    # Done: those that answered, and routes known to be missing. Retried: a refusal (a peer's
    # listener may start later), a reset (an earlier run's listener, sharing the port, closed
    # with this connection in its queue) and a connection still pending.
    waiting = {ip for ip in waiting if result.get(ip) in RETRIED}
    for ip in waiting:
        if result[ip] == "timeout":
            result.pop(ip)
    if waiting:
        time.sleep(0.1)
for ip in peers:
    print("PAIR", ip, result.get(ip, "timeout"))
