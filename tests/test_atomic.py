"""Outputs are all or nothing: one file, or a set of files."""

import errno

import pytest

from utils.errors import InputError
from utils.io.atomic import atomic_path, write_text_atomic, write_together


def text_writer(text):
    return lambda path: path.write_text(text)


def disk_full(path):
    """A writer that meets a full disk after writing part of its file."""
    path.write_text("half")
    raise OSError(errno.ENOSPC, "No space left on device")


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def earlier(tmp_path):
    """Two outputs of an earlier run, which a failed run must leave as they are."""
    (tmp_path / "a.csv").write_text("old a")
    (tmp_path / "b.json").write_text("old b")
    return tmp_path


def test_a_set_is_written_whole(earlier):
    write_together({earlier / "a.csv": text_writer("new a"), earlier / "b.json": text_writer("new b"),
                    earlier / "sub" / "c.png": text_writer("new c")})
    assert [(earlier / n).read_text() for n in ("a.csv", "b.json", "sub/c.png")] == [
        "new a", "new b", "new c"]
    assert listing(earlier) == ["a.csv", "b.json", "sub"]


def test_a_folder_where_an_output_goes_is_one_error_and_nothing_is_written(earlier):
    (earlier / "c.png").mkdir()
    with pytest.raises(InputError, match=r"c.png: cannot write: a folder stands where this "
                                         r"output goes$"):
        write_together({earlier / "a.csv": text_writer("new a"),
                        earlier / "c.png": text_writer("new c")})
    assert (earlier / "a.csv").read_text() == "old a"
    assert listing(earlier) == ["a.csv", "b.json", "c.png"]


def test_a_full_disk_is_one_error_and_every_output_stays_as_it_was(earlier):
    with pytest.raises(InputError, match=r"b.json: cannot write \(No space left on device\)$"):
        write_together({earlier / "a.csv": text_writer("new a"), earlier / "b.json": disk_full})
    assert [(earlier / n).read_text() for n in ("a.csv", "b.json")] == ["old a", "old b"]
    assert listing(earlier) == ["a.csv", "b.json"]  # no temporary or backup left


def test_a_failed_rename_puts_back_the_outputs_already_renamed(earlier):
    """The second rename fails (its target turned into a folder after the check): the first
    output, already renamed, gets its earlier content back."""
    def becomes_a_folder(path):
        path.write_text("new b")
        (earlier / "b.json").unlink()
        (earlier / "b.json").mkdir()
        (earlier / "b.json" / "x").write_text("in the way")

    with pytest.raises(InputError, match=r"b.json: cannot write"):
        write_together({earlier / "a.csv": text_writer("new a"),
                        earlier / "b.json": becomes_a_folder})
    assert (earlier / "a.csv").read_text() == "old a"
    assert listing(earlier) == ["a.csv", "b.json"]


def test_a_file_where_a_folder_must_be_is_named(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'afile' / 'x' / 'y.csv'}: cannot write: "
                                         rf"{tmp_path / 'afile'} is a file, not a folder$"):
        write_text_atomic(tmp_path / "afile" / "x" / "y.csv", "never")


def test_ctrl_c_while_writing_one_file_leaves_the_earlier_file(tmp_path):
    (tmp_path / "out.json").write_text("earlier")
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert (tmp_path / "out.json").read_text() == "earlier"
    assert listing(tmp_path) == ["out.json"]
