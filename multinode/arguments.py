"""Task arguments: checked before the first task of a run starts (a bad one: exit 2, nothing touched).

A task declares its check with `checks_arguments`; `number_arg` and
`named_nodes` are the checks several tasks share.
"""

from .inventory import BadInput


def checks_arguments(check):
    """Give a task ``check(session, **arguments)``, which the executor runs on every
    task's arguments before the first task starts: a bad one (`BadInput`) stops the
    run with exit 2 before anything connects or is written."""
    def attach(task):
        task.check_arguments = check
        return task
    return attach


def number_arg(flag, given, default, kind, low, high, unit=""):
    """A task's numeric option: ``given`` (``default`` when None) as ``kind``, from ``low`` to ``high``."""
    value = default if given is None else given
    try:
        value = kind(value)
        if not low <= value <= high:
            raise ValueError
    except (TypeError, ValueError):
        raise BadInput(f"bad --{flag} {given!r}: {low:g} to {high:g}" + (f" ({unit})" if unit else "")) from None
    return value


def named_nodes(session, value, flag, also=""):
    """The nodes a comma-separated option names (aliases or addresses), in that order; a bad name is `BadInput`."""
    found = []
    for name in (v.strip() for v in str(value).split(",") if v.strip()):
        node = session.find(name)
        if node is None:
            raise BadInput(f"bad --{flag} {name!r}: not a node of this cluster "
                           f"({', '.join(n.alias for n in session.nodes)}, their addresses{also})")
        found.append(node)
    return found
