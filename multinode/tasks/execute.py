"""exec: run one command on every node at once, its output grouped.

Each node runs COMMAND as a plain ``ssh node COMMAND`` would (its login
shell, stdin closed), over the invocation's one connection to it. Output that
several nodes print alike is shown once under their aliases, as ``dshbak -c``
does; a node whose command exits non-zero, or outlasts ``--timeout``, fails,
named with its exit code.
"""

from invoke import task

from ..inventory import BadInput
from ..session import Outcome, checks_arguments, named_nodes, number_arg, session_of


def chosen_nodes(session, nodes=None):
    """The nodes named in ``nodes`` (aliases or addresses, comma-separated), or all of them."""
    return named_nodes(session, nodes, "nodes") if nodes else list(session.nodes)


def timeout_arg(session, timeout=None):
    return number_arg("timeout", timeout, session.options["check_timeout"], int, 1, 86400, "seconds")


def exec_arguments(session, command=None, nodes=None, timeout=None, **_):
    if not command or not str(command).strip():
        raise BadInput("exec needs a command: fab exec 'nvidia-smi -L'")
    chosen_nodes(session, nodes)
    timeout_arg(session, timeout)


def grouped(outputs, order):
    """dshbak -c: ``{alias: (exit, stdout, stderr)}`` as blocks, one per distinct output, in node order."""
    groups = {}
    for alias in order:
        if alias in outputs:
            groups.setdefault(outputs[alias], []).append(alias)
    lines = []
    for (code, out, err), aliases in groups.items():
        title = ", ".join(aliases) + (f" (exit {code})" if code else "")
        lines += [f"---------------- {title} ----------------"]
        lines += [text.rstrip("\n") for text in (out, err) if text.strip()] or ["(no output)"]
    return "\n".join(lines)


@checks_arguments(exec_arguments)
@task(name="exec", help={"command": "the shell command each node runs",
                         "nodes": "only these nodes, by alias or address: rental0,rental2 (default: all)",
                         "timeout": "seconds the command may run on a node (default: multinode.check_timeout, 300)"})
def exec_(c, command, nodes=None, timeout=None):
    """Run a command on every node at once; identical output shown once, failures named with their exit code."""
    session = session_of(c)
    chosen, seconds = chosen_nodes(session, nodes), timeout_arg(session, timeout)
    outputs = {}

    def run(node, cxn):
        result = cxn.run(command, hide=True, warn=True, in_stream=False, timeout=seconds)
        outputs[node.alias] = (result.exited, result.stdout, result.stderr)
        return Outcome("ok")

    session.each("exec", run, quiet=True, only=chosen)
    if outputs:
        session.report.write(grouped(outputs, [n.alias for n in chosen]))
    for node in chosen:
        code = outputs.get(node.alias, (0,))[0]
        if code:
            session.fail(node, "exec", f"exit {code}")
