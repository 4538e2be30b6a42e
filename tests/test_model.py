"""The sequence model against torch's fused multi-step modules."""

import pytest
import torch
from torch import nn

from rnnexp.cells import GRUCell, LSTMCell, RNNCell
from rnnexp.model import SequenceModel


def _pair(kind, n, m):
    if kind == "lstm":
        ref = nn.LSTM(n, m).double()
        cell = LSTMCell(n, m).double()
    elif kind == "gru":
        ref = nn.GRU(n, m).double()
        cell = GRUCell.from_torch(nn.GRUCell(n, m).double())
    else:
        ref = nn.RNN(n, m, nonlinearity=kind).double()
        cell = RNNCell(n, m, nonlinearity=kind).double()
    if kind != "gru":
        cell.load_state_dict({k.removesuffix("_l0"): v for k, v in ref.state_dict().items()})
    else:
        ref.load_state_dict({k + "_l0": v for k, v in cell.to_torch().state_dict().items()})
    return cell, ref


@pytest.mark.parametrize("kind", ["tanh", "relu", "gru", "lstm"])
def test_unroll_matches_torch_sequence_modules(kind):
    torch.manual_seed(0)
    T, B, n, m = 7, 3, 2, 4
    cell, ref = _pair(kind, n, m)
    model = SequenceModel(cell, output_size=5).double()
    x = torch.randn(T, B, n, dtype=torch.float64)
    outputs, states = model(x, return_states=True)
    hs, _ = ref(x)
    assert states.shape == (T + 1, B, cell.state_size)
    assert torch.equal(states[0], torch.zeros(B, cell.state_size, dtype=torch.float64))
    torch.testing.assert_close(cell.hidden(states[1:]), hs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outputs, model.readout(hs))


def test_output_steps_select_the_scored_steps_and_state_is_used():
    torch.manual_seed(1)
    model = SequenceModel(LSTMCell(2, 3), output_size=1)
    x = torch.randn(6, 4, 2)
    every = model(x)
    assert every.shape == (6, 4, 1)
    torch.testing.assert_close(model(x, output_steps=slice(-1, None)), every[-1:])
    s0 = (torch.randn(4, 3), torch.randn(4, 3))
    _, states = model(x, state=s0, return_states=True)
    torch.testing.assert_close(states[0], torch.cat(s0, -1))
    assert not torch.allclose(model(x, state=s0), every)
