"""multinode: turn freshly rented machines into a ready training cluster.

``fab -H PUBLIC:PRIVATE,... hostkeys detect-user`` from this directory, or
the ``multinode`` console script anywhere.
"""

from invoke import Collection

from . import bandwidth, bootstrap, execute, headssh, hostkeys, notify, sandbox, setup, smoke, sync, teardown, tmux, users, verify
from .config import DEFAULTS
from .executor import ClusterExecutor
from .inventory import BadInput, Node, parse_hosts
from .connections import NodeError
from .session import Outcome, Session, session_of
from .usertasks import collection, node_task

__all__ = ["ClusterExecutor", "BadInput", "Node", "NodeError", "Outcome", "Session", "collection", "node_task",
           "parse_hosts", "session_of", "ns"]

ns = Collection()
ns.add_task(hostkeys.hostkeys)
ns.add_task(users.detect_user)
ns.add_task(bootstrap.bootstrap)
ns.add_task(headssh.head_ssh)
ns.add_task(tmux.tmux)
ns.add_task(verify.verify)
ns.add_task(notify.notify)
ns.add_task(bandwidth.bandwidth)
ns.add_task(smoke.smoke)
ns.add_task(execute.exec_)
ns.add_task(sync.sync)
ns.add_task(teardown.teardown)
ns.add_task(setup.setup)
ns.add_collection(sandbox.ns)
ns.configure({"multinode": DEFAULTS})
