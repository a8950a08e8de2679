"""multinode: turn freshly rented machines into a ready training cluster.

``fab -H PUBLIC:PRIVATE,... hostkeys detect-user`` from this directory, or
the ``multinode`` console script anywhere.
"""

from invoke import Collection

from . import bandwidth, bootstrap, headssh, hostkeys, notify, sandbox, setup, smoke, tmux, users, verify
from .config import DEFAULTS
from .executor import ClusterExecutor
from .inventory import BadInput, Node, parse_hosts
from .session import Outcome, Session, session_of

__all__ = ["ClusterExecutor", "BadInput", "Node", "Outcome", "Session", "parse_hosts", "session_of", "ns"]

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
ns.add_task(setup.setup)
ns.add_collection(sandbox.ns)
ns.configure({"multinode": DEFAULTS})
