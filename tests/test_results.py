"""Table writes: atomic, and readable by whoever may read the folder's other files."""

import os
import stat

import pandas as pd
import pytest

from rnnexp.results import atomic_path, config_columns, load_runs, read_summary, write_table


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
    with pytest.raises(RuntimeError, match="^killed mid-write$"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a table")
        raise RuntimeError("killed mid-write")
    assert pd.read_parquet(path)["a"].tolist() == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_a_damaged_summary_counts_as_unfinished_and_blocks_nothing(tmp_path):
    """Truncated by a copy from a cluster, say: a warning, not a failing resume or load."""
    for name, status in (("good", "ok"), ("damaged", "ok")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("seed: 0\n")
        write_table(
            pd.DataFrame([{"seed": 0, "run_id": name, "status": status}]),
            tmp_path / name / "summary.parquet",
        )
    (tmp_path / "damaged" / "summary.parquet").write_bytes(b"")
    with pytest.warns(UserWarning, match="damaged/summary.parquet cannot be read"):
        assert read_summary(tmp_path / "damaged") is None
    with pytest.warns(UserWarning, match="that run counts as unfinished"):
        assert load_runs(tmp_path)["run_id"].tolist() == ["good"]
    assert read_summary(tmp_path / "good")["status"] == "ok"


def test_load_runs_of_a_path_that_is_no_folder_is_an_error(tmp_path):
    with pytest.raises(NotADirectoryError, match="nowhere is not a folder"):
        load_runs(tmp_path / "nowhere")
    (tmp_path / "summary.parquet").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="summary.parquet is not a folder"):
        load_runs(tmp_path / "summary.parquet")


def test_a_key_of_ones_own_cell_or_task_never_overwrites_another_column():
    """train's keys, seed and device are the fixed schema: a clashing key gets its group's
    prefix instead of silently replacing one of them (or an earlier group's key)."""
    cfg = {
        "seed": 3,
        "device": "cpu",
        "cell": {"_target_": "x.Cell", "hidden_size": 8, "steps": 4, "seed": 9},
        "train": {"steps": 100, "lr": 0.01},
        "task": {"_target_": "x.Task", "seq_len": 20, "lr": 0.5, "hidden_size": 2, "device": 1},
        "diagnostics": {"batch_size": 16},
    }
    cfg["task"] |= {"status": "x", "step": 2}  # named as a result, and a long table's column
    cols = config_columns(cfg, {"cell": "mine", "task": "ours"}, reserved={"status", "step"})
    assert cols == {
        "cell": "mine",
        "task": "ours",
        "seed": 3,
        "hidden_size": 8,
        "cell_steps": 4,
        "cell_seed": 9,
        "steps": 100,
        "lr": 0.01,
        "seq_len": 20,
        "task_lr": 0.5,
        "task_hidden_size": 2,
        "task_device": 1,
        "task_status": "x",
        "task_step": 2,
        "diagnostics_batch_size": 16,
        "device": "cpu",
    }


def test_a_summary_with_no_row_is_an_unfinished_run(tmp_path):
    """A zero-row summary.parquet (a copy that kept the schema only): no finished run, so a
    resume trains it again rather than failing on its first row."""
    write_table(pd.DataFrame({"status": pd.Series([], dtype=str)}), tmp_path / "summary.parquet")
    assert read_summary(tmp_path) is None
    assert load_runs(tmp_path).empty


def test_integer_columns_stay_exact_across_runs(tmp_path):
    """Summaries as the trainer writes them (one row from a dict): a seed from 2^63 up is
    uint64 beside others' int64, which pandas' concat would round through float64; a key that
    some runs hold null (the plain LSTM's chrono_max_len) or lack (copy's n_symbols) stays an
    integer column with <NA>."""
    big = 2**64 - 1
    rows = {
        "a": {"seed": 0, "chrono_max_len": None, "run_id": "a", "status": "ok"},
        "b": {"seed": big, "chrono_max_len": 100, "n_symbols": 8, "run_id": "b", "status": "ok"},
        "c": {"seed": 2**63, "chrono_max_len": 50, "run_id": "c", "status": "ok"},
    }
    for name, row in rows.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("seed: 0\n")
        write_table(pd.DataFrame([row]), tmp_path / name / "summary.parquet")
    table = load_runs(tmp_path).set_index("run_id")
    assert table.seed.dtype == "uint64" and table.seed.tolist() == [0, big, 2**63]
    assert table.chrono_max_len.dtype == "Int64" and table.chrono_max_len.isna().tolist() == [
        True,
        False,
        False,
    ]
    assert table.chrono_max_len["b"] == 100 and table.n_symbols.dtype == "Int64"
    assert table.n_symbols.isna().tolist() == [True, False, True]
    write_table(
        pd.DataFrame([{"seed": -1, "run_id": "d", "status": "ok"}]),
        tmp_path / "a" / "summary.parquet",
    )
    assert load_runs(tmp_path).set_index("run_id").seed.to_dict() == {"d": -1, "b": big, "c": 2**63}


def test_a_nullable_integer_column_null_in_every_run_keeps_its_dtype(tmp_path):
    """solved_step (Int64) where no run solved its task: no values to tell signed from
    unsigned, so the column stays as the runs wrote it."""
    for name in "ab":
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text("seed: 0\n")
        row = pd.DataFrame([{"seed": 0, "run_id": name, "solved_step": None}])
        write_table(row.astype({"solved_step": "Int64"}), tmp_path / name / "summary.parquet")
    assert load_runs(tmp_path).solved_step.dtype == "Int64"
