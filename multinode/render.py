"""Templates: Jinja with StrictUndefined, every value shell-quoted by ``| q``.

Templates live in the project's ``templates/`` (or, installed, in the
package). A missing variable is an error, never an empty string in a script.
"""

import functools
import shlex
import threading
from pathlib import Path

_HERE = Path(__file__).resolve().parent
TEMPLATE_DIRS = [_HERE.parent / "templates", _HERE / "templates"]


def quote(value):
    """One shell word for ``value`` (booleans as true/false)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return shlex.quote(str(value))


def command(*words):
    """One shell command line from ``words``, each quoted: the one place commands are built."""
    return " ".join(quote(w) for w in words)


def shell_args(*pairs):
    """``--flag value`` pairs (skipping empty values), quoted, as one string."""
    words = []
    for flag, value in pairs:
        if value is True:
            words.append(flag)
        elif value not in (None, "", False):
            words += [flag, quote(value)]
    return " ".join(words)


@functools.cache
def environment():
    """The Jinja environment, made on first use: importing jinja2 costs fab about 20 ms at its start,
    which a task that renders nothing (or ``fab --list``) need not wait for."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader([str(d) for d in TEMPLATE_DIRS if d.is_dir()]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["q"] = quote
    return env


# One render at a time: Jinja's template cache has no lock, so threads rendering at once (a
# checklist per node) each compiled every template again (234 compiles in one 16-node verify,
# 0.9 s of fab's CPU); one after another, the first compiles and the rest find it cached.
_RENDERING = threading.Lock()


def render(name, **context):
    with _RENDERING:
        return environment().get_template(name).render(**context)


def program(name):
    """The text of ``name`` among the templates, as it is (a program a node runs, not a template)."""
    for directory in TEMPLATE_DIRS:
        if (directory / name).is_file():
            return (directory / name).read_text()
    raise FileNotFoundError(f"no template {name} in {', '.join(map(str, TEMPLATE_DIRS))}")
