"""This project's fabfile: multinode's tasks, for `fab` run in this directory.

The package is `multinode` (so that your own fabfile.py can `import multinode`);
this file only hands its collection to Fabric.
"""

from multinode import ns  # noqa: F401
