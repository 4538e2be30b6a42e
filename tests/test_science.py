"""The classic picture, end to end: a regression test of the science, not of the code paths.

One point of the small `adding` experiment (T = 50, m = 32, its exact settings): the GRU learns
the adding problem while the tanh RNN stays near the baseline, and the RNN's Jacobian products
vanish faster, more so after training. The runs are deterministic, so these are the committed
reference numbers (gru 0.988, rnn 0.083); the bounds leave room for another torch build. About
30 s on 2 cores.
"""

import pandas as pd
from conftest import cli, ok


def test_gru_learns_what_the_tanh_rnn_cannot(tmp_path):
    ok(
        cli(
            "-m",
            "experiment=adding",
            "cell=rnn,gru",
            "task.seq_len=50",
            "cell.hidden_size=32",
            "progress=false",
            f"hydra.sweep.dir={tmp_path}",
        )
    )
    runs = pd.read_parquet(tmp_path / "summary.parquet").set_index("cell")
    rnn, gru = runs.loc["rnn"], runs.loc["gru"]
    assert (runs.status == "ok").all()
    assert gru.final_eval_accuracy > 0.9
    assert gru.final_eval_loss < 0.01 * gru.baseline_loss
    assert rnn.final_eval_accuracy < 0.3
    assert rnn.final_eval_loss > 0.5 * rnn.baseline_loss
    assert rnn.log10_decay_rate_init < gru.log10_decay_rate_init < 0
    assert rnn.log10_decay_rate_final < gru.log10_decay_rate_final - 0.1
    assert rnn.memory_horizon_final < gru.memory_horizon_final
