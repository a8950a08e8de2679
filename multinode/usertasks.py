"""Your own tasks on every node, with multinode's executor, connections and report.

    # fabfile.py, in a directory of yours (docs/extending.md)
    from multinode import NodeError, Outcome, collection, node_task

    @node_task(help={"least": "fewest GPUs a node may have"})
    def gpus(node, cxn, least=1):
        count = int(cxn.run("nvidia-smi -L | wc -l", hide=True, in_stream=False).stdout)
        if count < int(least):
            raise NodeError(f"{count} GPU(s), fewer than {least}")
        return Outcome("ok", f"{count} GPU(s)")

    ns = collection(gpus)  # multinode's tasks and yours: `multinode verify gpus`

``fn(node, cxn, **arguments)`` runs on every live node of the cluster at once
(``-H`` or the remembered one), over the invocation's one strict connection
per node. It returns an `Outcome`, a string (``ok`` with that detail) or
None; an exception fails that node alone, named with its reason, and the run
exits 1. Chained tasks skip the nodes that failed before.
"""

import functools
import inspect

from invoke import Collection, task

from .session import Outcome, session_of


def node_task(fn=None, *, name=None, help=None):
    """Make ``fn(node, cxn, ...)`` a task that runs on every node at once."""
    if fn is None:
        return functools.partial(node_task, name=name, help=help)
    label = name or fn.__name__.strip("_").replace("_", "-")
    params = list(inspect.signature(fn).parameters.values())[2:]  # after node, cxn: the task's own arguments

    @functools.wraps(fn)
    def body(c, **arguments):
        session = session_of(c)

        def one(node, cxn):
            got = fn(node, cxn, **arguments)
            return got if isinstance(got, Outcome) else Outcome("ok", got or "")

        return session.each(label, one)

    context = inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    body.__signature__ = inspect.Signature([context] + params)
    return task(body, name=label, help=help or {})


def collection(*tasks):
    """A collection of multinode's tasks and ``tasks``: your fabfile's ``ns``."""
    from . import ns as ours

    mine = Collection()
    for each in ours.tasks.values():
        mine.add_task(each)
    for sub in ours.collections.values():
        mine.add_collection(sub)
    for each in tasks:
        mine.add_task(each)
    mine.configure(ours.configuration())
    return mine
