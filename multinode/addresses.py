"""Where a node is: an IP address, a DNS name the laptop resolves, or nothing (reached through the head).

Addresses are checked as machines' addresses (no unspecified, loopback,
link-local, multicast, broadcast or IPv4-mapped IPv6 one). A DNS name is
written from a safe set (letters, digits, ``-`` and ``.``; no label starts or
ends with ``-``; the last label is not a number, which is a malformed
address instead) and kept in lowercase, as OpenSSH records it in
known_hosts: a name never reads as an ssh option or a shell word. The laptop
resolves a name at run time with its own resolver (`resolve`); what it
resolves to is checked as an address given by hand would be.
"""

import ipaddress
import re
import socket

DEFAULT_PORT = 22
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
NAME_RE = re.compile(rf"(?=.{{1,253}}$){LABEL}(?:\.{LABEL})*")


class BadInput(ValueError):
    """Input that is refused before anything connects (exit code 2)."""

    def exit(self):
        """The `Exit` that ends the run: one line naming the value, code 2."""
        from invoke.exceptions import Exit

        return Exit(f"multinode: {self}", code=2)


def refused_kind(ip):
    """Why ``ip`` is not a machine's address (None: it is one)."""
    return ("unspecified" if ip.is_unspecified else "loopback" if ip.is_loopback else "multicast" if ip.is_multicast
            else "link-local" if ip.is_link_local else "broadcast" if ip == ipaddress.ip_address("255.255.255.255")
            else "IPv4-mapped IPv6" if getattr(ip, "ipv4_mapped", None) else None)


def address(value, what, spec):
    """``value`` (IPv6 in brackets allowed) as a machine's IP address in canonical form, else `BadInput`."""
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
        if ":" not in value:
            raise BadInput(f"bad {what} address {value!r} in {spec!r}: brackets are for IPv6 only")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise BadInput(f"bad {what} address {value!r} in {spec!r}") from None
    kind = refused_kind(ip)
    if kind:
        raise BadInput(f"bad {what} address {value!r} in {spec!r}: {kind}, not a machine's")
    if what == "private" and ip.version == 6:
        # The node script finds the NCCL/Gloo interface, /etc/hosts and Ray by IPv4.
        raise BadInput(f"bad private address {value!r} in {spec!r}: IPv6 private networks are not supported; "
                       "give the node's private IPv4 address")
    return str(ip)


def is_name(value):
    """Whether ``value`` is a DNS name as `host` keeps it (not an address)."""
    return bool(value) and NAME_RE.fullmatch(value) is not None and not value.rsplit(".", 1)[-1].isdigit()


def host(value, what, spec):
    """A public host: an IP address (canonical) or a DNS name (lowercase), else `BadInput` naming it."""
    if is_name(value.lower()):
        return value.lower()
    if re.fullmatch(r"[A-Za-z0-9.-]+", value) and not value.rsplit(".", 1)[-1].isdigit():
        raise BadInput(f"bad {what} host {value!r} in {spec!r}: not a DNS name (letters, digits and '-' "
                       "between dots, no label starting or ending with '-')")
    return address(value, what, spec)


def ssh_address(name, port):
    """How OpenSSH names a host in known_hosts: ``name``, or ``[name]:port`` off port 22."""
    return name if port == DEFAULT_PORT else f"[{name}]:{port}"


def bracketed(value):
    """``value`` as it goes before ``:PORT`` in a spec: an IPv6 address in brackets."""
    return f"[{value}]" if ":" in value and not value.startswith("[") else value


def resolve(name, port, who):
    """The address ``name`` resolves to on this laptop, checked; `BadInput` naming ``who`` and the name
    when it does not resolve, or resolves to an address no machine of ours has."""
    try:
        found = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else str(exc)
        raise BadInput(f"{who}: name {name!r} does not resolve on this laptop ({reason})") from None
    ips = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in found]
    for ip in ips:
        kind = refused_kind(ip)
        if kind:
            raise BadInput(f"{who}: name {name!r} resolves to {ip}: {kind}, not a machine's")
    return str(ips[0])
