"""Table writes: atomic, and readable by whoever may read the folder's other files."""

import os
import stat

import pandas as pd
import pytest

from rnnexp.results import atomic_path, write_table


def test_a_table_gets_the_mode_of_any_new_file(tmp_path):
    umask = os.umask(0o022)
    try:
        write_table(pd.DataFrame({"a": [1, 2]}), tmp_path / "t.parquet")
        (tmp_path / "plain").touch()
    finally:
        os.umask(umask)
    mode = stat.S_IMODE((tmp_path / "t.parquet").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o644
    assert pd.read_parquet(tmp_path / "t.parquet")["a"].tolist() == [1, 2]


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "t.parquet"
    write_table(pd.DataFrame({"a": [1]}), path)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a table")
        raise RuntimeError("killed mid-write")
    assert pd.read_parquet(path)["a"].tolist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]
