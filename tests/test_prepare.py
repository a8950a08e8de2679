"""bin/prepare on a fresh Debian 12: the sandbox's node image (python3 and
python3-venv, no pip, an externally managed system Python), as an overlay in a
chroot. uv must arrive without pip or anything else landing in the system Python.

Needs root (mounts, chroot) and the package registries (apt, PyPI), as CI has.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from multinode.sandbox import image
from tests.conftest import ROOT

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # root's on Debian: what ./test runs with
REPO = "srv/multinode"  # in the chroot
# How this machine reaches the registries (proxies, its CA bundle, an index), passed on if set.
PASSED = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT_FILE",
          "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT", "PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX",
          "UV_NATIVE_TLS")


def chroot(root, script, timeout=60):
    env = [f"{k}={os.environ[k]}" for k in PASSED if k in os.environ]
    return subprocess.run(
        ["chroot", str(root), "/usr/bin/env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8", *env,
         "bash", "-c", script], capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def fresh(tmp_path):
    """A writable fresh Debian 12 (root, upper dir) with this machine's DNS and CAs and a copy of the repo."""
    if os.geteuid() != 0:
        pytest.fail("bin/prepare's test needs root (mounts, chroot); CI runs it as root")
    root, upper, work = (tmp_path / d for d in ("root", "upper", "work"))
    for d in (root, upper, work):
        d.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={image.build()},upperdir={upper},workdir={work}", str(root)], check=True)
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        subprocess.run(["mount", "--rbind", "/dev", str(root / "dev")], check=True)  # with /dev/pts, for apt
        subprocess.run(["mount", "--make-rslave", str(root / "dev")], check=True)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        for conf in Path("/etc/apt/apt.conf.d").glob("*"):  # how apt here takes its mirror
            if conf.is_file() and "\nAcquire::" in "\n" + conf.read_text(errors="replace"):
                shutil.copy(conf, root / "etc/apt/apt.conf.d")
        cas = list(Path("/usr/local/share/ca-certificates").glob("*.crt"))
        for ca in cas:
            shutil.copy(ca, root / "usr/local/share/ca-certificates")
        if cas:
            assert chroot(root, "update-ca-certificates").returncode == 0
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
        for name in filter(None, files):  # the working tree, as a fresh clone would have it
            if (ROOT / name).is_file():
                (root / REPO / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, root / REPO / name)
        yield root, upper
    finally:
        if subprocess.run(["umount", "-R", str(root)]).returncode:
            subprocess.run(["umount", "-R", "-l", str(root)])


def test_prepare_installs_uv_and_leaves_the_system_python_alone(fresh):
    root, upper = fresh
    no_pip = chroot(root, "python3 -m pip --version")
    assert no_pip.returncode == 1 and "No module named pip" in no_pip.stderr  # as on a fresh Debian 12
    assert chroot(root, "command -v uv").returncode == 1
    [managed] = root.glob("usr/lib/python3.*/EXTERNALLY-MANAGED")

    prepare = chroot(root, f"cd /{REPO} && bin/prepare", timeout=240)
    assert prepare.returncode == 0, prepare.stdout + prepare.stderr
    assert chroot(root, "uv --version").stdout.startswith("uv ")  # on root's PATH, as ./test and ./demo find it
    assert (root / REPO / ".venv/bin/fab").exists()  # uv sync --locked ran

    still = chroot(root, "python3 -m pip --version")
    assert still.returncode == 1 and "No module named pip" in still.stderr
    # Nothing in the system Python but what Debian's packages (pipx and its own) put there:
    # no pip install, no --break-system-packages, no EXTERNALLY-MANAGED removed (a whiteout in upper).
    owned = set()
    for listing in (root / "var/lib/dpkg/info").glob("*.list"):
        owned.update(listing.read_text().splitlines())
    written = [
        "/" + str(p.relative_to(upper))
        for top in ("usr/lib", "usr/local/lib") for p in (upper / top).glob("python3*/**/*")
        if not p.is_dir() and "__pycache__" not in p.parts
    ]
    assert [p for p in written if p not in owned] == []
    assert not (upper / managed.relative_to(root)).exists() and managed.is_file()
    configs = list((upper / "etc").rglob("pip.conf")) + list((upper / "root/.config/pip").glob("*"))
    assert not [p for p in configs if "break-system-packages" in p.read_text()]
