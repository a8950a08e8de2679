"""Unit tests: managed blocks and atomic writes on the laptop."""

import os

import pytest

from multinode.localfiles import replace_block, write_atomic


def test_new_block_goes_on_top_and_is_replaced_in_place():
    user = "Host *\n    User me\n"
    once = replace_block(user, "x", "Host a\n    HostName 1")
    assert once.endswith("\n" + user) and once.startswith("# BEGIN x ")
    twice = replace_block(once, "x", "Host b")
    assert "Host a" not in twice and "Host b" in twice and twice.endswith("\n" + user)
    assert replace_block(twice, "x", "Host b") == twice


def test_block_in_the_middle_stays_there():
    text = "top\n" + replace_block("", "x", "old") + "bottom"
    new = replace_block(text, "x", "new")
    assert new.startswith("top\n# BEGIN x") and new.endswith("# END x\nbottom") and "old" not in new


def test_unterminated_block_is_refused():
    with pytest.raises(ValueError, match="without its"):
        replace_block("# BEGIN x (managed by multinode: edits inside this block are replaced)\n", "x", "b")


def test_write_atomic_backs_up_keeps_mode_and_skips_identical(tmp_path):
    path = tmp_path / "f"
    path.write_text("old\n")
    path.chmod(0o644)
    assert write_atomic(path, "new\n") is True
    assert path.read_text() == "new\n" and (path.stat().st_mode & 0o777) == 0o644
    assert (tmp_path / "f.multinode.bak").read_text() == "old\n"
    mtime = path.stat().st_mtime_ns
    assert write_atomic(path, "new\n") is False and path.stat().st_mtime_ns == mtime
    assert write_atomic(path, "new\n", mode=0o600) is True and (path.stat().st_mode & 0o777) == 0o600


def test_write_atomic_follows_symlink_and_new_file_is_0600(tmp_path):
    target = tmp_path / "real"
    target.write_text("a\n")
    link = tmp_path / "link"
    os.symlink(target, link)
    write_atomic(link, "b\n")
    assert link.is_symlink() and target.read_text() == "b\n"
    fresh = tmp_path / "sub" / "new"
    write_atomic(fresh, "secret\n")
    assert (fresh.stat().st_mode & 0o777) == 0o600


def test_logs_are_private_and_never_written_through_a_link(tmp_path, monkeypatch):
    import os

    import pytest

    from multinode.localfiles import log_dir, private_log

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    logs = log_dir("")
    assert logs == tmp_path / "state/multinode/logs" and oct(logs.stat().st_mode & 0o777) == "0o700"
    with private_log(logs / "setup_rental0.log") as fh:
        fh.write("STEP x ok\n")
    assert oct((logs / "setup_rental0.log").stat().st_mode & 0o777) == "0o600"
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    os.symlink(victim, logs / "setup_rental1.log")  # planted by someone else
    with pytest.raises(OSError):
        private_log(logs / "setup_rental1.log")
    assert victim.read_text() == "mine\n"

