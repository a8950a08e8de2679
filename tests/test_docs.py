"""README.md and docs/: generated parts current, every task option documented and none extra, every
relative link and anchor resolving, every code block run by a test or marked illustrative.

The conventions these tests hold the pages to are written down in docs/README.md.
"""

import io
import re
import shlex
import shutil
import unicodedata

import pytest

from multinode import reference, schema
from multinode.config import KEYS, SCHEMA, config_page
from multinode.inventory import parse_hosts
from tests.docblocks import ROOT, block, blocks, commands, pages

TASKS_PAGE = ROOT / "docs/tasks.md"
# Flags of other programs that pages mention (ssh, docker, git, uv, ray, ...): never a task's option.
OTHER_FLAGS = {"--shm-size", "--ipc", "--device", "--ff-only", "--system", "--force", "--index-url", "--find-links",
               "--no-index", "--python", "--head", "--include-dashboard", "--num-cpus", "--object-store-memory",
               "--compile-bytecode", "--help", "--core-opts", "--options", "--upload-pack"}
# fab's own flags that take a value, before the first task.
FAB_VALUE_FLAGS = {"-H", "--hosts", "-i", "--identity", "-t", "--connect-timeout", "-c", "--collection", "-f",
                   "--config", "-S", "--ssh-config", "-T", "--command-timeout", "-r", "--search-root"}


def test_the_configuration_page_is_generated_from_config_keys():
    page = (ROOT / "docs/configuration.md").read_text()
    assert page == config_page(), (
        "docs/configuration.md differs from multinode/config.py's KEYS: run "
        "`uv run python -m multinode.config --markdown > docs/configuration.md`")
    for key in KEYS:
        assert f"| `{key.name}` | {schema.kind_of(key.check)} |" in page


def test_every_generated_part_is_current():
    stale = reference.stale()
    assert not stale, ("stale generated parts (run `uv run python -m multinode.reference`): "
                       + ", ".join(f"{path.name}: {what}" for path, what in stale))


def test_every_task_has_its_section_and_generated_options_in_tasks_md():
    text = TASKS_PAGE.read_text()
    headings = set(re.findall(r"^#{2,3} (\S+)$", text, re.M))
    parts = re.findall(r"<!-- generated: task (\S+) -->", text)
    tasks = reference.all_tasks()
    assert sorted(set(tasks) - headings) == [], "tasks without a section (## NAME) in docs/tasks.md"
    assert sorted(set(tasks) - set(parts)) == [], "tasks without a generated part in docs/tasks.md"
    assert sorted(set(parts) - set(tasks)) == [] and len(parts) == len(set(parts)), "a part for no task, or twice"
    for name in tasks:  # each part sits in its own task's section
        section = text.split(f"\n## {name}\n" if f"\n## {name}\n" in text else f"\n### {name}\n", 1)[1]
        section = re.split(r"^#{2,3} ", section, maxsplit=1, flags=re.M)[0]
        assert f"<!-- generated: task {name} -->" in section, name


def test_generated_options_are_what_help_prints():
    """The generated table holds exactly the task's options, with the help `fab --help` prints."""
    for name, each in reference.all_tasks().items():
        part = reference.task_part(name)
        flags = [flags for flags, _ in reference.options(each)]
        assert re.findall(r"^\| `([^`]+)` \|", part, re.M) == flags, name
        kept = dict(each.help)  # get_arguments pops the help texts it uses
        try:
            names = [argument.name for argument in each.get_arguments()]
        finally:
            each.help = kept
        for argument in names:
            assert any(f"--{argument.replace('_', '-')}" in f for f in flags), (name, argument)


def options_of(each):
    """A task's long option names: ``{"--tail", "--dry-run"}``."""
    return {flag.split("=")[0] for flags, _ in reference.options(each) for flag in flags.split(", ")
            if flag.startswith("--")}


