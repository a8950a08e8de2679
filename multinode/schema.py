"""What a ``multinode`` config value may be: the checks `config.KEYS` declares each key with.

Checked before anything connects or is written: each problem is one line
naming the key and what is wanted (a typo also names the nearest valid key),
and the run exits 2. Written here rather than with a validation library:
the checks are small, and their errors must read as this project's others
do (one line, the value quoted) where jsonschema's name JSON paths and span
lines.
"""

import difflib
import posixpath
import re

from .inventory import USER_RE, BadInput

# Whole values only (fullmatch): "gpu\n" is not a name.
ALIAS_RE = re.compile(r"[a-z_](?:[a-z0-9_-]{0,30}[a-z_-])?")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TOOL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
REPO_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
KEX_RE = re.compile(r"([a-z0-9][a-z0-9@.+-]*(,[a-z0-9][a-z0-9@.+-]*)*)?")
# A git branch: no option look-alike, no ref syntax git refuses (git check-ref-format).
BRANCH_RE = re.compile(r"(?!-)(?!.*(\.\.|@\{|//|/\.|\.lock$))[A-Za-z0-9_./+-]+(?<![./])")
# Directories a workspace must never be (bootstrap would own files in them).
SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/media", "/mnt", "/opt", "/proc",
               "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var", "/var/tmp"}
# Directories whose entries belong to someone (a user's home, the system's files): a
# workspace directly inside one would have teardown --workspace delete them.
SHARED_DIRS = {"/home", "/root", "/usr", "/etc", "/var", "/tmp", "/bin", "/sbin", "/lib", "/lib64", "/boot", "/dev",
               "/proc", "/sys", "/run", "/usr/local", "/var/tmp"}
# What verify's `consistent` compares across nodes (consistency.ignore names some).
FACTS = ("gpu", "driver", "cuda", "python", "torch", "packages")


class Problem(Exception):
    """What is wrong with one value (the key is added by `check`)."""


def kind(what):
    """Give a check the words docs/configuration.md's type column shows for it (its ``kind``)."""
    def mark(check):
        check.kind = what
        return check
    return mark


def kind_of(check):
    """What a check's values are, in words (a check made here always says)."""
    return check.kind


@kind("string, several lines allowed")
def text(value):
    if not isinstance(value, str):
        raise Problem("expected text")
    return value


@kind("string")
def line(value):
    if "\n" in text(value) or "\r" in value:
        raise Problem("expected one line of text")
    return value


@kind("string, not starting with `-`")
def not_option(value):
    """One line that no command can read as an option."""
    if line(value).startswith("-"):
        raise Problem("must not start with '-'")
    return value


@kind("boolean")
def boolean(value):
    if not isinstance(value, bool):
        raise Problem("expected true or false (not a string)")
    return value


def integer(low, high):
    @kind(f"integer, {low} to {high}")
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Problem(f"expected a whole number from {low} to {high}")
        return value
    return check


def number(low, high):
    @kind(f"number, {low} to {high}")
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise Problem(f"expected a number from {low} to {high}")
        return value
    return check


def pattern(regex, what, empty=False, noun=None):
    """A whole value ``regex`` matches (``empty``: or ""); ``what`` the error says is wanted,
    ``noun`` what the type column calls it (default: ``what`` without its article)."""
    noun = noun or re.sub(r"^an? ", "", what)

    @kind(noun + (", or empty" if empty and "empty" not in noun else ""))
    def check(value):
        if not (empty and value == "") and not (isinstance(value, str) and regex.fullmatch(value)):
            raise Problem(f"expected {what}")
        return value
    return check


def list_of(item, nonempty=False):
    @kind(f"list{', at least one entry' if nonempty else ''}; each {item.kind}")
    def check(value):
        if not isinstance(value, list):
            raise Problem("expected a list")
        if nonempty and not value:
            raise Problem("expected at least one entry")
        for v in value:
            try:
                item(v)
            except Problem as exc:
                raise Problem(f"{v!r}: {exc}") from None
        return value
    return check


