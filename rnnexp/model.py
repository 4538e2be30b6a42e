"""A sequence model: any cell unrolled over time, read out linearly from h."""

from __future__ import annotations

from torch import Tensor, nn

from rnnexp.cells import RecurrentCell


class SequenceModel(nn.Module):
    """Unrolls `cell` over time-major inputs and maps h_t to outputs with one linear layer.

    Cell-agnostic: it only uses the cell's flat-state interface (`fast_scan` or `scan`,
    `hidden`). `fused=False` unrolls with the readable reference `scan` instead of the
    hand-derived BPTT; both compute the same states and first derivatives. Higher derivatives
    (create_graph=True) and torch.func's transforms (jacrev, jvp, vmap) need `fused=False`.
    """

    def __init__(self, cell: RecurrentCell, output_size: int, fused: bool = True) -> None:
        super().__init__()
        self.cell = cell
        self.readout = nn.Linear(cell.hidden_size, output_size)
        self.fused = fused

    def forward(
        self,
        inputs: Tensor,
        state: Tensor | tuple[Tensor, Tensor] | None = None,
        output_steps: slice = slice(None),
        return_states: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Readout at `output_steps` of the T steps: (T_out, B, output_size).

        inputs: (T, B, input_size). `state` is s_0 (zeros if None). With `return_states`, also
        every flat state s_0 ... s_T, (T+1, B, state_size), as the Jacobian code needs them.
        """
        unroll = self.cell.fast_scan if self.fused else self.cell.scan
        states = unroll(inputs, state)  # (T+1, B, S)
        outputs = self.readout(self.cell.hidden(states[1:][output_steps]))
        return (outputs, states) if return_states else outputs

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
