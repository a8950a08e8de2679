"""Run each task once over all nodes, instead of once per host.

Fabric's Executor turns ``fab -H a,b t1 t2`` into four serial calls with a
new connection each, and reads ``-H 1.2.3.4:10.0.0.1`` as host:port. This
executor parses ``-H`` as our inventory (refusing bad input, exit 2, before
anything connects) and gives every task one shared `Session`.
"""

import invoke
from fabric import Executor
from invoke.exceptions import Exit

from .inventory import BadInput
from .session import Session


class SessionCall(invoke.Call):
    """A Call whose context carries the invocation's `Session` as ``c.session``."""

    def __init__(self, *args, session=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = session

    def clone_data(self):
        return dict(super().clone_data(), session=self.session)

    def make_context(self, config):
        context = super().make_context(config)
        context._set(session=self.session)
        return context


def needs_nodes(call):
    """Whether a task call works on the cluster's nodes (``task.needs_nodes(kwargs)``; default: yes)."""
    return getattr(call.task, "needs_nodes", lambda kwargs: True)(call.kwargs)


def run_option(calls, name):
    """The value of an option that holds for the whole run (``--jump``), given on any of its tasks."""
    given = {str(call.kwargs[name]) for call in calls if call.kwargs.get(name) is not None}
    if len(given) > 1:
        raise Exit(f"multinode: two different --{name} in one run: {', '.join(sorted(given))}", code=2)
    return given.pop() if given else None


class ClusterExecutor(Executor):
    session = None

    def expand_calls(self, calls, apply_hosts=True):
        if self.session is None:
            hosts = self.core[0].args.hosts.value if self.core else None
            try:
                self.session = Session(hosts)
            except BadInput as exc:
                raise exc.exit() from None
        self.session.collection = self.collection
        if self.core is not None and self.core.remainder:
            raise Exit("multinode: `fab -- COMMAND` is not supported; use a task", code=2)
        calls = invoke.Executor.expand_calls(self, calls)
        self.session.jump_given = run_option(calls, "jump")
        checked = [(call, getattr(call.task, "check_arguments", None)) for call in calls]
        if any(check for _, check in checked):  # every task's arguments, before the first task runs
            self.session.start(self.config)
            if any(needs_nodes(call) for call in calls):
                self.session.need_nodes()
            try:
                for call, check in checked:
                    if check:
                        check(self.session, **call.kwargs)
            except BadInput as exc:
                raise exc.exit() from None
        return [call.clone(into=SessionCall, with_={"session": self.session}) for call in calls]

    def execute(self, *tasks):
        try:
            results = super().execute(*tasks)
        except BaseException:
            if self.session is not None:
                self.session.abort()
            raise
        self.session.finish()
        return results