def dict_of(key, item):
    @kind(f"mapping of {key.kind} to {item.kind}")
    def check(value):
        if not isinstance(value, dict):
            raise Problem("expected a mapping")
        for k, v in value.items():
            try:
                key(k)
                item(v)
            except Problem as exc:
                raise Problem(f"{k!r}: {exc}") from None
        return value
    return check


def record(fields):
    """A mapping with exactly ``fields`` ({name: validator})."""
    @kind("{" + ", ".join(fields) + "}")
    def check(value):
        if not isinstance(value, dict) or set(value) != set(fields):
            raise Problem(f"expected exactly {', '.join(fields)}")
        for name, field in fields.items():
            try:
                field(value[name])
            except Problem as exc:
                raise Problem(f"{name}: {exc}") from None
        return value
    return check


def normalized(path):
    """An absolute path as the kernel resolves its spelling: extra slashes, ``.`` and ``..`` gone
    (``posixpath.normpath`` alone keeps a leading ``//``)."""
    return posixpath.normpath("/" + path.lstrip("/"))


@kind("absolute path, a directory of its own")
def workspace(value):
    """A directory of its own: never a system directory, nor one just inside a directory that
    holds other people's files (``teardown --workspace`` deletes it), in any spelling."""
    if not line(value).startswith("/"):
        raise Problem("expected an absolute path")
    path = normalized(value)
    if path in SYSTEM_DIRS:
        raise Problem("a system directory; use a directory of its own such as /workspace")
    if posixpath.dirname(path) in SHARED_DIRS:
        raise Problem(f"directly inside {posixpath.dirname(path)}, which holds other files than yours; "
                      "use a directory of its own such as /workspace")
    return value


@kind("absolute path")
def absolute(value):
    if not line(value).startswith("/"):
        raise Problem("expected an absolute path")
    return value


@kind("a step's name")
def step_name(value):
    from . import manifest  # the steps the manifest declares, read only when step_timeouts is set

    names = [s.name for s in manifest.steps() if s.apply]
    if value not in names:
        raise Problem(f"not a step; steps are {', '.join(names)}")
    return value


PORT = integer(1, 65535)
SECONDS = integer(1, 7 * 24 * 3600)
URL = not_option
USER = pattern(USER_RE, "login user names (lowercase letters, digits, _ and -)",
               noun="login user name (lowercase letters, digits, _ and -)")
ALIAS = pattern(ALIAS_RE, "lowercase letters, digits, - and _, not ending in a digit",
                noun="name: lowercase letters, digits, - and _, not ending in a digit")
BRANCH = pattern(BRANCH_RE, "a git branch name")
REPO_NAME = pattern(REPO_NAME_RE, "a directory name (letters, digits, . _ -)", empty=True)
ENV_NAME = pattern(ENV_NAME_RE, "an environment variable name (letters, digits, _)")
ENV_NAME_OR_EMPTY = pattern(ENV_NAME_RE, "an environment variable name, or empty", empty=True)
KEX = pattern(KEX_RE, "key exchange names separated by commas, or empty", empty=True)
FACT = pattern(re.compile("|".join(FACTS)), f"one of {', '.join(FACTS)}")
TOOL = record({"name": pattern(TOOL_NAME_RE, "a tool name (letters, digits, . _ + -)"), "check": line, "install": text})


def check(value, schema, path="multinode"):
    """``value`` checked against ``schema`` (nested ``{key: check}``, as `config.SCHEMA`); the first
    problem is a `BadInput` naming its key."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise BadInput(f"bad {path} {value!r}: expected a mapping")
        for key in value:
            if key not in schema:
                near = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
                hint = f" (did you mean {path}.{near[0]}?)" if near else f" (known: {', '.join(schema)})"
                raise BadInput(f"unknown key {path}.{key}{hint}")
        return {key: check(value[key], sub, f"{path}.{key}") for key, sub in schema.items() if key in value}
    try:
        return schema(value)
    except Problem as exc:
        raise BadInput(f"bad {path} {value!r}: {exc}") from None
    except BadInput as exc:
        raise BadInput(f"bad {path}: {exc}") from None
