"""The ``multinode`` console script: Fabric's CLI with our tasks and executor."""

from importlib.metadata import version

from fabric import Config
from fabric.main import Fab

from . import ns
from .executor import ClusterExecutor

program = Fab(
    name="multinode",
    binary="multinode",
    version=version("multinode"),
    namespace=ns,
    executor_class=ClusterExecutor,
    config_class=Config,
)
