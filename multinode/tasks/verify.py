"""verify: the whole per-node checklist, one table, non-zero exit on any failure.

Each node runs every check in one remote command (one round trip), from a
rendered script that follows the config (workspace, repo, secrets, tools).
A check is ✓, ✗ or – (not applicable); the reason of each ✗ is listed under
the table. ``--json`` prints the results for scripts instead.
"""

import json as jsonlib

from invoke import Collection, task

from ..checks import JSON_STATUS, facts_table, run_checks, table
from ..session import session_of


@task(help={"json": "print the results as JSON (for scripts) instead of the table",
            "full": "have chezmoi compare the dotfiles even where none changed since setup's chezmoi verify"})
def verify(c, json=False, full=False):
    """Check every node against the full checklist; exit 1 on any failure."""
    session = session_of(c)
    opts = session.options
    session.report.quiet = json  # stdout holds only the JSON
    results = run_checks(session, opts, quiet=json, full=full)
    if json:
        print(jsonlib.dumps({
            "ok": not session.failed,
            "nodes": {n.alias: {"public": n.public, "resolved": n.resolved or None, "private": n.private,
                                "user": n.user, "interface": session.interfaces.get(n.alias),
                                "seconds": session.check_seconds.get(n.alias),
                                "connect_seconds": session.connect_seconds.get(n.alias),
                                "facts": session.facts.get(n.alias, {}),
                                "failed": session.failed.get(n.alias, (None, None))[1],
                                "checks": {k: {"status": JSON_STATUS[s], "reason": r}
                                           for k, (s, r) in results.get(n.alias, {}).items()}}
                      for n in session.scoped},
        }, indent=2, ensure_ascii=False))
        return
    if results:
        print()
        print(table(session.scoped, results))
        if session.pairs:
            print("\nprivate network: unreachable pairs")
            print("\n".join(f"  {pair}" for pair in session.pairs))
        consistent = facts_table(session.scoped, session.facts, opts["consistency"]["ignore"])
        if consistent:
            print("\nconsistency (against the head)")
            print(consistent)


ns = Collection("verify")
ns.add_task(verify)
