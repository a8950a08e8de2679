"""verify: the whole per-node checklist, one table, non-zero exit on any failure.

Each node runs every check in one remote command (one round trip), from a
rendered script that follows the config (workspace, repo, secrets, tools).
A check is ✓, ✗ or – (not applicable); the reason of each ✗ is listed under
the table. ``--json`` prints the results for scripts instead.
"""

import json as jsonlib
import re
import shutil
import time

from invoke import Collection, task

from .bootstrap import repo_name
from .staging import configured_secrets
from .headssh import worker_name
from .raycluster import RAY_MEMBERS
from .render import command, render
from .report import columns
from .schema import FACTS
from .session import Outcome, session_of

CHECK_RE = re.compile(r"^CHECK (\S+) (ok|fail|na) ?(.*)$")
# The checks a rendered checklist holds: each `t NAME`, `na NAME`, `res NAME ok|fail` in it.
EXPECTED_RE = re.compile(r"(?:^|[\s;])(?:t|na|res) ([A-Za-z][\w:.@+-]*|'[^']*')(?=\s)", re.M)


def expected_checks(script):
    """The names of the checks ``script`` reports, in order."""
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    names = [m.group(1).strip("'") for m in EXPECTED_RE.finditer(code)]
    return list(dict.fromkeys(n for n in names if n not in ("ok", "fail", "na")))
MARK = {"ok": "✓", "fail": "✗", "na": "–"}


def available_secrets(opts):
    """Which secrets the laptop has (names only): only those are expected on the nodes."""
    have = [(kind, name) for kind, name, value in configured_secrets(opts) if value is not None]
    return {"secrets_env": [name for kind, name in have if kind == "env"],
            "wandb": any(kind == "wandb" for kind, _ in have),
            "huggingface": any(kind == "huggingface" for kind, _ in have)}


def verify_script(node, nodes, opts, available, failed=(), full=False):
    """The checklist of ``node``: the same config gives the same checks.

    ``failed``: aliases of nodes that failed earlier in the run (the head
    holds no alias for those). ``full``: chezmoi verifies the dotfiles even
    where setup's verdict still holds (their seal)."""
    return render(
        "verify.sh.j2",
        alias=node.alias, private_ip=node.private, ihn=node.nid == 0, multi=len(nodes) > 1,
        workers=[worker_name(n) for n in nodes[1:] if n.alias not in failed],
        others=[n.private for n in nodes if n.alias not in failed and n.alias != node.alias], ray_head_ip=nodes[0].private,
        privates=[n.private for n in nodes], ray_members=RAY_MEMBERS, full=full, repo_name=repo_name(opts["repo"]), **available,
        **{k: opts[k] for k in ("workspace", "repo", "dotfiles", "git", "ray", "tools", "docker", "gpu", "network")},
    )


def run_checks(session, opts, quiet=False, full=False):
    """{alias: {check: (status, reason)}} for the live nodes; failing nodes fail."""
    results, seconds, facts, reached = {}, {}, {}, {}
    available = available_secrets(opts)  # read once, not once per node

    def check(node, cxn):
        script = verify_script(node, session.nodes, opts, available, failed=set(session.failed), full=full)
        start = time.monotonic()
        result = cxn.run(command("bash", "-c", script), hide=True, warn=True, in_stream=False,
                         timeout=opts["check_timeout"])
        out = result.stdout
        checks = {m.group(1): (m.group(2), m.group(3)) for m in map(CHECK_RE.match, out.splitlines()) if m}
        # A node passes only when its checklist ran to its end and every check it holds reported.
        ended = "CHECKLIST END" in out.splitlines() and result.exited == 0
        why = "" if ended else f"the checklist stopped early (exit {result.exited})"
        for name in expected_checks(script):
            if name not in checks:
                checks[name] = ("fail", f"no result: {why or 'it did not report'}")
        if not ended:
            checks["checklist"] = ("fail", f"{why}: {(result.stderr.strip().splitlines() or [''])[-1]}".rstrip(": "))
        results[node.alias] = checks
        facts[node.alias] = dict(line[5:].split(" ", 1) for line in out.splitlines()
                                 if line.startswith("FACT ") and " " in line[5:])
        reached[node.alias] = dict(line[5:].split(" ", 1) for line in out.splitlines() if line.startswith("PAIR "))
        seconds[node.alias] = round(time.monotonic() - start, 3)  # the round trip, checklist included
        return Outcome("ok")

    session.each("verify", check, quiet=True)
    consistency(session.nodes, results, facts, opts["consistency"]["ignore"])
    session.pairs = pair_checks(session.nodes, results, reached)
    for node in session.nodes:
        if node.alias not in results:
            continue
        checks = results[node.alias]
        failed = [name for name, (status, _) in checks.items() if status == "fail"]
        if failed:
            session.fail(node, "verify", f"{len(failed)} check(s) failed: {', '.join(failed)}")
        elif not quiet:
            counts = {s: sum(1 for st, _ in checks.values() if st == s) for s in ("ok", "na")}
            session.report.line("verify", node, "ok", f"{counts['ok']} checks ok, {counts['na']} not applicable")
    session.checks = results
    session.check_seconds = seconds
    session.facts = facts
    return results


