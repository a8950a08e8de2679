"""Unit tests: the shell helpers every rendered script includes (run by real bash)."""

import subprocess

from fabfile.render import render

LIB = render("lib.sh.j2")


def sh(script, cwd):
    return subprocess.run(["bash", "-euc", LIB + script], cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_put_block_in_place_idempotent_and_keeps_the_rest(tmp_path):
    (tmp_path / "body").write_text("a\nb\n")
    (tmp_path / "f").write_text("top\n")
    assert sh("put_block f x body 644 && echo changed", tmp_path) == "changed\n"
    with open(tmp_path / "f", "a") as fh:
        fh.write("user line\n")
    assert sh("put_block f x body 644 || echo same", tmp_path) == "same\n"
    (tmp_path / "body").write_text("c\n")
    sh("put_block f x body 644", tmp_path)
    assert (tmp_path / "f").read_text() == "top\n# BEGIN x (managed by multinode)\nc\n# END x\nuser line\n"
    assert (tmp_path / "f.multinode.bak").read_text().count("a\nb\n") == 1
    assert oct((tmp_path / "f").stat().st_mode & 0o777) == "0o644"


def test_new_file_gets_the_mode_and_install_file_skips_identical(tmp_path):
    (tmp_path / "body").write_text("secret\n")
    sh("umask 077; put_block new x body", tmp_path)
    assert oct((tmp_path / "new").stat().st_mode & 0o777) == "0o600"
    assert sh("install_file body copy 600 && echo changed; install_file body copy 600 || echo same", tmp_path) == \
        "changed\nsame\n"
