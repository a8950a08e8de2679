"""SSH connections to nodes, with host keys checked against known_hosts.

Fabric's Connection accepts any host key (paramiko's AutoAddPolicy, no
known_hosts loaded). Here every login checks the key strictly against
``~/.ssh/known_hosts``: an unknown or changed key refuses the node. Only
`fetch_host_key`, used by the hostkeys task, reads a key without checking it,
and it never authenticates.
"""

import socket

import paramiko
from fabric import Connection
from fabric.runners import Remote
from invoke.exceptions import CommandTimedOut, UnexpectedExit

from .sshfiles import fingerprint, keys_of, known_host_entries

KEEPALIVE = 15  # seconds between SSH keepalives on every node connection
HINT = "if that machine was reinstalled, run `fab hostkeys --reinstalled {alias}` to record its new key"


class NodeError(Exception):
    """A node-level failure with a message meant for the user."""


class UnknownHostKey(paramiko.SSHException):
    pass


class RefuseUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(
            f"host key of {hostname} is not in {self.known_hosts} (it offers {fingerprint(key)}); "
            "run `fab hostkeys` first"
        )


def tcp_connect(node, timeout):
    """An open TCP socket to the node's sshd (a name's resolved address), with Nagle off (fewer stalls)."""
    try:
        sock = socket.create_connection((node.target, node.port), timeout=timeout)
    except TimeoutError:
        raise NodeError(f"timed out after {timeout}s connecting to {node.address}") from None
    except ConnectionRefusedError:
        raise NodeError(f"connection refused by {node.address} (is sshd running?)") from None
    except OSError as exc:
        raise NodeError(f"cannot reach {node.address}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def prefer(transport, kind):
    """Have ``transport`` ask the server for a host key of type ``kind`` first (the one
    known for it), as OpenSSH does: a server holding several keys offers the one we know."""
    if kind:
        options = transport.get_security_options()
        options.key_types = [kind] + [k for k in options.key_types if k != kind]


def fetch_host_key(node, timeout, kind=None, sock=None):
    """The node's current host key (of type ``kind`` where it has one), read before any authentication,
    over ``sock`` (a channel through another node; else a TCP connection of its own)."""
    transport = paramiko.Transport(sock or tcp_connect(node, timeout))
    transport.banner_timeout = timeout
    prefer(transport, kind)
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, EOFError) as exc:
        raise NodeError(f"no SSH handshake with {node.address}: {exc or type(exc).__name__}") from None
    finally:
        transport.close()


class AuthFailed(NodeError):
    pass


class WaitingRemote(Remote):
    """Fabric's remote runner: stdin closed, sleeping on the channel's exit event.

    With ``in_stream=False`` Invoke sends nothing but leaves the channel's
    stdin open: a remote command that reads it (a prompt) waits forever. Here
    the remote side gets end-of-file at once. Invoke's `Runner.wait` polls
    every 10 ms: with 16 node scripts running for a minute, that alone costs
    the laptop about two CPU seconds.
    """

    def send_start_message(self, command):
        super().send_start_message(command)
        if self.streams["in"] is False:
            self.channel.shutdown_write()

    def wait(self):
        while not (self.process_is_finished or self.has_dead_threads):
            self.channel.status_event.wait(0.25)
        if self._timer is not None and self.channel.exit_status == -1:
            # Closed without an exit status, maybe by the timeout's timer, which is then
            # still inside kill(): let it finish, so Invoke reports the timeout.
            self._timer.join(1)


def connection(node, user, settings, config, sock):
    """The node's Fabric Connection over ``sock``, not yet open (see `login`)."""
    timeout = settings.connect_timeout
    connect_kwargs = {
        "key_filename": [str(settings.identity)],
        "look_for_keys": False,
        "allow_agent": False,
        "banner_timeout": timeout,
        "auth_timeout": timeout,
        "sock": sock,
    }
    cxn = Connection(
        node.host,  # the name known_hosts and the pin know it by (a name, not what it resolved to)
        user=user,
        port=node.port,
        # Its own copy: a Connection writes into its config (inline_ssh_env), and Invoke
        # rebuilds a config on each write, which other threads then read half-built
        # ("No attribute or config key found for 'port'": a node failed at random).
        config=config.clone(),
        connect_timeout=timeout,
        forward_agent=False,
        gateway=False,
        connect_kwargs=connect_kwargs,
    )
    cxn.connect_kwargs = connect_kwargs  # not merged with keys from any config file
    return cxn


def login(node, user, settings, config, pinned=None, sock=None):
    """An open, authenticated Fabric Connection, host key checked strictly.

    ``pinned``: the key multinode pinned for this machine (see `pins`), the only
    one accepted; else the keys known_hosts holds for its address. Nothing of
    the user's ssh config applies (``config`` carries an empty one, see
    `isolated`): no agent forwarded to a rented node, no key but the
    configured identity, no gateway we did not verify. ``sock``: a channel through the jump
    host or the head (`reach`), whose own connection verified that hop's key; this login
    verifies the node's own, end to end.
    """
    sock = sock or tcp_connect(node, settings.connect_timeout)
    cxn = connection(node, user, settings, config, sock)
    client = cxn.client
    client.set_missing_host_key_policy(RefuseUnknown(settings.known_hosts))
    known = client.get_host_keys()
    keys = [pinned] if pinned is not None else keys_of(known_host_entries(settings.known_hosts), node.address)
    for key in keys:  # matched here, hashed too
        known.add(node.address, key.get_name(), key)
    where = "multinode pinned" if pinned is not None else "known_hosts has"
    try:
        cxn.open()
    except paramiko.BadHostKeyException as exc:
        cxn.close()
        raise NodeError(
            f"host key of {node.address} changed: {where} {fingerprint(exc.expected_key)}, "
            f"the node offers {fingerprint(exc.key)}; {HINT.format(alias=node.alias)}"
        ) from None
    except paramiko.AuthenticationException:
        cxn.close()
        raise AuthFailed(f"authentication failed for user {user!r}") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        cxn.close()
        raise NodeError(str(exc) or type(exc).__name__) from None
    # A link that dies silently (NAT timeout, a node gone) is noticed, not waited on forever.
    cxn.transport.set_keepalive(KEEPALIVE)
    return cxn


def bounded_sftp(cxn, seconds):
    """The connection's SFTP session, each of its operations bounded to ``seconds``."""
    sftp = cxn.sftp()
    sftp.get_channel().settimeout(seconds)
    return sftp


def isolated(config):
    """``config`` for our node connections: an empty ssh config (nothing of ~/.ssh/config is
    read), no agent forwarded, and stdin closed for every remote command unless a caller
    passes its own ``in_stream`` (a user's task included: a prompt never waits for the laptop)."""
    config._set(base_ssh_config=paramiko.SSHConfig())
    config.forward_agent = False
    config.run.in_stream = False
    return config


def describe(exc):
    """One line saying why a node failed."""
    if isinstance(exc, NodeError):
        return str(exc)
    if isinstance(exc, CommandTimedOut):
        return f"no answer after {exc.timeout}s: the command was stopped (the node may hang)"
    if isinstance(exc, UnexpectedExit):
        result = exc.result
        last = (result.stderr or result.stdout or "").strip().splitlines()[-1:] or [""]
        return f"command exited {result.exited}: {last[0]}".rstrip(": ")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
