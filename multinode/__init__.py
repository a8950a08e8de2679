"""multinode: turn freshly rented machines into a ready training cluster.

``fab -H PUBLIC:PRIVATE,... hostkeys detect-user`` from this directory, or
the ``multinode`` console script anywhere.
"""

from .connections import NodeError
from .executor import ClusterExecutor
from .inventory import BadInput, Node, parse_hosts
from .session import Outcome, Session, session_of
from .tasks import ns
from .usertasks import collection, node_task

__all__ = ["ClusterExecutor", "BadInput", "Node", "NodeError", "Outcome", "Session", "collection", "node_task",
           "parse_hosts", "session_of", "ns"]
