# The CUDA path rehearsed without a GPU: TRM, URM and HRM (config/sudoku_mini*.py, config/arc_mini.py
# for attention with RoPE and a 16-position puzzle embedding) run their training-mode forward and
# their evaluation loop on fake 'cuda' tensors in bfloat16 (torch._subclasses.fake_tensor: shapes,
# dtypes and devices are propagated, nothing is computed), with the puzzle embedding and both
# cross-entropies, through ops.py's dispatch with the extension's path selected as it is on CUDA:
# the trm:: custom ops then run their fake implementations, and a stand-in extension that raises
# when called shows that nothing reaches a compiled kernel. A tensor left on the CPU fails: either
# PyTorch's device check raises (FakeTensorDeviceMismatchError), or DeviceWatch below sees an op
# with a CPU tensor among its inputs or outputs (which also catches 0-dim CPU tensors, which PyTorch
# lets mix with CUDA tensors), and every result is checked to be on the device.
# Needs a CUDA build of torch (fake CUDA tensors need its device type), not a GPU; backward needs a
# CUDA context, so the backward pass is not rehearsed.
#
# What cannot be rehearsed here: the host-side parts of evaluation (TRM.solve's `bool(halted.all())`
# and `while len(rows)`, which need values; evaluate.py's .cpu().tolist() of the sums, the ARC
# voting, traces and progress bar), the timing (torch.cuda.synchronize), the backward pass, and
# the numbers of the CUDA kernels themselves (tests/test_ext.py, on a GPU).
import contextlib
import os

import pytest
import torch
import torch.nn as nn

import configurator
import ops
from conftest import ROOT
from model import TRM, TRMConfig

pytestmark = pytest.mark.skipif(
    torch.version.cuda is None,
    reason=f"torch {torch.__version__} is a build without CUDA (torch.version.cuda is None): fake 'cuda' "
           "tensors need a CUDA build of torch (a GPU is not needed)")

if torch.version.cuda is not None:
    from torch._subclasses.fake_tensor import (DataDependentOutputException, FakeTensorDeviceMismatchError,
                                               FakeTensorMode)
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode, ShapeEnv
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    NEEDS_VALUES = (DataDependentOutputException, GuardOnDataDependentSymNode)
else:
    TorchDispatchMode = object

# config -> (vocab_size, seq_len) of its data: the mini Sudoku's 6x6 grids, ARC's 30x30 grids
CONFIGS = {"sudoku_mini.py": (8, 36), "sudoku_mini_urm.py": (8, 36), "sudoku_mini_hrm.py": (8, 36),
           "arc_mini.py": (12, 900)}
PUZZLES = 100  # puzzle identifiers


class CpuTensorError(AssertionError):
    pass


class DeviceWatch(TorchDispatchMode):
    """Fails on any op with a tensor off the CUDA device among its inputs or outputs, except an
    explicit copy from the device to the host (.cpu(): evaluate.py's answers). Counts the trm:: ops."""

    def __init__(self):
        super().__init__()
        self.trm_calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name.startswith("trm."):
            op = name.split(".")[1]
            self.trm_calls[op] = self.trm_calls.get(op, 0) + 1
        out = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        to_host = name.split(".")[1] in ("to", "_to_copy") and all(t.device.type == "cuda" for t in inputs)
        off = [t for t in inputs + ([] if to_host else outputs) if t.device.type != "cuda"]
        if off:
            raise CpuTensorError(f"{name} has tensor(s) on {sorted({str(t.device) for t in off})}: "
                                 f"shapes {[tuple(t.shape) for t in off]}")
        return out


class RealExtensionCalled:
    """Stands in for the compiled extension, built with CUDA: under fake tensors the trm:: ops must
    never reach it."""
    with_cuda = True

    def __getattr__(self, name):
        raise AssertionError(f"the compiled extension's {name} was called on fake tensors")


@pytest.fixture(params=["ext", "torch"])
def path(request, monkeypatch):
    """The ops' path: 'ext' as 'auto' chooses it on CUDA (AUTO_PATHS), or the reference (TRM_USE_EXT=off).
    The extension's check cannot run without a GPU: it is taken as passed."""
    monkeypatch.setattr(ops, "_ext", RealExtensionCalled())
    monkeypatch.setattr(ops, "_checked", {"cuda": None})
    monkeypatch.setattr(ops, "_imposed", {})
    monkeypatch.setattr(ops, "_forced", None)
    monkeypatch.setattr(ops, "USE_EXT", "auto" if request.param == "ext" else "off")
    paths = ops.op_paths("cuda")
    assert {k: paths[k] for k in ops.OPS} == dict.fromkeys(ops.OPS, request.param), paths
    return request.param


