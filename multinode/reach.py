"""How the laptop reaches each node: straight to its sshd, through the jump host, or through the head.

A node with a public host is reached directly, or, when a jump host is
configured, through the jump host's connection. A worker without a public
address (``:PRIVATE``) is reached through the head's connection. Each hop is a
``direct-tcpip`` channel of an SSH connection that verified its own host key
(the jump host's pin, the head's pin); the node's own SSH session runs inside
that channel, end to end between the laptop and the node: the laptop's key
authenticates it, the node's host key is checked against its own pin, no
agent is forwarded and no key is copied to the hop. OpenSSH's ``ProxyJump``
does the same, which is what the laptop's ``rentalK`` aliases use.

Names are resolved here, once per run, by the laptop's own resolver; what a
name resolves to is checked as an address given by hand would be.
"""

import sys

import paramiko

from .addresses import is_name, resolve
from .connections import NodeError, describe

# paramiko's ChannelException codes (RFC 4254 5.1) in words.
OPEN_FAILURES = {1: "its sshd does not allow TCP forwarding (AllowTcpForwarding)", 2: "connect failed",
                 3: "unknown channel type", 4: "out of resources"}


def hop_of(node, head, jump):
    """The node whose connection carries ``node``'s (None: the laptop connects to it itself)."""
    if node.head_only:
        return head
    if jump is not None and node is not jump:
        return jump
    return None


def resolve_names(nodes, jump):
    """Resolve every name among ``nodes`` and the ``jump`` host; set each one's ``resolved``.

    `BadInput` (exit 2) naming the first that does not resolve, or resolves to an address no
    machine of ours has; nothing has been contacted then. Returns lines saying what resolved."""
    said = []
    for node in ([jump] if jump else []) + list(nodes):
        if node.public and is_name(node.public):
            node.resolved = resolve(node.public, node.port, node.alias)
            said.append(f"{node.alias} {node.public} is {node.resolved}")
    return said


def show(lines, stream=None):
    """Say what each name resolved to (on stderr: stdout may be a task's JSON)."""
    if lines:
        print(f"multinode: resolved on this laptop: {'; '.join(lines)}", file=stream or sys.stderr, flush=True)


def channel(hop_cxn, hop, node, timeout):
    """A ``direct-tcpip`` channel from ``hop``'s sshd to ``node``'s (its private address when the
    hop is its head), usable as the socket of ``node``'s own SSH session."""
    host = node.private if node.head_only else node.target
    where = f"{host}:{node.port}"
    try:
        return hop_cxn.transport.open_channel("direct-tcpip", (host, node.port), ("127.0.0.1", 0), timeout=timeout)
    except paramiko.ChannelException as exc:
        why = OPEN_FAILURES.get(exc.code, "refused")
        detail = f" ({exc.text})" if exc.text and exc.text.lower() not in why else ""
        raise NodeError(f"{hop.alias} ({hop.address}) could not reach {where}: {why}{detail}") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise NodeError(f"{hop.alias} ({hop.address}) could not open a channel to {where}: "
                        f"{exc or type(exc).__name__}") from None


def through(node, hop, connect, timeout):
    """``node``'s socket through ``hop``: ``connect(hop)`` gives the hop's open connection (its key
    verified); a hop that cannot be reached fails ``node`` too, naming the hop."""
    try:
        hop_cxn = connect(hop)
    except Exception as exc:  # noqa: BLE001  whatever stopped the hop stops what is behind it
        raise NodeError(f"reached through {hop.alias} ({hop.address}), which failed: {describe(exc)}") from None
    return channel(hop_cxn, hop, node, timeout)
