"""Tasks against references computed independently from the raw inputs."""

import inspect
import math
from pathlib import Path

import hydra
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rnnexp.cells import RNNCell
from rnnexp.model import SequenceModel
from rnnexp.tasks import AddingTask, CopyTask, Task, check_task

CONF = Path(__file__).parents[1] / "conf" / "task"


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- adding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("T", [2, 7, 10])
def test_adding_markers_values_and_targets(T):
    task = AddingTask(seq_len=T)
    B = 20_000
    inputs, targets = task.sample(B, _gen())
    assert inputs.shape == (T, B, 2) and inputs.dtype == torch.float32
    assert targets.shape == (1, B, 1) and targets.dtype == torch.float32
    values, markers = inputs[..., 0], inputs[..., 1]
    half = T // 2
    assert ((markers == 0) | (markers == 1)).all()
    assert (markers[:half].sum(0) == 1).all()
    assert (markers[half:].sum(0) == 1).all()
    assert values.min() >= 0 and values.max() <= 1
    assert abs(values.mean().item() - 0.5) < 0.01
    torch.testing.assert_close(targets[0, :, 0], (values * markers).sum(0), rtol=0, atol=1e-6)

    first, second = markers[:half].argmax(0), half + markers[half:].argmax(0)
    assert set(first.tolist()) == set(range(half))
    assert set(second.tolist()) == set(range(half, T))
    for pos, n_pos in [(first, half), (second - half, T - half)]:  # roughly uniform
        counts = torch.bincount(pos, minlength=n_pos).double()
        assert (counts / (B / n_pos) - 1).abs().max() < 0.1


def test_adding_baseline_and_accuracy():
    task = AddingTask(seq_len=10)
    inputs, targets = task.sample(20_000, _gen(1))
    total = (inputs[..., 0] * inputs[..., 1]).sum(0).view(1, -1, 1)

    constant = torch.ones_like(targets)
    assert abs(task.loss(constant, targets).item() - 1 / 6) < 0.01
    assert abs(task.baseline_loss - 1 / 6) < 1e-15
    near_one = ((total - 1).abs() < 0.04).double().mean().item()
    assert task.accuracy(constant, targets) == pytest.approx(near_one, abs=1e-6)  # < 1 seq
    assert near_one == pytest.approx(1 - 0.96**2, abs=0.01)  # P(|X1 + X2 - 1| < 0.04)
    assert task.baseline_accuracy == pytest.approx(1 - 0.96**2, rel=1e-12)  # chance

    assert task.accuracy(targets.clone(), targets) == 1.0
    assert task.accuracy(targets + 0.05, targets) == 0.0
    assert task.loss(targets.clone(), targets).item() == 0.0


def test_adding_scores_only_the_last_output():
    task = AddingTask(seq_len=5)
    inputs, targets = task.sample(3, _gen(2))
    torch.manual_seed(0)
    model = SequenceModel(RNNCell(2, 4), 1).to(inputs.dtype)  # the suite runs in float64
    outputs, states = model(inputs, output_steps=task.output_steps, return_states=True)
    # the reference: the readout of h_T alone, the last state
    torch.testing.assert_close(outputs, model.readout(states[-1:]), rtol=0, atol=0)
    everything = model(inputs)  # (T, B, 1)
    moved = everything.clone()
    moved[:-1] += 10.0  # every earlier output far off: the loss must not see it
    for outs in (everything, moved):
        assert task.loss(outs[task.output_steps], targets) == task.loss(outputs, targets)


# -- copy -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "seq_len,n_symbols,n_copy", [(1, 8, 10), (3, 8, 2), (50, 8, 10), (7, 3, 4)]
)
def test_copy_layout(seq_len, n_symbols, n_copy):
    task = CopyTask(seq_len=seq_len, n_symbols=n_symbols, n_copy=n_copy)
    T, B = seq_len + 2 * n_copy, 2000
    assert (task.input_size, task.output_size) == (n_symbols + 2, n_symbols + 1)
    inputs, targets = task.sample(B, _gen())
    assert inputs.shape == (T, B, n_symbols + 2) and inputs.dtype == torch.float32
    assert targets.shape == (T, B) and targets.dtype == torch.long

    assert ((inputs == 0) | (inputs == 1)).all() and (inputs.sum(-1) == 1).all()
    categories = inputs.argmax(-1)
    symbols = categories[:n_copy]
    assert set(symbols.unique().tolist()) == set(range(1, n_symbols + 1))
    assert torch.equal(targets[-n_copy:], symbols)
    assert (targets[:-n_copy] == 0).all()

    delimiter = seq_len + n_copy - 1
    assert (categories[delimiter] == n_symbols + 1).all()
    rest = torch.cat([categories[n_copy:delimiter], categories[delimiter + 1 :]])
    assert rest.shape[0] == T - n_copy - 1 and (rest == 0).all()


