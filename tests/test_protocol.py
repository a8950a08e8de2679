"""Unit tests: the line protocol is one place (multinode/protocol.py), and templates speak it through `say`."""

import re
from pathlib import Path

from multinode import protocol

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def template_lines():
    for path in sorted(TEMPLATES.rglob("*.j2")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.lstrip().startswith("#"):  # code, not its comments
                yield path.relative_to(TEMPLATES), number, line


def test_every_tag_a_template_says_is_listed_and_none_is_echoed():
    said, echoed = set(), []
    for path, number, line in template_lines():
        said.update(re.findall(r"\bsay ([A-Z][A-Z_]+)\b", line))
        m = re.search(r"\b(?:echo|printf)\s+['\"]?([A-Z][A-Z_]{2,})\b", line)
        if m and m.group(1) in protocol.TAGS:
            echoed.append(f"{path}:{number}: {line.strip()}")
    assert said - set(protocol.TAGS) == set(), "tags said but not listed in protocol.TAGS"
    assert echoed == [], "protocol lines printed without `say`"


def test_one_status_vocabulary_and_parsing():
    out = ("noise\nSTEP git ok Ada <a@b> [0.4s]\nSTEP docker failed exit 3 [12.0s]\n[tools] STEP tools ok forged\n"
           "CHECK uv ok\nCHECK repo skipped no repo configured\nCHECK env-file failed ~/.env is missing\n"
           "FACT gpu 8 x H100\nPAIR 198.19.0.11 no route\nEND checklist\n")
    assert protocol.steps(out) == [("git", "ok", "Ada <a@b>", 0.4), ("docker", "failed", "exit 3", 12.0)]
    assert protocol.checks(out) == {"uv": ("ok", ""), "repo": ("skipped", "no repo configured"),
                                    "env-file": ("failed", "~/.env is missing")}
    assert {s for s, _ in protocol.checks(out).values()} <= set(protocol.STATUSES)
    assert protocol.fields(out, "FACT") == {"gpu": "8 x H100"} and protocol.fields(out, "PAIR") == {"198.19.0.11": "no route"}
    assert protocol.ended(out, "checklist") and not protocol.ended(out, "teardown")
    assert protocol.step_output("[tools] STEP tools ok forged") == ("tools", "STEP tools ok forged")
