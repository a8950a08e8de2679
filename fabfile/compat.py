"""Make patchwork 1.0.1 importable on Invoke 2.

patchwork 1.0.1, the newest release, does ``from invoke.vendor import six``.
Invoke 2 dropped its vendored ``six``; the real ``six`` package is the same
module, so register it under the old name before patchwork is imported.
Import patchwork only after this module (``fabfile/__init__.py`` does so first).
"""

import sys

import invoke.vendor
import six

sys.modules.setdefault("invoke.vendor.six", six)
invoke.vendor.six = six
