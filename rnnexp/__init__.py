"""rnnexp: an experiment harness for vanishing and exploding gradients in recurrent networks."""

from rnnexp.cells import GRUCell, LSTMCell, RecurrentCell, RNNCell
from rnnexp.model import SequenceModel

__all__ = ["GRUCell", "LSTMCell", "RNNCell", "RecurrentCell", "SequenceModel"]