def code_spans(text):
    """Every inline code span and every line of every fenced block of ``text``."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    rest = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    spans = re.findall(r"`((?:[^`\n]|\n(?!\s*\n))+)`", rest)  # a span may wrap, within its paragraph
    return [line for body in fenced for line in body.splitlines()] + [" ".join(span.split()) for span in spans]


def fab_commands(span):
    """[(task, option)] of each `fab ...`/`multinode ...` command in ``span``, for the tasks multinode has."""
    try:
        words = shlex.split(span.split("  #")[0], comments=False)
    except ValueError:
        words = span.split()
    tasks, found = reference.all_tasks(), []
    for start, word in enumerate(words):
        if word not in ("fab", "multinode") or (start and words[start - 1] not in ("run", "$", "&&", ";")):
            continue
        current, i = None, start + 1
        while i < len(words):
            word = words[i]
            if current is None and word in FAB_VALUE_FLAGS:
                i += 2
                continue
            if word in tasks:
                current = word
            elif word.startswith("--") and current is not None:
                found.append((current, word.split("=")[0]))
            i += 1
    return found


def test_every_documented_option_of_a_task_exists():
    """Every `fab TASK --option` in README and docs/, and every --option in a task's section of
    docs/tasks.md, is an option that task has (or one of another task named in the same command)."""
    tasks = reference.all_tasks()
    bad = []
    for page in pages():
        for span in code_spans((ROOT / page).read_text()):
            bad += [f"{page}: `{span}`: {task} has no {option}" for task, option in fab_commands(span)
                    if option not in options_of(tasks[task])]
    text = TASKS_PAGE.read_text()
    for section in re.split(r"^#{2,3} ", text, flags=re.M)[1:]:
        name = section.split("\n", 1)[0].strip()
        if name not in tasks:
            continue
        prose = re.sub(r"<!-- generated:.*?<!-- end generated -->", "", section, flags=re.S)
        named = {option for span in code_spans(prose) for _, option in fab_commands(span)}
        for option in set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", prose)):
            if option not in options_of(tasks[name]) | named | OTHER_FLAGS:
                bad.append(f"docs/tasks.md, {name}: {option} is not an option of {name}")
    assert not bad, "\n".join(bad)


def slug(heading):
    """The anchor GitHub gives a heading."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip()).lower()
    text = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def anchors(page):
    """Every anchor of ``page``: its headings' slugs, a repeated one numbered as GitHub does."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    seen, found = {}, set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def test_slugs_are_githubs():
    assert slug("Nodes: `-H`, names, hops and what is remembered") == "nodes--h-names-hops-and-what-is-remembered"
    assert slug("/dev/shm too small") == "devshm-too-small" and slug("sandbox.up") == "sandboxup"
    assert slug("A job's environment") == "a-jobs-environment"


def test_every_relative_link_and_anchor_resolves():
    bad = []
    for page in pages():
        path = ROOT / page
        text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https://, mailto: ... not ours to check offline
            file, _, anchor = target.partition("#")
            where = (path.parent / file).resolve() if file else path
            if not where.exists():
                bad.append(f"{page}: ({target}): no {file}")
            elif anchor and (where.suffix != ".md" or anchor not in anchors(where)):
                bad.append(f"{page}: ({target}): no heading #{anchor} in {where.relative_to(ROOT)}")
    assert not bad, "\n".join(bad)


def test_every_code_block_is_run_by_a_test_or_marked_illustrative():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    bad = []
    for page in pages():
        for line, info, _ in blocks(page):
            words = info.split()
            marks = [w for w in words[1:] if w == "illustrative" or w.startswith("run=")]
            if len(words) < 2 or len(marks) != 1:
                bad.append(f"{page}:{line}: ```{info}: a language, then illustrative or run=NAME")
            elif marks[0].startswith("run="):
                name = marks[0][len("run="):]
                if not re.search(rf"block\(\s*\"{re.escape(page)}\",\s*\"{re.escape(name)}\"\)", tests):
                    bad.append(f"{page}:{line}: run={name}, but no test calls block(\"{page}\", \"{name}\")")
    assert not bad, "\n".join(bad)


def test_the_readme_is_short_and_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    first = re.search(r"^## (.+)$", text, re.M).group(1)
    assert first == "Try it: two commands"
    assert [c.split()[0] for c in commands(block("README.md", "two-commands"))] == ["./demo", "./test"]
    assert (ROOT / ".ci/run").read_text().rstrip().endswith("exec ./test"), "CI runs ./test, the README's command"


@pytest.mark.parametrize("page", pages())
def test_no_table_cell_runs_past_a_sentence_or_two(page):
    """README's cells stay short; the pages' too, the generated ones included."""
    longest = 160 if page == "README.md" else 400
    for line in (ROOT / page).read_text().splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            assert all(len(cell) <= longest for cell in cells), (page, line)


def test_the_configuration_example_is_valid_config():
    from invoke.util import yaml

    text = block("docs/configuration.md", "config-example")
    assert text.startswith("# ~/.fabric.yaml\n")
    schema.check(yaml.safe_load(text)["multinode"], SCHEMA)  # BadInput if any key or value is refused


def test_the_pasted_table_of_nodes_md_is_two_nodes():
    text = block("docs/nodes.md", "pasted-table")
    command, heredoc = text.split("\n", 1)
    assert shlex.split(command)[:5] == ["uv", "run", "fab", "-H", "-"]
    table = heredoc.rsplit("EOF", 1)[0]
    nodes = parse_hosts("-", stdin=io.StringIO(table))
    assert [(n.alias, n.address, n.private) for n in nodes] == [
        ("rental0", "[203.0.113.7]:40022", "10.0.0.7"), ("rental1", "[203.0.113.8]:40022", "10.0.0.8")]


def test_the_regenerate_command_of_docs_readme_leaves_current_pages_as_they_are(tmp_path, monkeypatch):
    assert commands(block("docs/README.md", "regenerate")) == ["uv run python -m multinode.reference"]
    copy = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", copy)
    monkeypatch.setattr(reference, "DOCS", copy)
    reference.main([])  # what `python -m multinode.reference` runs
    for page in (ROOT / "docs").glob("*.md"):
        assert (copy / page.name).read_text() == page.read_text(), page.name
