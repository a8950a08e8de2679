"""The parts of docs/ generated from the code, so that the pages and the code cannot drift apart.

    uv run python -m multinode.reference            # rewrite every generated part in place
    uv run python -m multinode.reference --check    # exit 1, naming each part that is stale

A generated part of a page stands between ``<!-- generated: WHAT -->`` and
``<!-- end generated -->``; what is around it is written by hand. WHAT is:

- ``task NAME``: the task's docstring and its options, from the task object
  itself, as ``fab --help NAME`` prints them (Invoke's own help tuples): the
  help a user reads and the docs' entry are one text (docs/tasks.md);
- ``steps``: the node's steps, from templates/steps/manifest.yaml (docs/architecture.md);
- ``protocol``: the tags of the line protocol, from multinode/protocol.py (docs/architecture.md).

docs/configuration.md is generated whole, from multinode/config.py (`config.config_page`).
tests/test_docs.py fails while any of them differs from what this module makes.
"""

import inspect
import re
import sys
from pathlib import Path

from invoke.parser import ParserContext

from . import manifest, protocol
from .config import config_page

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PART_RE = re.compile(r"(<!-- generated: (.+?) -->\n)(.*?)(<!-- end generated -->)", re.S)


def all_tasks():
    """{name as typed after fab: task} of every task multinode has, in its collection's order."""
    from . import ns

    found = {}

    def walk(collection, prefix):
        for name, each in collection.tasks.items():
            found[prefix + name] = each
        for name, sub in collection.collections.items():
            walk(sub, f"{prefix}{name}.")

    walk(ns, "")
    return found


def cell(text):
    """``text`` as one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|").replace("*", "\\*")


def options(each):
    """[(flags, help)] of a task as ``--help`` shows them: ``-t STRING, --tail=STRING``."""
    kept = dict(each.help)  # Invoke's get_arguments pops each help text it uses: ask again, get none
    try:
        return ParserContext(args=each.get_arguments()).help_tuples()
    finally:
        each.help = kept


def task_part(name):
    """A task's generated part: its docstring as ``--help`` shows it, then its options."""
    each = all_tasks()[name]
    doc = inspect.cleandoc(each.__doc__ or "")
    lines = [f"> {line}".rstrip() for line in doc.splitlines()] + [""]
    found = options(each)
    if not found:
        return "\n".join(lines + ["No options.", ""])
    lines += ["| option | meaning |", "|---|---|"]
    lines += [f"| `{flags}` | {cell(help_text)} |" for flags, help_text in found]
    return "\n".join(lines + [""])


def steps_part():
    """The node's steps as a table: what each ensures and what it needs (the graph's edges)."""
    lines = ["| step | ensures | needs | root | runs on |", "|---|---|---|---|---|"]
    for step in manifest.steps():
        needs = ", ".join(step.needs) or "–"
        runs = "verify only (a check)" if not step.apply else "two nodes or more" if step.nodes == "multi" else "every node"
        lines.append(f"| {step.name} | {cell(step.what)} | {needs} | {step.root} | {runs} |")
    waves, placed = [], set()
    pending = [s for s in manifest.steps() if s.apply]
    while pending:
        ready = [s for s in pending if set(s.needs) <= placed]
        waves.append(ready)
        placed |= {s.name for s in ready}
        pending = [s for s in pending if s not in ready]
    lines += ["", "The graph's levels: a step needs only steps of earlier levels, and starts as soon as those "
              "it needs are done.", ""]
    lines += [f"{i + 1}. {', '.join(s.name for s in wave)}" for i, wave in enumerate(waves)]
    return "\n".join(lines + [""])


def protocol_part():
    """Every tag of the line protocol, its fields and who says it."""
    lines = ["| tag | fields and meaning (who says it) |", "|---|---|"]
    for tag, what in protocol.TAGS.items():
        lines.append(f"| `{tag}` | {cell(what[len(tag):].lstrip())} |")
    return "\n".join(lines + [""])


def part(what):
    """The text of the generated part named ``what``."""
    if what.startswith("task "):
        return task_part(what[len("task "):])
    return {"steps": steps_part, "protocol": protocol_part}[what]()


def regenerated(text):
    """``text`` with each of its generated parts made anew."""
    return PART_RE.sub(lambda m: m.group(1) + part(m.group(2)) + m.group(4), text)


def stale():
    """[(path, what)] of every generated part, or page, that differs from what the code makes."""
    found = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        for m in PART_RE.finditer(text):
            if m.group(3) != part(m.group(2)):
                found.append((path, m.group(2)))
    config = DOCS / "configuration.md"
    if not config.exists() or config.read_text() != config_page():
        found.append((config, "the whole page"))
    return found


def main(argv):
    if argv not in ([], ["--check"]):
        sys.exit("usage: python -m multinode.reference [--check]")
    if argv == ["--check"]:
        found = stale()
        for path, what in found:
            print(f"{path.relative_to(ROOT)}: {what} is stale", file=sys.stderr)
        sys.exit(1 if found else 0)
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        if regenerated(text) != text:
            path.write_text(regenerated(text))
    (DOCS / "configuration.md").write_text(config_page())


if __name__ == "__main__":
    main(sys.argv[1:])