def test_copy_worked_example_positions():
    task = CopyTask(seq_len=3, n_copy=2)
    inputs, targets = task.sample(1, _gen())
    categories = inputs.argmax(-1)[:, 0].tolist()
    a, b = categories[:2]
    assert categories == [a, b, 0, 0, 9, 0, 0]
    assert targets[:, 0].tolist() == [0, 0, 0, 0, 0, a, b]


def _logits(labels, n_classes, big=1e4):
    """Logits that put (numerically exactly) all probability on `labels`."""
    return torch.nn.functional.one_hot(labels, n_classes).float() * big - big


def test_copy_memoryless_loss_is_baseline():
    for seq_len in (1, 30, 200):
        task = CopyTask(seq_len=seq_len)
        _, targets = task.sample(64, _gen(2))
        k, T = task.n_copy, seq_len + 2 * task.n_copy
        outputs = _logits(torch.zeros_like(targets), task.output_size)  # certain blank
        outputs[-k:] = 0.0
        outputs[-k:, :, 0] = -1e4  # uniform over the symbols
        expected = k * math.log(8) / T
        assert task.baseline_loss == pytest.approx(expected, rel=1e-12)
        assert task.loss(outputs, targets).item() == pytest.approx(expected, abs=1e-5)


def test_copy_chance_accuracy_is_baseline():
    task = CopyTask(seq_len=5, n_symbols=5)
    _, targets = task.sample(20_000, _gen(4))
    always_1 = _logits(torch.ones_like(targets), task.output_size)  # one fixed guess
    assert task.baseline_accuracy == 1 / 5
    assert task.accuracy(always_1, targets) == pytest.approx(1 / 5, abs=0.01)


def test_copy_accuracy_counts_recall_steps_only():
    task = CopyTask(seq_len=500)
    _, targets = task.sample(32, _gen(3))
    perfect = _logits(targets, task.output_size)
    assert task.accuracy(perfect, targets) == 1.0
    assert task.loss(perfect, targets).item() < 1e-6

    wrong = targets.clone()
    wrong[-task.n_copy :] = targets[-task.n_copy :] % 8 + 1  # another symbol, never right
    assert (wrong[-task.n_copy :] != targets[-task.n_copy :]).all()
    assert (wrong == targets).double().mean() > 0.95  # right on almost every step...
    assert task.accuracy(_logits(wrong, task.output_size), targets) == 0.0  # ...yet scores 0


# -- shared ---------------------------------------------------------------------------------------
TASKS = [AddingTask(seq_len=12), CopyTask(seq_len=12, n_copy=3)]


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_protocol_and_differentiable_loss(task):
    assert isinstance(task, Task)
    inputs, targets = task.sample(5, _gen())
    T = inputs.shape[0]
    assert inputs.shape[-1] == task.input_size
    outputs = torch.randn(T, 5, task.output_size)[task.output_steps].requires_grad_()
    loss = task.loss(outputs, targets)
    assert loss.dim() == 0
    loss.backward()
    assert outputs.grad is not None and outputs.grad.abs().sum() > 0
    assert isinstance(task.accuracy(outputs, targets), float)
    with pytest.raises(ValueError, match="^outputs must have shape"):
        task.loss(outputs[..., :1].expand(*outputs.shape[:-1], 2), targets)


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_our_tasks_pass_the_start_up_check(task):
    check_task(task)


class _FlatTargets(AddingTask):
    """One target per sequence, (B,): the natural mistake for a task scored at one step."""

    def sample(self, batch_size, generator):
        inputs, targets = super().sample(batch_size, generator)
        return inputs, targets.reshape(-1)


class _BatchFirstTargets(AddingTask):
    """(B, 1, 1) targets, batch first: the other natural mistake."""

    def sample(self, batch_size, generator):
        inputs, targets = super().sample(batch_size, generator)
        return inputs, targets.transpose(0, 1)


class _IntegerInputs(CopyTask):
    """Forgot .float() on the one-hot inputs: the model's first matmul would fail mid-run."""

    def sample(self, batch_size, generator):
        inputs, targets = super().sample(batch_size, generator)
        return inputs.long(), targets


class _NoBaseline(AddingTask):
    baseline_loss = None


class _EveryStepScored(AddingTask):
    output_steps = slice(None)  # while the targets are for the last step only


class _NoAccuracy:
    def __init__(self):
        self.task = AddingTask(seq_len=6)

    def __getattr__(self, name):
        if name == "accuracy":
            raise AttributeError(f"'_NoAccuracy' object has no attribute {name!r}")
        return getattr(self.task, name)


class _FloatLoss(AddingTask):
    def loss(self, outputs, targets):
        return super().loss(outputs, targets).item()


