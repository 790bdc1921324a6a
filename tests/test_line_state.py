"""The state file that carries lifetime counters across restarts: atomic, tolerant of damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from lineguard.runtime.contract import Totals
from lineguard.runtime.line.state import LineState, LineStateError, LineStateFile


@pytest.mark.parametrize("durable", [True, False])
def test_round_trip_leaves_no_temporary_files(tmp_path: Path, durable: bool) -> None:
    file = LineStateFile(tmp_path / "state" / "l.json", "l")
    file.save(LineState(line="l", totals=Totals(frames_in=7)), durable=durable)
    assert file.load().totals.frames_in == 7
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["l.json"]


@pytest.mark.parametrize("damage", [b"\xff\xfe not utf-8", b"{\"line\": ", b""])
def test_damaged_file_is_set_aside_and_counting_starts_over(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "l.json"
    path.write_bytes(damage)
    state = LineStateFile(path, "l").load()
    assert state.line == "l" and state.totals.frames_in == 0
    assert not path.exists() and len(list(tmp_path.glob("l.json.corrupt-*"))) == 1


def test_another_lines_file_is_refused(tmp_path: Path) -> None:
    LineStateFile(tmp_path / "x.json", "press1").save(LineState(line="press1"))
    with pytest.raises(LineStateError, match="press1"):
        LineStateFile(tmp_path / "x.json", "press2").load()


def test_a_path_no_state_can_be_saved_at_is_refused_at_once(tmp_path: Path) -> None:
    """A folder, or a path under a file: the service used to start and keep no lifetime counts."""
    with pytest.raises(LineStateError, match=f"state_file {tmp_path} is a folder: name a file"):
        LineStateFile(tmp_path, line="press3")
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(LineStateError, match=f"{afile} is a file, not a folder"):
        LineStateFile(afile / "sub" / "press3.state.json", line="press3")
    assert LineStateFile(tmp_path / "new" / "press3.state.json", line="press3").load().line == "press3"