def consistency(nodes, results, facts, ignore):
    """The ``consistent`` check: what a distributed job needs alike on every node, against the head's."""
    head = next((n.alias for n in nodes if n.alias in facts), None)
    for node in nodes:
        if node.alias not in results:
            continue
        if len(facts) < 2:
            results[node.alias]["consistent"] = ("na", "single node" if len(nodes) == 1 else "one node checked")
            continue
        differ = [f"{name} {facts[node.alias].get(name, '?')} (head: {facts[head].get(name, '?')})"
                  for name in FACTS if name not in ignore and facts[node.alias].get(name) != facts[head].get(name)]
        results[node.alias]["consistent"] = ("fail", "differs from the head: " + "; ".join(differ)) if differ \
            else ("ok", "")


def pair_checks(nodes, results, reached):
    """``pairs``: each node reached every other over the private network; the failed pairs, in order."""
    by_private = {n.private: n.alias for n in nodes}
    bad = []
    for node in nodes:
        if node.alias not in results or len(nodes) < 2:
            continue
        failed = [(by_private.get(ip, ip), ip, why) for ip, why in reached.get(node.alias, {}).items() if why != "ok"]
        for target, ip, why in failed:
            bad.append(f"{node.alias} -> {target} ({ip}): {why}")
        results[node.alias]["pairs"] = ("fail", "; ".join(f"-> {t}: {w}" for t, _, w in failed)) if failed \
            else ("ok", f"{len(reached.get(node.alias, {}))} peer(s)")
    return bad


def facts_table(nodes, facts, ignore=()):
    """A row per node of what must match; a value differing from the head's is marked ✗."""
    aliases = [n.alias for n in nodes if n.alias in facts]
    if len(aliases) < 2:
        return ""
    head = facts[aliases[0]]
    cols = [name for name in FACTS if any(name in facts[a] for a in aliases)]
    rows = [["node"] + cols]
    for alias in aliases:
        rows.append([alias] + [("" if facts[alias].get(c) == head.get(c) or c in ignore else "✗ ")
                               + facts[alias].get(c, "?") for c in cols])
    return "\n".join(columns(rows))


def table(nodes, results, width=None):
    """Checks as rows and nodes as columns; past ``width``, a row per node."""
    aliases = [n.alias for n in nodes if n.alias in results]
    names = list(dict.fromkeys(name for a in aliases for name in results[a]))
    name_w = max(len(n) for n in names + ["check"])
    col_w = max(len(a) for a in aliases)
    lines = []
    width = width or shutil.get_terminal_size((100, 24)).columns
    if name_w + (col_w + 2) * len(aliases) <= width:
        lines.append(f"{'check':<{name_w}}  " + "  ".join(f"{a:^{col_w}}" for a in aliases))
        for name in names:
            cells = [MARK[results[a].get(name, ("na", ""))[0]] for a in aliases]
            lines.append((f"{name:<{name_w}}  " + "  ".join(f"{c:^{col_w}}" for c in cells)).rstrip())
    else:
        lines.append(f"{'node':<{col_w}}  ✓     ✗     –     failed")
        for a in aliases:
            st = [s for s, _ in results[a].values()]
            failed = [n for n, (s, _) in results[a].items() if s == "fail"]
            lines.append(f"{a:<{col_w}}  {st.count('ok'):<4}  {st.count('fail'):<4}  {st.count('na'):<4}  "
                         + ", ".join(failed))
    reasons = [f"  ✗ {a} {name}: {reason}" for a in aliases for name, (s, reason) in results[a].items()
               if s == "fail"]
    return "\n".join(lines + (["", "failures:"] + reasons if reasons else []))


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
            "nodes": {n.alias: {"public": n.public, "private": n.private, "user": n.user,
                                "seconds": session.check_seconds.get(n.alias),
                                "facts": session.facts.get(n.alias, {}),
                                "failed": session.failed.get(n.alias, (None, None))[1],
                                "checks": {k: {"status": s, "reason": r} for k, (s, r) in results.get(n.alias, {}).items()}}
                      for n in session.nodes},
        }, indent=2, ensure_ascii=False))
        return
    if results:
        print()
        print(table(session.nodes, results))
        if session.pairs:
            print("\nprivate network: unreachable pairs")
            print("\n".join(f"  {pair}" for pair in session.pairs))
        consistent = facts_table(session.nodes, session.facts, opts["consistency"]["ignore"])
        if consistent:
            print("\nconsistency (against the head)")
            print(consistent)


ns = Collection("verify")
ns.add_task(verify)