class _OneElementLoss(AddingTask):
    """(1,) rather than (): backward, .item() and autograd.grad take it as well."""

    def loss(self, outputs, targets):
        return super().loss(outputs, targets).reshape(1)


class _PerSampleAccuracy(AddingTask):
    """Forgot the mean: a tensor per sample, which the evaluation cannot log."""

    def accuracy(self, outputs, targets):
        return (outputs - targets).abs() < 0.04


class _NumpyAccuracy(AddingTask):
    def accuracy(self, outputs, targets):
        return np.float32(super().accuracy(outputs, targets))


class _NoChance:
    """A task of one's own written without baseline_accuracy (before it existed, say)."""

    def __init__(self):
        self.task = AddingTask(seq_len=6)

    def __getattr__(self, name):
        if name == "baseline_accuracy":
            raise AttributeError(name)
        return getattr(self.task, name)


def test_start_up_check_names_what_a_task_gets_wrong():
    with pytest.raises(ValueError, match=r"targets with the batch on dim 1, got .* targets \(2,\)"):
        check_task(_FlatTargets(seq_len=6))
    with pytest.raises(ValueError, match=r"with the batch on dim 1, got .* targets \(2, 1, 1\)"):
        check_task(_BatchFirstTargets(seq_len=6))
    with pytest.raises(ValueError, match=r"^sample must return floating-point inputs .*int64$"):
        check_task(_IntegerInputs(seq_len=6))
    with pytest.raises(ValueError, match="^baseline_loss must be a number, got None"):
        check_task(_NoBaseline(seq_len=6))
    check_task(_NoChance())  # baseline_accuracy is optional
    check_task(_OneElementLoss(seq_len=6))
    with pytest.raises(
        ValueError,
        match=r"^loss\(outputs \(6, 2, 1\), targets \(1, 2, 1\)\) raised ValueError: outputs "
        r"must have shape \(1, 2, 1\), got \(6, 2, 1\)$",
    ):
        check_task(_EveryStepScored(seq_len=6))
    with pytest.raises(ValueError, match=r"^accuracy\(.*\) raised AttributeError: .*'accuracy'"):
        check_task(_NoAccuracy())
    with pytest.raises(
        ValueError, match=r"^loss\(.*\) must return a one-element tensor, got [0-9.]+$"
    ):
        check_task(_FloatLoss(seq_len=6))
    with pytest.raises(
        ValueError,
        match=r"^accuracy\(.*\) must return a number, got a tensor of shape \(1, 2, 1\)$",
    ):
        check_task(_PerSampleAccuracy(seq_len=6))
    check_task(_NumpyAccuracy(seq_len=6))  # float() takes it, as the evaluation does


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_sampling_is_determined_by_the_generator(task):
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    x1, y1 = task.sample(16, _gen(7))
    x2, y2 = task.sample(16, _gen(7))
    x3, y3 = task.sample(16, _gen(8))
    assert torch.equal(global_state, torch.get_rng_state())  # the global RNG is untouched
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)


@pytest.mark.parametrize(
    "cls,kwargs,name",
    [
        (AddingTask, {"seq_len": 1}, "seq_len"),
        (AddingTask, {"seq_len": 0}, "seq_len"),
        (AddingTask, {"seq_len": 10.0}, "seq_len"),
        (AddingTask, {"seq_len": True}, "seq_len"),
        (AddingTask, {"solved_accuracy": 0}, "solved_accuracy"),
        (AddingTask, {"solved_accuracy": 1.5}, "solved_accuracy"),
        (CopyTask, {"seq_len": 0}, "seq_len"),
        (CopyTask, {"n_symbols": 1}, "n_symbols"),
        (CopyTask, {"n_copy": 0}, "n_copy"),
        (CopyTask, {"n_copy": "10"}, "n_copy"),
        (CopyTask, {"solved_accuracy": -0.5}, "solved_accuracy"),
    ],
)
def test_bad_arguments_name_themselves(cls, kwargs, name):
    with pytest.raises(ValueError, match=rf"^{name} must be "):
        cls(**kwargs)


@pytest.mark.parametrize("task", TASKS, ids=repr)
def test_bad_batch_size(task):
    with pytest.raises(ValueError, match="^batch_size must be an integer >= 1"):
        task.sample(0, _gen())


@pytest.mark.parametrize("name,cls", [("adding", AddingTask), ("copy", CopyTask)])
def test_yaml_configs_instantiate(name, cls):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    defaults = {
        k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"
    }
    assert {k: v for k, v in cfg.items() if k != "_target_"} == defaults
    task = hydra.utils.instantiate(cfg)
    assert type(task) is cls and task.seq_len == 100
    overridden = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["seq_len=7"]))
    assert hydra.utils.instantiate(overridden).seq_len == 7
