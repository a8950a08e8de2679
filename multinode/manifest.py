"""The node's steps as ``templates/steps/manifest.yaml`` declares them: one place, read by both sides.

The laptop reads it here to render the node script (which steps, in what
order of need, with what timeout and lock) and verify's checklist (the
steps' checks, in the manifest's order); the node script carries it, rendered,
and runs the steps as the graph it describes. Each step's code is its own
file, ``templates/steps/NAME.sh.j2``: its check and its apply.
"""

import functools
from dataclasses import dataclass

from invoke.util import yaml

from .render import program

FIELDS = {"name", "what", "needs", "root", "packages", "nodes", "apply", "timeout"}


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    needs: tuple = ()
    root: str = "no"  # required, optional, no
    packages: bool = False  # its installers take the node's package lock
    nodes: str = "any"  # multi: on a cluster of two nodes or more only
    apply: bool = True  # False: a check of verify's alone
    timeout: int = None  # seconds; None: multinode.step_timeout

    def applies_to(self, count):
        """Whether bootstrap runs this step on a cluster of ``count`` nodes."""
        return self.apply and (self.nodes != "multi" or count > 1)


def _step(entry):
    if not isinstance(entry, dict) or not {"name", "what"} <= set(entry) or set(entry) - FIELDS:
        raise ValueError(f"manifest.yaml: bad step {entry!r}: name and what, and only {', '.join(sorted(FIELDS))}")
    step = Step(**{**entry, "needs": tuple(entry.get("needs") or ())})
    if step.root not in ("required", "optional", "no") or step.nodes not in ("any", "multi"):
        raise ValueError(f"manifest.yaml: step {step.name}: root is required/optional/no, nodes any/multi")
    return step


@functools.cache
def steps():
    """Every step, in the manifest's order (verify's), checked: each need a step listed, no cycle."""
    found = [_step(entry) for entry in yaml.safe_load(program("steps/manifest.yaml"))["steps"]]
    names = [s.name for s in found]
    for step in found:
        unknown = [n for n in step.needs if n not in names]
        if unknown:
            raise ValueError(f"manifest.yaml: step {step.name} needs {', '.join(unknown)}, not a step")
    order(found)  # raises on a cycle
    return tuple(found)


def order(found):
    """``found`` in an order where each step comes after what it needs (a cycle is an error)."""
    done, placed = [], set()
    pending = list(found)
    while pending:
        ready = [s for s in pending if set(s.needs) <= placed]
        if not ready:
            raise ValueError(f"manifest.yaml: a cycle among {', '.join(s.name for s in pending)}")
        for step in ready:
            done.append(step)
            placed.add(step.name)
            pending.remove(step)
    return done


def names():
    return tuple(s.name for s in steps())


def applied(count):
    """The steps bootstrap runs on a cluster of ``count`` nodes, each after what it needs."""
    return [s for s in order(steps()) if s.applies_to(count)]


def timeouts(opts):
    """Seconds each step may run: ``step_timeouts.NAME``, else the manifest's, else ``step_timeout``."""
    return {s.name: opts["step_timeouts"].get(s.name, s.timeout or opts["step_timeout"]) for s in steps()}
