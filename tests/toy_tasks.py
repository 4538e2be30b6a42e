"""Tasks defined outside the package, selected only through YAML files in tests/conf/task/.

They prove that adding a task needs one class and one config file, and nothing else.
"""

import torch
import torch.nn.functional as F


class LastBitTask:
    """Repeat the first bit of a random bit sequence at the last step (a tiny memory task)."""

    input_size = 1
    output_size = 2
    output_steps = slice(-1, None)
    baseline_loss = float(torch.log(torch.tensor(2.0)))
    baseline_accuracy = 0.5
    solved_accuracy = 0.99

    def __init__(self, seq_len: int = 5, fail_at_seq_len: int | None = None) -> None:
        if seq_len < 1:
            raise ValueError(f"seq_len must be an integer >= 1, got {seq_len}")
        self.seq_len = seq_len
        self.fail = seq_len == fail_at_seq_len  # lets the sweep tests make one run fail

    def sample(self, batch_size, generator):
        bits = torch.randint(0, 2, (self.seq_len, batch_size), generator=generator)
        return bits.unsqueeze(-1).float(), bits[:1]

    def loss(self, outputs, targets):
        if self.fail and outputs.requires_grad:  # in training, past the start-up checks
            raise RuntimeError(f"this task is built to fail at seq_len={self.seq_len}")
        return F.cross_entropy(outputs.reshape(-1, 2), targets.reshape(-1))

    def accuracy(self, outputs, targets):
        return (outputs.argmax(-1) == targets).float().mean().item()
