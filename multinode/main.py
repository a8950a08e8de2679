"""The ``multinode`` console script: Fabric's CLI with our tasks and executor.

Where Fabric would find a fabfile (``fabfile.py`` here or in a parent
directory, or ``-c NAME``), that is loaded: your own tasks, which import
multinode (see `node_task`); elsewhere, multinode's own tasks.
"""

from importlib.metadata import version

from fabric import Config
from fabric.main import Fab
from invoke.exceptions import Exit

from . import ns
from .executor import ClusterExecutor


class Program(Fab):
    def parse_collection(self):
        """Your fabfile when there is one, else multinode's tasks."""
        try:
            self.load_collection()
        except Exit:
            if self.args.collection.value:  # named with -c: its absence is an error
                raise
            self.collection = ns
        self.list_root, self.list_depth, self.list_format = None, None, "flat"
        self.scoped_collection = self.collection


program = Program(
    name="multinode",
    binary="multinode",
    version=version("multinode"),
    executor_class=ClusterExecutor,
    config_class=Config,
)
