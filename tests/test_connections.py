"""Unit tests: node connections built in many threads at once (no network: never opened)."""

import sys
import threading

from fabric import Config

from multinode.config import settings
from multinode.connections import WaitingRemote, connection, isolated
from multinode.inventory import Node


def test_connections_built_at_once_never_see_a_half_built_config():
    # As Session.start leaves it: one config for the whole run, read by every thread.
    config = Config()
    config.runners.remote = WaitingRemote
    config = isolated(config)
    modifications = repr(config._modifications)
    opts = settings(config)
    errors = []

    def build(nid):
        node = Node(nid, f"rental{nid}", f"198.18.0.{10 + nid}", f"198.19.0.{10 + nid}")
        try:
            for _ in range(40):
                cxn = connection(node, "ubuntu", opts, config, sock=None)
                assert cxn.port == 22 and cxn.config.runners.remote is WaitingRemote
                assert not cxn.forward_agent and cxn.connect_kwargs["look_for_keys"] is False
        except Exception as exc:  # noqa: BLE001 - any error is the finding
            errors.append(repr(exc)[:120])

    def read():
        try:
            for _ in range(800):
                config.timeouts.connect, config.run.warn
        except Exception as exc:  # noqa: BLE001
            errors.append(repr(exc)[:120])

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as Python can: the race shows within a second
    try:
        threads = [threading.Thread(target=build, args=(n,)) for n in range(8)]
        threads += [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert repr(config._modifications) == modifications  # each connection wrote into its own copy
