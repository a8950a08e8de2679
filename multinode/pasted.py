"""Node specs as the user pastes them: ``-H a,b``, a file (``@FILE``) or standard input (``-``).

A file or pasted table holds one node per line: the ``-H`` form, the two
columns a provider's page shows (``PUBLIC[:PORT]  PRIVATE``, PUBLIC an
address or a DNS name), or a provider's ssh command line with the private
address in a column of its own (``ssh -p 41234 root@ssh5.vast.ai  10.0.0.7``). Blank lines, ``#`` comments
and a first line that is a header (no field holding a ``.`` or ``:``, e.g.
``Public IP   Private IP``) are ignored; any later line that is not a node is
an error naming it (dropping it would leave the cluster a node short).
"""

import re
import sys
from pathlib import Path

from .addresses import BadInput, bracketed

# ssh options that change nothing multinode does (it never forwards, never asks
# for a terminal); -L/-R/-D forward ports for the provider's own session.
SSH_FLAGS_RE = re.compile(r"-[46ACNTtXxYqv]+")
SSH_FORWARDS = ("-L", "-R", "-D")


def _is_header(line):
    return not any("." in field or ":" in field for field in line.split())


def _uri(dest, bad):
    """``ssh://[USER@]HOST[:PORT]`` as (user, host, port)."""
    user, _, rest = dest[len("ssh://"):].rstrip("/").rpartition("@")
    m = re.fullmatch(r"\[([^\]]+)\](?::(\w+))?|([^:\[\]]+)(?::(\w+))?", rest)
    if not m:
        raise bad("not an ssh:// address")
    return user or None, m.group(1) or m.group(3), m.group(2) or m.group(4)


def ssh_spec(fields, number, line):
    """The node spec of a pasted ``ssh [-p PORT] [-l USER] [USER@]HOST [forwards] PRIVATE`` line."""
    def bad(why):
        return BadInput(f"bad line {number} {line!r}: {why}")

    words, private = fields[1:-1], fields[-1]
    if not re.fullmatch(r"[0-9.]+", private):
        raise bad(f"the last column, {private!r}, must be the node's private address (ssh ... HOST  PRIVATE)")
    port = user = dest = None
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-p", "-l", *SSH_FORWARDS) or re.fullmatch(r"-[pl].+", word):
            value = word[2:] if len(word) > 2 else (words[i + 1] if i + 1 < len(words) else None)
            if value is None:
                raise bad(f"ssh option {word!r} without its value")
            i += 1 if len(word) > 2 else 2
            if word.startswith("-p"):
                port = value
            elif word.startswith("-l"):
                user = value
        elif SSH_FLAGS_RE.fullmatch(word):
            i += 1
        elif word.startswith("-"):
            raise bad(f"ssh option {word!r} is not one multinode reads (-p, -l; a jump host is --jump)")
        elif dest is not None:
            raise bad(f"two destinations, {dest!r} and {word!r}; the private address goes in the last column")
        else:
            dest, i = word, i + 1
    if dest is None:
        raise bad("an ssh command line without a destination (ssh [-p PORT] USER@HOST  PRIVATE)")
    if dest.startswith("ssh://"):
        named, dest, in_uri = _uri(dest, bad)
        port = port or in_uri
    else:
        named, at, dest = dest.rpartition("@")
        named = named if at else None
    if named and user and named != user:
        raise bad(f"two users, {user!r} (-l) and {named!r}")
    user = user or named
    return f"{user + '@' if user else ''}{bracketed(dest)}{':' + port if port else ''}:{private}"


def table_specs(text):
    """Node specs from a pasted table or a list file, one node per line (see the module)."""
    specs, first = [], True
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if _is_header(line):
            if first:
                first = False
                continue
            raise BadInput(f"bad line {number} {line!r}: not a node (PUBLIC[:PORT] PRIVATE); "
                           "only the first line may be a header")
        first = False
        fields = line.split()
        if fields[0].startswith("ssh://"):  # a provider's ssh:// address, the private one beside it
            fields.insert(0, "ssh")
        if fields[0] == "ssh":
            if len(fields) < 3:
                raise BadInput(f"bad line {number} {line!r}: expected the private address after the ssh command "
                               "(ssh -p PORT USER@HOST  PRIVATE)")
            specs.append(ssh_spec(fields, number, line))
        elif len(fields) == 1:
            specs.append(fields[0])
        elif len(fields) == 2:
            user, at, public = fields[0].rpartition("@")
            if public.count(":") > 1 and not public.startswith("["):  # an IPv6 address alone in its column
                public = f"[{public}]"
            specs.append(f"{user}{at}{public}:{fields[1]}")
        else:
            raise BadInput(f"bad line {number} {line!r}: expected PUBLIC[:PORT] PRIVATE")
    return specs


def host_specs(hosts, stdin=None):
    """Node specs from a ``-H`` value: ``a,b,...``, ``@FILE`` or ``-``."""
    if hosts == "-":
        return table_specs((stdin or sys.stdin).read())
    if hosts.startswith("@"):
        path = Path(hosts[1:]).expanduser()
        try:
            return table_specs(path.read_text())
        except OSError as exc:
            raise BadInput(f"cannot read host list {hosts[1:]!r}: {exc.strerror}") from None
    return [s.strip() for s in hosts.split(",")]
