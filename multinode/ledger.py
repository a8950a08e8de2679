"""The ledger: which secret values each machine was sent, kept on the laptop only.

bootstrap writes a machine's entry before the first byte of a secret leaves
for it (a run stopped halfway is covered); teardown searches the machine for
everything its entry holds, besides what the laptop has now: a secret changed
on the laptop since, or the key of an earlier cluster, is still looked for.
An entry goes once teardown proved the machine clean.

One file per machine (public address, port, private address) in
``ledger/`` beside the remembered cluster: a directory only you can enter,
files 0600, written atomically. Never sent to a node, never printed.

`patterns` turns values into what the node's search looks for: each value
whole, and as it may have been written (URL-encoded by git's credential
store, shell-quoted in ``~/.env``); a value of several lines (a secret file)
is found when a file holds every line of it; nothing shorter than
`MIN_LENGTH` is ever a pattern (an empty pattern matches every file, ``{``
most of them).
"""

import json
import re
import shlex
import urllib.parse
from pathlib import Path

from .localfiles import locked, read_text, write_atomic

MIN_LENGTH = 8


def ledger_dir(state):
    return Path(state).with_name("ledger")


def entry_path(state, node):
    """The ledger file of ``node``'s machine."""
    name = re.sub(r"[^A-Za-z0-9.-]", "_", f"{node.public}_{node.port}_{node.private}")
    return ledger_dir(state) / f"{name}.json"


def sent(state, node):
    """The values ``node``'s machine was sent since its last proven teardown."""
    text = read_text(entry_path(state, node))
    try:
        values = json.loads(text)["values"] if text else []
    except (ValueError, KeyError, TypeError):
        values = []  # a damaged entry: the values of the laptop are still searched
    return [v for v in values if isinstance(v, str)]


def record(state, node, values):
    """Add ``values`` to the entry of ``node``'s machine (before they are sent)."""
    path = entry_path(state, node)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    with locked(path):
        merged = list(dict.fromkeys(sent(state, node) + [v for v in values if v]))
        write_atomic(path, json.dumps({"machine": [node.public, node.port, node.private], "values": merged}) + "\n",
                     mode=0o600, backup=False)


def close(state, node):
    """Drop the entry of ``node``'s machine: proven clean."""
    entry_path(state, node).unlink(missing_ok=True)


def forms(value):
    """``value`` as it may stand in a file: itself, URL-encoded, shell-quoted."""
    return list(dict.fromkeys([value, urllib.parse.quote(value, safe=""), shlex.quote(value)]))


def patterns(values):
    """(single-line patterns, groups of lines): what a node's search looks for.

    Each pattern at least `MIN_LENGTH` characters; a value of several lines
    becomes a group, found only in a file that holds all of its long lines."""
    singles, groups = [], []
    for value in dict.fromkeys(v.strip() for v in values if v and v.strip()):
        if "\n" in value:
            lines = list(dict.fromkeys(ln.strip() for ln in value.splitlines() if len(ln.strip()) >= MIN_LENGTH))
            if lines:
                groups.append(lines)
            continue
        singles += [form for form in forms(value) if len(form) >= MIN_LENGTH]
    return list(dict.fromkeys(singles)), groups
