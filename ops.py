"""
The two custom ops of TRM, in plain PyTorch:
- cross-entropy per position, stablemax (the reference's default) or softmax;
- the puzzle-embedding table's gather and its sparse sign-SGD update.
model.py and optim.py call only these functions; each runs on the csrc/ extension (C++/OpenMP on
the CPU, CUDA kernels on the GPU) or on the pure-PyTorch reference next to it (the _*_ref
functions), which the extension is tested against.

Which of the two each op runs on (its path) is decided per device type from a fixed table
(AUTO_PATHS), never by timing at run time, so every process of every run on a device type takes
the same paths. op_paths(device_type) says which paths run and why; set_op_paths imposes the paths
a run recorded (a resumed run keeps them); TRM_USE_EXT=on/off overrides both. See load_ext.

The extension's functions are called through the custom ops trm::ce_forward, trm::ce_backward,
trm::gather_rows and trm::sparse_sign_sgd (torch.library): their real implementations call the
compiled module, their fake implementations only say the shape, dtype and device of the result,
so the ext path also runs on fake and meta tensors and under torch.compile, and the fused
cross-entropy's backward is registered with torch.library.register_autograd.

Before the extension computes anything on a device type for the first time, it is checked
against the reference there on small inputs (check_ext: values and gradients of both
cross-entropies, gather, sign-SGD with repeated ids). On a mismatch or an error, 'auto' prints one
warning and runs the reference on that device from then on; 'on' raises.
"""
import contextlib
import itertools
import logging
import os
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # label of positions that carry no loss (padding, ignored cells)

# -----------------------------------------------------------------------------
# which path each op takes: fixed per device type, decided once

OPS = ("stablemax", "softmax", "gather", "sign_sgd")  # the four ops that have two paths

# 'auto': each op on the path AUTO_PATHS names for the device type (or the paths set_op_paths
# imposed), the extension only where it builds and passes its check. 'on': every op on the
# extension on every device, or an error; 'off': every op on the reference. Read at every call,
# so ops.USE_EXT = 'off' works too.
USE_EXT = os.environ.get("TRM_USE_EXT", "auto")

# The paths of 'auto', per device type; a device type not named here runs the reference.
# - CPU: the reference for all four. Each op alone is faster on the extension (BENCHMARKS.md,
#   2-core CPU: stablemax cross-entropy 10.5x, softmax 1.9x, gather 1.4x, sign-SGD 11.8x), but a
#   whole training step is not (0.99x: the matmuls dominate it), and building the extension costs
#   a minute.
# - CUDA: the extension for all four. NOT measured (no GPU has run this code yet): chosen because
#   each op alone measured faster on the extension on the CPU, and the fused cross-entropy keeps no
#   [N, V] float64 intermediates (the stablemax reference computes in float64, slow on most GPUs).
#   Re-check with `python bench.py` on a GPU, and change this table where an op measures slower.
AUTO_PATHS = {
    "cpu": {"stablemax": "torch", "softmax": "torch", "gather": "torch", "sign_sgd": "torch"},
    "cuda": {"stablemax": "ext", "softmax": "ext", "gather": "ext", "sign_sgd": "ext"},
}

_ext = None          # the loaded module
_ext_error = None    # why it is unavailable (None until a load was tried and failed)
_forced = None       # set by use_backend(): 'torch' or 'ext' inside the context
_checked = {}        # device type -> None (the extension agrees with the reference there) or what differed
_imposed = {}        # device type -> {op: 'ext' or 'torch'}: the paths set_op_paths imposed under 'auto'
_impl = None         # the module the trm:: ops' real implementations call instead of _ext (check_ext)
CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")


