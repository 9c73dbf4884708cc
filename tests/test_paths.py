"""Every location, the one atomic writer and the digests that catch a corrupt file."""

import pytest
import torch

from atcourse import paths


def test_crash_during_a_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "ckpt.pt"
    paths.atomic_write(path, lambda fh: torch.save({"epoch": 1}, fh))

    def crashing(fh):
        torch.save({"epoch": 2}, fh)
        fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        paths.atomic_write(path, crashing)
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_atomic_write_takes_bytes_text_and_writers(tmp_path):
    assert paths.atomic_write(tmp_path / "a.txt", "héllo").read_text() == "héllo"
    assert paths.atomic_write(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_a_digest_catches_flipped_bytes_and_truncation(tmp_path):
    path = paths.atomic_write(tmp_path / "c.pt", b"0123456789" * 100, digest=True)
    paths.verify_digest(path)  # intact: no error
    data = bytearray(path.read_bytes())
    data[500] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(paths.CorruptFileError, match="c.pt does not match"):
        paths.verify_digest(path)
    path.write_bytes(bytes(data[:10]))
    with pytest.raises(paths.CorruptFileError, match="c.pt has 10 bytes, 1000 were written"):
        paths.verify_digest(path)


def test_a_file_without_a_digest_is_not_checked(tmp_path):
    path = tmp_path / "old.pt"
    path.write_bytes(b"anything")
    paths.verify_digest(path)


def test_roots_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ATCOURSE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("ATCOURSE_RUNS", str(tmp_path / "r"))
    assert paths.data_root() == tmp_path / "d"
    assert paths.checkpoint_root() == tmp_path / "d" / "checkpoints"
    assert paths.runs_root() == tmp_path / "r"
