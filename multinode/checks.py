"""The checklist: each node checks itself in one remote command; then the checks across nodes.

Each node runs every check in one remote command (one round trip), from a
rendered script that follows the config (workspace, repo, secrets, tools).
A check is ok, failed or not applicable (✓ ✗ –); a node passes only when its
checklist ran to its end and every check it holds reported. Across nodes:
``consistent`` (what one job needs alike on every node, against the head)
and ``pairs`` (every node reaches every other over the private network).
verify shows the results; notify and setup use them.
"""

import re
import shutil
import time

from . import manifest, protocol
from .paths import repo_name, worker_name
from .protocol import FAILED, OK, SKIPPED
from .raycluster import RAY_MEMBERS
from .render import command, render
from .report import columns
from .schema import FACTS
from .session import Outcome
from .staging import configured_secrets

# The checks a rendered checklist holds: each `t NAME`, `na NAME`, `res NAME STATUS` in it.
EXPECTED_RE = re.compile(r"(?:^|[\s;])(?:t|na|res) ([A-Za-z][\w:.@+-]*|'[^']*')(?=\s)", re.M)


def expected_checks(script):
    """The names of the checks ``script`` reports, in order."""
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    names = [m.group(1).strip("'") for m in EXPECTED_RE.finditer(code)]
    return list(dict.fromkeys(n for n in names if n not in protocol.STATUSES))


MARK = {OK: "✓", FAILED: "✗", SKIPPED: "–"}
# verify --json keeps the words it has always printed for scripts.
JSON_STATUS = {OK: "ok", FAILED: "fail", SKIPPED: "na"}


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
        alias=node.alias, private_ip=node.private, ihn=node is nodes[0], multi=len(nodes) > 1,
        workers=[worker_name(n) for n in nodes[1:] if n.alias not in failed],
        others=[n.private for n in nodes if n.alias not in failed and n.alias != node.alias], ray_head_ip=nodes[0].private,
        privates=[n.private for n in nodes], ray_members=RAY_MEMBERS, full=full, repo_name=repo_name(opts["repo"]),
        steps=manifest.names(), public_ip=node.target if node.public else "", **available,
        **{k: opts[k] for k in ("workspace", "repo", "dotfiles", "git", "ray", "tools", "docker", "gpu", "network",
                                "rental")},
    )


def run_checks(session, opts, quiet=False, full=False):
    """{alias: {check: (status, reason)}} for the live nodes; failing nodes fail."""
    results, seconds, facts, reached, interfaces = {}, {}, {}, {}, {}
    available = available_secrets(opts)  # read once, not once per node

    def check(node, cxn):
        script = verify_script(node, session.nodes, opts, available, failed=set(session.failed), full=full)
        start = time.monotonic()
        result = cxn.run(command("bash", "-c", script), hide=True, warn=True, in_stream=False,
                         timeout=opts["check_timeout"])
        out = result.stdout
        checks = protocol.checks(out)
        # A node passes only when its checklist ran to its end and every check it holds reported.
        ended = protocol.ended(out, "checklist") and result.exited == 0
        why = "" if ended else f"the checklist stopped early (exit {result.exited})"
        for name in expected_checks(script):
            if name not in checks:
                checks[name] = (FAILED, f"no result: {why or 'it did not report'}")
        if not ended:
            checks["checklist"] = (FAILED, f"{why}: {(result.stderr.strip().splitlines() or [''])[-1]}".rstrip(": "))
        results[node.alias] = checks
        facts[node.alias] = protocol.fields(out, "FACT")
        reached[node.alias] = protocol.fields(out, "PAIR")
        interfaces[node.alias] = next(iter(protocol.said(out, "IFACE")), "")
        seconds[node.alias] = round(time.monotonic() - start, 3)  # the round trip, checklist included
        return Outcome("ok")

    session.each("verify", check, quiet=True)
    consistency(session.scoped, results, facts, opts["consistency"]["ignore"])
    session.pairs = pair_checks(session.scoped, results, reached)
    for node in session.scoped:
        if node.alias not in results:
            continue
        checks = results[node.alias]
        failed = [name for name, (status, _) in checks.items() if status == FAILED]
        if failed:
            session.fail(node, "verify", f"{len(failed)} check(s) failed: {', '.join(failed)}")
        elif not quiet:
            counts = {s: sum(1 for st, _ in checks.values() if st == s) for s in (OK, SKIPPED)}
            session.report.line("verify", node, "ok", f"{counts[OK]} checks ok, {counts[SKIPPED]} not applicable")
    session.checks = results
    session.check_seconds = seconds
    session.facts = facts
    session.interfaces = interfaces
    return results


def consistency(nodes, results, facts, ignore):
    """The ``consistent`` check: what a distributed job needs alike on every node, against the head's."""
    head = next((n.alias for n in nodes if n.alias in facts), None)
    for node in nodes:
        if node.alias not in results:
            continue
        if len(facts) < 2:
            results[node.alias]["consistent"] = (SKIPPED, "single node" if len(nodes) == 1 else "one node checked")
            continue
        differ = [f"{name} {facts[node.alias].get(name, '?')} (head: {facts[head].get(name, '?')})"
                  for name in FACTS if name not in ignore and facts[node.alias].get(name) != facts[head].get(name)]
        results[node.alias]["consistent"] = (FAILED, "differs from the head: " + "; ".join(differ)) if differ \
            else (OK, "")


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
        results[node.alias]["pairs"] = (FAILED, "; ".join(f"-> {t}: {w}" for t, _, w in failed)) if failed \
            else (OK, f"{len(reached.get(node.alias, {}))} peer(s)")
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
            cells = [MARK[results[a].get(name, (SKIPPED, ""))[0]] for a in aliases]
            lines.append((f"{name:<{name_w}}  " + "  ".join(f"{c:^{col_w}}" for c in cells)).rstrip())
    else:
        lines.append(f"{'node':<{col_w}}  ✓     ✗     –     failed")
        for a in aliases:
            st = [s for s, _ in results[a].values()]
            failed = [n for n, (s, _) in results[a].items() if s == FAILED]
            lines.append(f"{a:<{col_w}}  {st.count('ok'):<4}  {st.count('fail'):<4}  {st.count('na'):<4}  "
                         + ", ".join(failed))
    reasons = [f"  ✗ {a} {name}: {reason}" for a in aliases for name, (s, reason) in results[a].items()
               if s == FAILED]
    return "\n".join(lines + (["", "failures:"] + reasons if reasons else []))
