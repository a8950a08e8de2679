"""The code blocks of README.md and docs/*.md, as docs/README.md's convention marks them.

Every fenced block's info string is a language, then either ``illustrative``
(shown, never run: recorded output, a command whose effect no test can
check) or ``run=NAME`` (a test runs it: it fetches the block with
``block(PAGE, NAME)``). tests/test_docs.py checks that every block is one or
the other, and that every ``run=NAME`` is fetched by a test.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE_RE = re.compile(r"^(```+|~~~+)(.*)$")


def pages():
    """README.md and every page under docs/, as paths relative to the project."""
    return ["README.md"] + sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))


def blocks(page):
    """[(line number, info string, text)] of every fenced block of ``page``."""
    found, lines = [], (ROOT / page).read_text().splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i].rstrip("\n"))
        if not m:
            i += 1
            continue
        fence, info, start = m.group(1), m.group(2).strip(), i
        body = []
        i += 1
        while i < len(lines) and not lines[i].rstrip("\n").startswith(fence):
            body.append(lines[i])
            i += 1
        found.append((start + 1, info, "".join(body)))
        i += 1
    return found


def block(page, name):
    """The text of the block of ``page`` marked ``run=NAME``."""
    found = [text for _, info, text in blocks(page) if f"run={name}" in info.split()]
    assert len(found) == 1, f"{page}: {len(found)} blocks marked run={name}"
    return found[0]


def commands(text):
    """The command lines of a shell block: comments and blank lines left out."""
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