def settings(config: str, loss_type: str) -> dict:
    """The recipe as train.py applies it, in bfloat16, with a puzzle embedding (one hidden vector
    wide where the recipe has none: a one-position prefix, valid for all three architectures)."""
    from test_configs import train_defaults
    defaults = train_defaults()
    s = {**defaults, **configurator.parse(defaults, [os.path.join(ROOT, "config", config)])}
    s.update(loss_type=loss_type, forward_dtype="bfloat16")
    if s["puzzle_emb_ndim"] == 0:
        s.update(puzzle_emb_ndim=s["hidden_size"], puzzle_emb_len=0)
    return s


def fake_cuda_model(cfg: TRMConfig, mode) -> TRM:
    """The model built on the CPU (its initialisation draws values, which fake tensors do not
    have), turned into fake tensors, then moved to 'cuda' inside the mode as train.py moves it."""
    model = TRM(cfg)
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = nn.Parameter(mode.from_tensor(p.detach(), static_shapes=True),
                                                         requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = mode.from_tensor(b, static_shapes=True)
    with mode:  # tensor by tensor: nn.Module.to cannot swap fake tensors in place
        for module in model.modules():
            for name, p in list(module._parameters.items()):
                if p is not None:
                    module._parameters[name] = nn.Parameter(p.to("cuda"), requires_grad=p.requires_grad)
            for name, b in list(module._buffers.items()):
                if b is not None:
                    module._buffers[name] = b.to("cuda")
    return model


def fake_cuda_setup(config: str, loss_type: str):
    """(model, batch, settings, mode) for one recipe: a fake-tensor mode that rejects real tensors,
    with a shape environment so that boolean-mask compaction (halting on q) gets symbolic sizes."""
    s = settings(config, loss_type)
    vocab, seq = CONFIGS[config]
    cfg = TRMConfig.from_settings(s, vocab_size=vocab, seq_len=seq, num_puzzle_identifiers=PUZZLES)
    assert cfg.forward_dtype == "bfloat16" and cfg.puzzle_emb_ndim > 0
    torch.manual_seed(0)
    mode = FakeTensorMode(allow_non_fake_inputs=False, shape_env=ShapeEnv())
    model = fake_cuda_model(cfg, mode)
    B = s["global_batch_size"]
    with mode:
        labels = torch.randint(0, vocab, (B, seq), dtype=torch.int32, device="cuda")
        batch = {"inputs": torch.randint(0, vocab, (B, seq), dtype=torch.int32, device="cuda"),
                 "labels": torch.where(labels == 0, ops.IGNORE_INDEX, labels),
                 "puzzle_identifiers": torch.randint(0, PUZZLES, (B,), dtype=torch.int32, device="cuda")}
    return model, batch, s, mode


def assert_on_device(what, tree):
    """Every tensor in a nested structure of dicts, lists, tuples and dataclasses is on 'cuda'."""
    if isinstance(tree, torch.Tensor):
        assert tree.device.type == "cuda", f"{what} is on {tree.device}"
    elif isinstance(tree, dict):
        for k, v in tree.items():
            assert_on_device(f"{what}[{k!r}]", v)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            assert_on_device(f"{what}[{i}]", v)
    elif hasattr(tree, "__dataclass_fields__"):
        for k in tree.__dataclass_fields__:
            assert_on_device(f"{what}.{k}", getattr(tree, k))


def rehearse_training_forward(model, batch, s, mode, watch):
    """Two ACT calls in training mode (the carry rolls over), then the puzzle table's sign-SGD step
    from gradients put where backward would leave them. Returns (carry, loss, metrics, outputs)."""
    from optim import SignSGD
    model.train()
    with mode, watch:
        carry = model.initial_carry(batch)
        for _ in range(2):
            carry, loss, metrics, outputs = model(carry, batch)
        assert_on_device("carry", carry)
        assert_on_device("loss", loss)
        assert_on_device("metrics", metrics)
        assert_on_device("outputs", outputs)
        emb = model.puzzle_emb
        assert emb.local_weights.requires_grad and emb.local_weights.device.type == "cuda"
        emb.local_weights.grad = torch.ones_like(emb.local_weights)  # as backward would leave it
        SignSGD(emb, lr=s["puzzle_emb_lr"], weight_decay=s["puzzle_emb_weight_decay"]).step()
        assert emb.weights.device.type == "cuda" and emb.weights.dtype == torch.float32
    return carry, loss, metrics, outputs


@pytest.mark.parametrize("loss_type", ["stablemax", "softmax"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_training_forward_on_fake_cuda(config, loss_type, path):
    model, batch, s, mode = fake_cuda_setup(config, loss_type)
    watch = DeviceWatch()
    carry, loss, metrics, outputs = rehearse_training_forward(model, batch, s, mode, watch)
    B, L = batch["inputs"].shape
    assert outputs["logits"].shape == (B, L, CONFIGS[config][0]) and outputs["logits"].dtype == torch.bfloat16
    assert carry.z_H.dtype == torch.bfloat16 and loss.shape == ()
    assert metrics["lm_loss"].dtype == (torch.float64 if loss_type == "stablemax" else torch.float32)
    if path == "ext":  # one fused cross-entropy and one gather per ACT call, one sign-SGD step
        assert watch.trm_calls == {"ce_forward": 2, "gather_rows": 2, "sparse_sign_sgd": 1}, watch.trm_calls
    else:
        assert watch.trm_calls == {}


@pytest.mark.parametrize("loss_type", ["stablemax", "softmax"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_evaluation_loop_on_fake_cuda(config, loss_type, path):
    """evaluate.py's evaluate_split, its device side: model.solve's fixed-depth loop (every row runs
    halt_max_steps ACT steps in eval mode, under inference_mode) with evaluate.py's StepRecorder as
    on_step, and the per-batch metric vector it sums. TRM.solve itself is run as far as it goes
    without values: its first step, up to the `bool(carry.halted.all())` that asks the host; with
    halt_on_q, its first step including the compaction of the halted rows, up to `while len(rows)`."""
    from evaluate import METRICS, StepRecorder
    model, batch, s, mode = fake_cuda_setup(config, loss_type)
    watch = DeviceWatch()
    model.eval()
    depth = model.cfg.halt_max_steps
    with mode, watch, torch.inference_mode():
        # TRM.solve's loop without the host's stopping test (all rows halt at halt_max_steps)
        record = StepRecorder(keep_answers=True, timed=False, device="cuda")
        carry = model.initial_carry(batch)
        for step in range(1, depth + 1):
            carry, _, metrics, outputs = model(carry, batch)
            record(step, carry, metrics, outputs)
        assert_on_device("carry", carry)
        assert_on_device("metrics", metrics)
        assert_on_device("outputs", outputs)
        assert_on_device("step sums", record.sums)
        assert_on_device("halts_on_q", model.halts_on_q(outputs))
        vec = torch.stack([metrics[k].double() for k in METRICS])  # evaluate_split's per-batch sums
        assert vec.device.type == "cuda" and vec.shape == (len(METRICS),)
        assert len(record.preds) == depth and all(p.device.type == "cpu" for p in record.preds)  # .cpu(): host

        # TRM.solve itself, both ways, as far as fake tensors go
        for halt_on_q in (False, True):
            steps = []
            try:
                _, metrics, final = model.solve(batch, on_step=lambda *a: steps.append(a), halt_on_q=halt_on_q)
                assert_on_device(f"solve(halt_on_q={halt_on_q})", (metrics, final))
            except NEEDS_VALUES:
                pass  # a host-side test of values: as far as it can go here
            assert steps, f"solve(halt_on_q={halt_on_q}) stopped before its first step"
            assert_on_device(f"solve(halt_on_q={halt_on_q}) step 1", steps[0][1:])
    if path == "ext":
        assert watch.trm_calls["ce_forward"] == depth + 2 and watch.trm_calls["gather_rows"] == depth + 2
        assert "sparse_sign_sgd" not in watch.trm_calls and "ce_backward" not in watch.trm_calls
    else:
        assert watch.trm_calls == {}


@pytest.mark.parametrize("bug", ["carry steps made on the CPU", "a 0-dim CPU tensor added to the loss"])
def test_a_tensor_left_on_the_cpu_fails_the_rehearsal(bug, monkeypatch):
    """The rehearsal's own check: a tensor created without a device fails it, both where PyTorch's
    device check catches it and where it would not (a 0-dim CPU tensor mixes with CUDA ones)."""
    monkeypatch.setattr(ops, "_ext", RealExtensionCalled())
    monkeypatch.setattr(ops, "_checked", {"cuda": None})
    monkeypatch.setattr(ops, "USE_EXT", "auto")
    if bug == "carry steps made on the CPU":
        initial_carry = TRM.initial_carry

        def buggy_initial_carry(self, batch):
            carry = initial_carry(self, batch)
            carry.steps = torch.zeros(batch["inputs"].shape[0], dtype=torch.int32)  # no device=
            return carry
        monkeypatch.setattr(TRM, "initial_carry", buggy_initial_carry)
    else:
        cross_entropy = ops.cross_entropy
        monkeypatch.setattr(ops, "cross_entropy", lambda *a, **k: cross_entropy(*a, **k) + torch.zeros(()))
    model, batch, s, mode = fake_cuda_setup("arc_mini.py", "stablemax")
    with pytest.raises((CpuTensorError, FakeTensorDeviceMismatchError), match="cpu"):
        rehearse_training_forward(model, batch, s, mode, DeviceWatch())
    # without the watch: PyTorch's device check catches the first, and lets the 0-dim one through
    model, batch, s, mode = fake_cuda_setup("arc_mini.py", "stablemax")
    if bug == "carry steps made on the CPU":
        with pytest.raises(FakeTensorDeviceMismatchError, match="cpu"):
            rehearse_training_forward(model, batch, s, mode, contextlib.nullcontext())
    else:
        _, loss, _, _ = rehearse_training_forward(model, batch, s, mode, contextlib.nullcontext())
        assert loss.device.type == "cuda"
