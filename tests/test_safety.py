"""dfcan_tf.safety, the shared output rules: containment (symlinks too), markers, manifests, replacement only
of a command's own output, stale temporary cleanup. Every refusal leaves the files byte-identical."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from dfcan_tf import safety
from dfcan_tf.errors import DfcanError


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tmp_path):
    d = tmp_path / "parent" / "data"
    (d / "cell").mkdir(parents=True)
    (d / "cell" / "raw.mrc").write_bytes(b"raw frames")
    (d / "gt.mrc").write_bytes(b"ground truth")
    return d


def test_is_within_resolves_symlinks(tmp_path, data):
    link = tmp_path / "link"
    link.symlink_to(data)
    assert safety.is_within(data / "cell", data) and safety.is_within(data, data)
    assert safety.is_within(link / "cell", data) and safety.is_within(data / "cell", link)
    assert not safety.is_within(data.parent, data)
    assert not safety.is_within(tmp_path / "parent" / "data2", data)  # a name prefix is not containment


@pytest.mark.parametrize("where, words", [("same", "is the input"), ("parent", "holds the input"),
                                          ("inside", "inside the input folder"), ("link", "is the input")])
def test_output_dir_never_is_holds_or_lies_in_an_input(tmp_path, data, where, words):
    link = tmp_path / "alias"
    link.symlink_to(data)
    out = {"same": data, "parent": data.parent, "inside": data / "out", "link": link}[where]
    before = _hashes(data.parent)
    with pytest.raises(DfcanError, match=words) as info:
        safety.check_output_dir(out, command="patches", overwrite=True, inputs=[data])
    assert str(out) in str(info.value)
    assert _hashes(data.parent) == before


def test_output_dir_rules(tmp_path):
    out = tmp_path / "out"
    assert safety.check_output_dir(out, command="patches", overwrite=False) is False  # absent
    out.mkdir()
    assert safety.check_output_dir(out, command="patches", overwrite=False) is False  # empty
    (out / "x.tif").write_bytes(b"x")
    with pytest.raises(DfcanError, match="pass --overwrite"):
        safety.check_output_dir(out, command="patches", overwrite=False)
    with pytest.raises(DfcanError, match="no dfcan output marker"):
        safety.check_output_dir(out, command="patches", overwrite=True)
    safety.write_marker(out, "simulate")
    with pytest.raises(DfcanError, match="output of 'dfcan simulate'"):
        safety.check_output_dir(out, command="patches", overwrite=True)
    safety.write_marker(out, "patches")
    assert safety.check_output_dir(out, command="patches", overwrite=True) is True
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(DfcanError, match="existing file"):
        safety.check_output_dir(afile, command="patches", overwrite=True)
    with pytest.raises(DfcanError, match="is a file, not a folder"):
        safety.check_output_dir(afile / "sub", command="patches", overwrite=True)


def test_replace_dir_replaces_only_the_commands_folder(tmp_path):
    out = tmp_path / "out"
    staged = tmp_path / (safety.PART_PREFIX + "new")
    staged.mkdir()
    (staged / "a.txt").write_text("new")
    safety.replace_dir(staged, out, command="patches")  # absent: moved
    assert (out / "a.txt").read_text() == "new" and safety.read_marker(out)["command"] == "patches"
    staged.mkdir()
    (staged / "b.txt").write_text("newer")
    safety.replace_dir(staged, out, command="patches")  # ours: replaced whole
    assert sorted(p.name for p in out.iterdir()) == [safety.MARKER, "b.txt"]
    # a folder that is not ours (here: appeared meanwhile) is left untouched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("keep")
    staged.mkdir()
    (staged / "c.txt").write_text("c")
    with pytest.raises(DfcanError, match="not its output; left untouched"):
        safety.replace_dir(staged, foreign, command="patches")
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(safety.PART_PREFIX + "old")]


def test_output_file_rules_and_records(tmp_path, data):
    out = tmp_path / "m.onnx"
    safety.check_output_file(out, command="export", overwrite=False)  # absent: fine
    (tmp_path / "folder.onnx").mkdir()
    for overwrite in (False, True):
        with pytest.raises(DfcanError, match="existing folder, a file path is expected"):
            safety.check_output_file(tmp_path / "folder.onnx", command="export", overwrite=overwrite)
    out.write_bytes(b"model")
    with pytest.raises(DfcanError, match="pass --overwrite"):
        safety.check_output_file(out, command="export", overwrite=False)
    with pytest.raises(DfcanError, match="not written by 'dfcan export'"):
        safety.check_output_file(out, command="export", overwrite=True)
    safety.record_output(out, "predict")
    with pytest.raises(DfcanError, match="not written by 'dfcan export'"):
        safety.check_output_file(out, command="export", overwrite=True)
    safety.record_output(out, "export", format="onnx", sha256="ab")
    safety.check_output_file(out, command="export", overwrite=True)
    assert safety.written_by(out) == "export"
    entry = safety.output_record(out)
    assert entry["format"] == "onnx" and entry["sha256"] == "ab" and entry["command"] == "export"
    assert safety.output_record(tmp_path / "other.onnx") is None
    doc = json.loads((tmp_path / safety.MANIFEST).read_text())
    assert set(doc) == {"m.onnx"}
    with pytest.raises(DfcanError, match="is the input"):
        safety.check_output_file(data / "gt.mrc", command="export", overwrite=True, inputs=[data / "gt.mrc"])
    assert (data / "gt.mrc").read_bytes() == b"ground truth"


def test_clean_stale_parts_touches_only_old_temporaries(tmp_path):
    old = time.time() - 2 * safety.STALE_SECONDS
    stale_dir = tmp_path / (safety.PART_PREFIX + "x-1")
    stale_dir.mkdir()
    (stale_dir / "f").write_text("half")
    stale_file = tmp_path / (safety.PART_PREFIX + "abc.tif")
    stale_file.write_text("half")
    fresh = tmp_path / (safety.PART_PREFIX + "y-2")
    fresh.mkdir()
    user_old = tmp_path / "part-not-ours.txt"
    user_old.write_text("user")
    hidden = tmp_path / ".partial-user-file"
    hidden.write_text("user")
    download = tmp_path / ".part-firefox-download"  # another program's temporary name: not ours
    download.write_text("user")
    for p in (stale_dir, stale_file, user_old, hidden, download):
        os.utime(p, (old, old))
    removed = safety.clean_stale_parts(tmp_path)
    assert sorted(p.name for p in removed) == [safety.PART_PREFIX + "abc.tif", safety.PART_PREFIX + "x-1"]
    assert fresh.is_dir() and user_old.is_file() and hidden.is_file() and download.read_text() == "user"
    assert safety.clean_stale_parts(tmp_path / "missing") == []


def test_staged_dir_replaces_only_on_success_and_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    with safety.staged_dir(out, command="demo") as staged:
        (staged / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1" and safety.read_marker(out)["command"] == "demo"
    with pytest.raises(RuntimeError), safety.staged_dir(out, command="demo") as staged:
        (staged / "a.txt").write_text("2")
        raise RuntimeError("killed half-way")
    assert (out / "a.txt").read_text() == "1"  # the previous output is untouched
    with pytest.raises(DfcanError, match="not its output"), safety.staged_dir(out, command="other") as staged:
        (staged / "b.txt").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == [safety.MARKER, "a.txt"]
    cell = tmp_path / "cell"  # command=None: the caller owns the folder; it is swapped whole
    cell.mkdir()
    (cell / "old.txt").write_text("old")
    with safety.staged_dir(cell, command=None) as staged:
        (staged / "new.txt").write_text("new")
    assert [p.name for p in cell.iterdir()] == ["new.txt"]
    assert not list(tmp_path.glob(safety.PART_PREFIX + "*"))