def _say_unavailable(reason: str) -> None:
    """The one line that says the reference runs; printed once, by the master process only."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trm: C++ extension unavailable ({reason}); using the PyTorch reference ops", file=sys.stderr)


def load_ext():
    """
    The compiled csrc/ extension, built on the first call with torch.utils.cpp_extension.load
    (cached in torch's build directory, so later processes only load it), or None when
    TRM_NO_EXT=1 or the build fails; either way the reason is printed once per process.
    The CUDA kernels are compiled in only where torch has CUDA and a GPU is present.
    """
    global _ext, _ext_error
    if _ext is not None or _ext_error is not None:
        return _ext
    if os.environ.get("TRM_NO_EXT", "0") not in ("", "0"):
        _ext_error = "TRM_NO_EXT is set"
    else:
        try:
            # importing cpp_extension under a CUDA build of torch on a machine without a GPU logs a
            # warning about the missing CUDA runtime: irrelevant here, where CUDA is then not used
            quiet = logging.getLogger("torch.utils.cpp_extension")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                from torch.utils.cpp_extension import load
            finally:
                quiet.setLevel(level)
            with_cuda = bool(torch.cuda.is_available() and torch.version.cuda)
            sources = [os.path.join(CSRC, "trm_ops.cpp")]
            cflags = ["-O3", "-fopenmp"]
            if with_cuda:
                sources.append(os.path.join(CSRC, "trm_ops_cuda.cu"))
                cflags.append("-DWITH_CUDA")
            _ext = load(name="trm_ops", sources=sources, extra_cflags=cflags, extra_ldflags=["-fopenmp"],
                        extra_cuda_cflags=["-O3"], extra_include_paths=[CSRC], with_cuda=with_cuda,
                        verbose=False)
        except Exception as e:  # a missing compiler, a compile error, ...
            _ext_error = f"{type(e).__name__}: {e}".strip() or type(e).__name__
    if _ext is None:
        _say_unavailable(_ext_error.splitlines()[0][:200])
    return _ext


def _require_ext():
    ext = load_ext()
    if ext is None:
        raise RuntimeError(f"trm: the C++ extension cannot be used: {_ext_error}")
    return ext


def _mode() -> str:
    mode = _forced if _forced is not None else USE_EXT
    if mode not in ("torch", "ext", "off", "on", "auto"):
        raise ValueError(f"TRM_USE_EXT / ops.USE_EXT must be 'auto', 'on' or 'off', got {mode!r}")
    return {"torch": "off", "ext": "on"}.get(mode, mode)


def _resolve(device_type: str) -> tuple[dict, str, str]:
    """(paths {op: 'ext' or 'torch'}, where they come from, the extension's state) on device_type.
    Builds, loads and checks the extension only when some op asks for it; everything is cached, so
    after the first call this is a few dictionary look-ups."""
    mode = _mode()
    if mode == "off":
        wanted, source = dict.fromkeys(OPS, "torch"), "use_backend('torch')" if _forced else "TRM_USE_EXT=off"
    elif mode == "on":
        wanted, source = dict.fromkeys(OPS, "ext"), "use_backend('ext')" if _forced else "TRM_USE_EXT=on"
    elif device_type in _imposed:
        wanted, source = _imposed[device_type], "set_op_paths"
    else:
        wanted, source = AUTO_PATHS.get(device_type, dict.fromkeys(OPS, "torch")), "AUTO_PATHS"
    if "ext" not in wanted.values():
        return dict(wanted), source, "not needed"
    ext = _require_ext() if mode == "on" else load_ext()
    if ext is None:
        state = f"unavailable: {_ext_error.splitlines()[0][:200]}"
    elif device_type not in ("cpu", "cuda"):
        state = f"unavailable: no kernels for {device_type}"
    elif device_type == "cuda" and not ext.with_cuda:
        state = "unavailable: built without CUDA"
    elif _passes_check(ext, device_type, strict=mode == "on"):
        return dict(wanted), source, "passed"
    else:
        state = f"failed: {_checked[device_type]}"
    return dict.fromkeys(OPS, "torch"), source, state


def op_paths(device_type: str = "cpu") -> dict:
    """
    What each op runs on now for tensors on device_type, and why:
        {'stablemax': 'ext' | 'torch', 'softmax': ..., 'gather': ..., 'sign_sgd': ...,
         'device_type': device_type,
         'source': 'AUTO_PATHS' | 'set_op_paths' | 'TRM_USE_EXT=on' | 'TRM_USE_EXT=off'
                   | "use_backend('ext')" | "use_backend('torch')",
         'ext_check': 'passed' | 'failed: <first difference>' | 'unavailable: <reason>' | 'not needed'}
    An op asked to run on the extension runs on the reference where ext_check is not 'passed'
    ('auto' only: under 'on' that is a RuntimeError). The first call for a device type where an op
    asks for the extension builds (or loads) and checks it: call this once at start-up, before
    torch.compile, and record the result (it is plain strings, JSON-ready). The same on every rank.
    """
    paths, source, state = _resolve(device_type)
    return {**paths, "device_type": device_type, "source": source, "ext_check": state}


def set_op_paths(device_type: str, paths: dict | None) -> None:
    """
    Impose the paths of device_type under 'auto' (TRM_USE_EXT unset or 'auto'), in place of
    AUTO_PATHS: e.g. the op_paths(...) a checkpoint recorded, so that a resumed run keeps them.
    paths: {op: 'ext' or 'torch'} for some of OPS (the rest keep AUTO_PATHS'), or a whole
    op_paths() dict (its 'source' and 'ext_check' are ignored; its 'device_type' must be
    device_type: ValueError otherwise). None: back to AUTO_PATHS. Paths recorded on another device
    type are imposed with set_op_paths(recorded['device_type'], recorded): they then apply only
    where the ops run on that device type.
    TRM_USE_EXT=on / off (and use_backend) still override. Builds nothing: the next op or
    op_paths() call does, where an op is asked to run on the extension (which still falls back
    to the reference, with one warning, where the extension is unavailable or fails its check).
    """
    if paths is None:
        _imposed.pop(device_type, None)
        return
    if paths.get("device_type", device_type) != device_type:
        raise ValueError(f"set_op_paths: these paths were recorded for {paths['device_type']!r}, "
                         f"not {device_type!r}")
    given = {k: v for k, v in paths.items() if k not in ("device_type", "source", "ext_check")}
    unknown = sorted(set(given) - set(OPS))
    if unknown:
        raise ValueError(f"set_op_paths: unknown op(s) {unknown}: expected some of {list(OPS)}")
    bad = {k: v for k, v in given.items() if v not in ("ext", "torch")}
    if bad:
        raise ValueError(f"set_op_paths: a path is 'ext' or 'torch', got {bad}")
    _imposed[device_type] = {**AUTO_PATHS.get(device_type, dict.fromkeys(OPS, "torch")), **given}


def backend(device_type: str = "cpu") -> str:
    """'ext' if some op runs on the extension (csrc/) for tensors on device_type, else 'torch'
    (every op on the reference below); op_paths says which. May build and check the extension."""
    return "ext" if "ext" in _resolve(device_type)[0].values() else "torch"


@contextlib.contextmanager
def use_backend(name: str):
    """Run every op inside on 'torch' (the reference) or 'ext' (on every device; RuntimeError if
    it cannot be built or fails its check)."""
    global _forced
    if name not in ("torch", "ext"):
        raise ValueError(f"backend must be 'torch' or 'ext', got {name!r}")
    if name == "ext":
        _require_ext()
    previous, _forced = _forced, name
    try:
        yield
    finally:
        _forced = previous


def _use_ext(op: str, device_type: str) -> bool:
    """Whether op runs on the extension for tensors on device_type (else on the reference)."""
    return _resolve(device_type)[0][op] == "ext"


def _passes_check(ext, device_type: str, strict: bool) -> bool:
    """Whether the extension may run on device_type: check_ext once per device type and process.
    A failure warns once (strict: raises RuntimeError)."""
    if device_type not in _checked:
        _checked[device_type] = check_ext(ext, device_type)
        if _checked[device_type] is not None and not strict and int(os.environ.get("RANK", "0")) == 0:
            print(f"trm: warning: the C++ extension disagrees with the PyTorch reference on {device_type} "
                  f"({_checked[device_type]}); using the reference ops there", file=sys.stderr)
    if _checked[device_type] is not None and strict:
        raise RuntimeError(f"trm: the C++ extension fails its check on {device_type}: {_checked[device_type]}")
    return _checked[device_type] is None


@contextlib.contextmanager
def _implemented_by(ext):
    """Inside, the trm:: ops' real implementations call ext (a module under check) instead of the
    loaded extension."""
    global _impl
    previous, _impl = _impl, ext
    try:
        yield
    finally:
        _impl = previous


def _real_tensors():
    """Inside, factory functions make real tensors even under a FakeTensorMode (the check runs on
    real numbers whenever an op is first reached)."""
    try:
        from torch._subclasses.fake_tensor import unset_fake_temporarily
    except ImportError:  # a torch without it: nothing to unset
        return contextlib.nullcontext()
    return unset_fake_temporarily()


def check_ext(ext, device) -> str | None:
    """Run the extension (through the trm:: ops) and the reference side by side on small inputs on
    device: values and gradients of both cross-entropies (float32 and bfloat16 logits), the row
    gather, and a sign-SGD step with repeated ids and exact zero gradients. None when they agree,
    else a short account of the first difference (or error). Draws from its own generator: a run's
    random stream is untouched."""
    def differ(name, got, want, rtol, atol):
        got, want = got.detach().double().cpu(), want.detach().double().cpu()
        if got.shape != want.shape:
            return f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
        if not torch.allclose(got, want, rtol=rtol, atol=atol):
            return f"{name}: max |difference| {(got - want).abs().max().item():.3g}"
        return None

    g = torch.Generator().manual_seed(1234)
    try:
        with _real_tensors(), _implemented_by(ext), torch.inference_mode(False), torch.enable_grad():
            x = torch.randn(45, 12, generator=g) * 4
            x[0, :3] = torch.tensor([0.0, 1.0, -1.0])  # the stablemax branch point, and ties
            labels = torch.randint(0, 12, (45,), generator=g)
            labels[::7] = IGNORE_INDEX
            weight = torch.rand(45, generator=g)
            refs = {"stablemax": _stablemax_ref, "softmax": _softmax_ref}
            for kind, dtype in itertools.product(refs, (torch.float32, torch.bfloat16)):
                tol = 1e-5 if dtype == torch.float32 else 1e-2
                name = f"{kind} cross-entropy, {str(dtype)[6:]}"
                a = x.to(device, dtype).detach().clone().requires_grad_()
                got = torch.ops.trm.ce_forward(kind, a, labels.to(device), IGNORE_INDEX)
                (got.double() * weight.to(device).double()).sum().backward()
                b = x.to(dtype).double().detach().requires_grad_()
                want = refs[kind](b, labels)
                (want.double() * weight.double()).sum().backward()
                for what, u, v in (("values", got, want), ("gradients", a.grad, b.grad)):
                    bad = differ(f"{name} {what}", u, v, rtol=tol, atol=tol * 1e-2)
                    if bad:
                        return bad
            table = torch.randn(40, 8, generator=g)
            ids = torch.tensor([3, 7, 3, 0, 39, 7, 3, 12])
            grads = torch.randn(len(ids), 8, generator=g)
            grads[[0, 2, 6], 0] = torch.tensor([1.0, -1.0, 0.0])  # id 3, columns 0 and 1: they sum to
            grads[[0, 2, 6], 1] = torch.tensor([0.5, 0.25, -0.75])  # exactly 0, so only the decay applies
            for id_dtype in (torch.int32, torch.int64):
                d_ids = ids.to(device, id_dtype)
                bad = differ(f"gather ({str(id_dtype)[6:]} ids)", torch.ops.trm.gather_rows(table.to(device), d_ids),
                             _gather_rows_ref(table, ids), 0, 0)
                if bad:
                    return bad
                got, want = table.to(device).contiguous(), table.clone()
                torch.ops.trm.sparse_sign_sgd(got, d_ids, grads.to(device), 0.01, 0.1)
                _sparse_sign_sgd_ref(want, ids, grads, 0.01, 0.1)
                bad = differ(f"sign-SGD ({str(id_dtype)[6:]} ids)", got, want, 1e-6, 1e-7)
                if bad:
                    return bad
            if device_type_of(device) == "cuda":
                torch.cuda.synchronize(device)
    except Exception as e:  # a kernel that fails to launch, a missing function, ...
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
    return None


def device_type_of(device) -> str:
    return torch.device(device).type


# -----------------------------------------------------------------------------
# the extension's functions as custom ops: trm::ce_forward, trm::ce_backward, trm::gather_rows,
# trm::sparse_sign_sgd. The real implementations call the compiled module (after its own argument
# checks); the fake ones (FakeTensorMode, meta tensors, torch.compile's tracing) check the same
# things (shapes, dtypes, one device) and return empty tensors of the result's shape, dtype and
# device, so that the ext path can be rehearsed where no kernel can run.

def _impl_ext():
    return _impl if _impl is not None else _require_ext()


def _check_ce_args(logits: Tensor, labels: Tensor) -> None:
    """The C++ extension's check_ce_args, for the fake implementations."""
    if logits.dim() != 2 or logits.dtype not in (torch.float32, torch.bfloat16) or logits.shape[1] == 0:
        raise RuntimeError(f"trm_ops: logits must be [N, V>0] float32 or bfloat16, got {tuple(logits.shape)} "
                           f"{logits.dtype}")
    if labels.dim() != 1 or labels.shape[0] != logits.shape[0] or labels.dtype not in (torch.int32, torch.int64):
        raise RuntimeError(f"trm_ops: labels must be [N] int32 or int64 with N = {logits.shape[0]}, got "
                           f"{tuple(labels.shape)} {labels.dtype}")
    if labels.device != logits.device:
        raise RuntimeError(f"trm_ops: logits and labels on different devices ({logits.device}, {labels.device})")


def _check_table_ids(table: Tensor, ids: Tensor) -> None:
    """The C++ extension's check_table_ids, for the fake implementations."""
    if table.dim() != 2 or table.dtype != torch.float32:
        raise RuntimeError(f"trm_ops: table must be [rows, D] float32, got {tuple(table.shape)} {table.dtype}")
    if ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64):
        raise RuntimeError(f"trm_ops: ids must be [B] int32 or int64, got {tuple(ids.shape)} {ids.dtype}")
    if ids.device != table.device:
        raise RuntimeError(f"trm_ops: table and ids on different devices ({table.device}, {ids.device})")


@torch.library.custom_op("trm::ce_forward", mutates_args=())
def _ce_forward(kind: str, logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Per-row cross-entropy [N] in float32 of logits [N, V] (float32 or bfloat16, contiguous) and
    labels [N] (int32 or int64), 0 where the label is ignore_index. Keeps nothing for backward."""
    return _impl_ext().ce_forward(kind, logits, labels, ignore_index)


@_ce_forward.register_fake
def _(kind, logits, labels, ignore_index):
    _check_ce_args(logits, labels)
    return logits.new_empty(logits.shape[:1], dtype=torch.float32)


@torch.library.custom_op("trm::ce_backward", mutates_args=())
def _ce_backward(kind: str, grad_loss: Tensor, logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """d(sum grad_loss * loss)/d logits [N, V] in the dtype of logits; recomputes the row sums."""
    return _impl_ext().ce_backward(kind, grad_loss, logits, labels, ignore_index)


@_ce_backward.register_fake
def _(kind, grad_loss, logits, labels, ignore_index):
    _check_ce_args(logits, labels)
    if grad_loss.shape != logits.shape[:1] or grad_loss.device != logits.device:
        raise RuntimeError(f"trm_ops: grad_loss must be [N] on {logits.device}, got {tuple(grad_loss.shape)} "
                           f"on {grad_loss.device}")
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _ce_setup_context(ctx, inputs, output):
    kind, logits, labels, ignore_index = inputs
    ctx.kind, ctx.ignore_index = kind, ignore_index
    ctx.save_for_backward(logits, labels)


def _ce_backward_rule(ctx, grad):
    logits, labels = ctx.saved_tensors
    grad_logits = torch.ops.trm.ce_backward(ctx.kind, grad.contiguous(), logits, labels, ctx.ignore_index)
    return None, grad_logits, None, None


_ce_forward.register_autograd(_ce_backward_rule, setup_context=_ce_setup_context)


@torch.library.custom_op("trm::gather_rows", mutates_args=())
def _gather_rows(table: Tensor, ids: Tensor) -> Tensor:
    """table[ids] for a float32 table [rows, D] and ids [B] (int32 or int64), as a new tensor."""
    return _impl_ext().gather_rows(table, ids)


@_gather_rows.register_fake
def _(table, ids):
    _check_table_ids(table, ids)
    return table.new_empty((ids.shape[0], table.shape[1]))


@torch.library.custom_op("trm::sparse_sign_sgd", mutates_args=("table",))
def _sparse_sign_sgd(table: Tensor, ids: Tensor, grads: Tensor, lr: float, weight_decay: float) -> None:
    """The sign-SGD step of _sparse_sign_sgd_ref on table, in place."""
    _impl_ext().sparse_sign_sgd_(table, ids, grads, lr, weight_decay)


@_sparse_sign_sgd.register_fake
def _(table, ids, grads, lr, weight_decay):
    _check_table_ids(table, ids)
    if grads.dim() != 2 or tuple(grads.shape) != (ids.shape[0], table.shape[1]) or grads.device != table.device:
        raise RuntimeError(f"trm_ops.sparse_sign_sgd_: grads must be [{ids.shape[0]}, {table.shape[1]}] on "
                           f"{table.device}, got {tuple(grads.shape)} on {grads.device}")


def _fused_cross_entropy(kind: str, logits: Tensor, labels: Tensor, ignore_index: int):
    """The extension's loss [...] in float32, or None where the reference has to run (the op's path
    is the reference, a dtype or shape the extension does not take)."""
    if logits.dim() == 0 or logits.shape[-1] == 0 or labels.shape != logits.shape[:-1]:
        return None
    if logits.dtype not in (torch.float32, torch.bfloat16) or labels.dtype not in (torch.int32, torch.int64):
        return None
    if not _use_ext(kind, logits.device.type):
        return None
    V = logits.shape[-1]
    loss = torch.ops.trm.ce_forward(kind, logits.reshape(-1, V).contiguous(), labels.reshape(-1).contiguous(),
                                    int(ignore_index))
    return loss.view(labels.shape)


# -----------------------------------------------------------------------------
# cross-entropy

def stablemax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """
    Stablemax cross-entropy (below), on the extension where that is its path (op_paths): it
    computes in float32 and the result is returned in float64 like the reference's (at the ARC
    shape within 1e-6 relative per position of the float64 reference: tests/test_ext.py).
    """
    loss = _fused_cross_entropy("stablemax", logits, labels, ignore_index)
    if loss is None:
        return _stablemax_ref(logits, labels, ignore_index)
    return loss.to(torch.float64)


def _stablemax_ref(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """
    Reference. Cross-entropy under stablemax, the softmax substitute of "Grokking at the edge of numerical
    stability": s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0, p_i = s(x_i) / sum_j s(x_j).
    logits [..., V] (any float dtype), labels [...] (integer) -> loss [...] in float64, 0 where
    the label is ignore_index. Computed in float64 like the reference.
    """
    x = logits.to(torch.float64)
    # Each branch sees only inputs from its own side of 0, so the branch that `where` drops stays
    # finite and its gradient is 0, not 0 * inf = NaN (e.g. 1 / (1 - x) at x = 1). The sides are cut
    # with `where`, not clamp: at x = 0 exactly, clamp's gradient differs between torch versions.
    # The 1e-30 is the reference's guard against division by zero; it never changes a value here.
    nonneg = x >= 0
    s = torch.where(nonneg, torch.where(nonneg, x, 0.0) + 1, 1 / (1 - torch.where(nonneg, 0.0, x) + 1e-30))  # [..., V]
    logp = torch.log(s / s.sum(dim=-1, keepdim=True))  # [..., V]

    valid = labels != ignore_index  # [...]
    # ignored labels are -100: point them at class 0 so that gather stays in range
    safe_labels = torch.where(valid, labels, 0).long()
    logp_label = logp.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)  # [...]
    return torch.where(valid, -logp_label, 0.0)


def softmax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Ordinary cross-entropy in float32 (below), on the extension where that is its path."""
    loss = _fused_cross_entropy("softmax", logits, labels, ignore_index)
    return _softmax_ref(logits, labels, ignore_index) if loss is None else loss


def _softmax_ref(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Reference. Ordinary cross-entropy in float32. logits [..., V], labels [...] -> loss [...], 0 where ignored."""
    V = logits.shape[-1]
    loss = F.cross_entropy(logits.to(torch.float32).reshape(-1, V), labels.long().reshape(-1),
                           ignore_index=ignore_index, reduction="none")
    return loss.view(labels.shape)


def cross_entropy(kind: str, logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Per-position loss of the chosen kind, 'stablemax' or 'softmax' (the config's loss_type)."""
    if kind == "stablemax":
        return stablemax_cross_entropy(logits, labels, ignore_index)
    if kind == "softmax":
        return softmax_cross_entropy(logits, labels, ignore_index)
    raise ValueError(f"unknown cross-entropy kind {kind!r}: expected 'stablemax' or 'softmax'")


# -----------------------------------------------------------------------------
# puzzle-embedding table

def gather_rows(table: Tensor, ids: Tensor) -> Tensor:
    """The rows of table [N, D] named by ids [B] (int32 or int64), as a new tensor [B, D]."""
    if (table.dtype == torch.float32 and table.dim() == 2 and table.is_contiguous() and not table.requires_grad
            and ids.dim() == 1 and ids.dtype in (torch.int32, torch.int64)):
        if _use_ext("gather", table.device.type):
            return torch.ops.trm.gather_rows(table, ids)
    return _gather_rows_ref(table, ids)


def _gather_rows_ref(table: Tensor, ids: Tensor) -> Tensor:
    return table.index_select(0, ids)


@torch.no_grad()
def sparse_sign_sgd_(table: Tensor, ids: Tensor, grads: Tensor, lr: float, weight_decay: float) -> None:
    """The sign-SGD step below, on the extension where that is its path (bitwise the same result: it
    sums each column of a repeated id in the same ascending-value order, in float32)."""
    if (table.dtype == torch.float32 and table.dim() == 2 and table.is_contiguous()
            and ids.dim() == 1 and ids.dtype in (torch.int32, torch.int64) and grads.dim() == 2):
        if _use_ext("sign_sgd", table.device.type):
            torch.ops.trm.sparse_sign_sgd(table, ids, grads, float(lr), float(weight_decay))
            return
    _sparse_sign_sgd_ref(table, ids, grads, lr, weight_decay)


@torch.no_grad()
def _sparse_sign_sgd_ref(table: Tensor, ids: Tensor, grads: Tensor, lr: float, weight_decay: float) -> None:
    """
    One sign-SGD step on the rows of table [N, D] that ids [B] names, in place. grads [B, D] holds
    one gradient row per entry of ids; entries with equal ids are summed first, then every
    distinct row gets w = w * (1 - lr * weight_decay) - lr * sign(summed grad). Other rows are
    left alone (no decay either).

    The result depends only on the set of (id, grad row) pairs, not on their order: float sums
    depend on the order of their terms, and when a sum is close to 0 its sign can flip, so every
    column is summed in one canonical order (by id, then by value).
    """
    # Sort each column by value, then (stably) by id: afterwards row r holds the r-th smallest id
    # in every column, and equal ids are ordered by gradient value.
    order = grads.argsort(dim=0, stable=True)  # [B, D]
    order = order.gather(0, ids[order].argsort(dim=0, stable=True))  # [B, D]
    sorted_grads = grads.gather(0, order)  # [B, D]
    sorted_ids = ids.sort().values  # [B], equal to ids[order[:, c]] for every column c

    uids, counts = sorted_ids.long().unique_consecutive(return_counts=True)  # [U], [U]
    # segment_reduce adds each segment's rows one after another, without atomics, so the sum is
    # reproducible on the GPU as well (unlike scatter_add / index_add).
    summed = torch.segment_reduce(sorted_grads, "sum", lengths=counts, axis=0)  # [U, D]

    rows = table.index_select(0, uids)  # [U, D]
    rows.mul_(1 - lr * weight_decay).sub_(torch.sign(summed) * lr)
    table.index_copy_(0, uids, rows)
