"""
The two custom ops of TRM, in plain PyTorch:
- cross-entropy per position, stablemax (the reference's default) or softmax;
- the puzzle-embedding table's gather and its sparse sign-SGD update.
model.py and optim.py call only these functions; each runs on the csrc/ extension (C++/OpenMP on
the CPU, CUDA kernels on the GPU) when it is active, else on the pure-PyTorch reference next to
it (the _*_ref functions), which the extension is tested against. See load_ext / use_backend.

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
import time

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # label of positions that carry no loss (padding, ignored cells)

# -----------------------------------------------------------------------------
# the csrc/ extension: built on first use, never at import time

# 'auto': on CUDA the extension when it builds and passes its check, else the reference below; on
# the CPU the reference, because there the extension leaves a whole training step as fast as it
# was (BENCHMARKS.md) and building it costs a minute. 'on': the extension on every device, or an
# error; 'off': always the reference. Read at every call, so ops.USE_EXT = 'off' works too.
USE_EXT = os.environ.get("TRM_USE_EXT", "auto")
AUTO_DEVICES = ("cuda",)  # the device types where 'auto' runs the extension

_ext = None          # the loaded module
_ext_error = None    # why it is unavailable (None until a load was tried and failed)
_forced = None       # set by use_backend(): 'torch' or 'ext' inside the context
_checked = {}        # device type -> None (the extension agrees with the reference there) or what differed
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


def backend(device_type: str = "cpu") -> str:
    """Which implementation the ops run on now for tensors on device_type: 'ext' (csrc/) or
    'torch' (the reference below). May build and check the extension."""
    mode = _mode()
    if mode == "off" or (mode == "auto" and device_type not in AUTO_DEVICES):
        return "torch"
    ext = _require_ext() if mode == "on" else load_ext()
    if ext is None or (device_type == "cuda" and not ext.with_cuda) or device_type not in ("cpu", "cuda"):
        return "torch"
    return "ext" if _passes_check(ext, device_type, strict=mode == "on") else "torch"


@contextlib.contextmanager
def use_backend(name: str):
    """Run the ops inside on 'torch' (the reference) or 'ext' (on every device; RuntimeError if it
    cannot be built or fails its check)."""
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


def _ext_for(op, *tensors):
    """The extension if op should run on it for these tensors (all on one device), else None:
    the caller then runs the reference. Unless forced (use_backend('ext')), an op runs on the
    extension only where it measured faster than the reference on this device type (faster_paths)."""
    dev = tensors[0].device.type
    if backend(dev) != "ext":
        return None
    if _forced != "ext":
        if dev not in _fastest:
            _fastest[dev] = faster_paths(_ext, dev)
        if _fastest[dev][op] != "ext":
            return None
    return _ext


_fastest = {}  # device type -> {op: 'ext' or 'torch'}: which path each op takes there, measured once


def faster_paths(ext, device, repeats: int = 3) -> dict:
    """Time each op on the extension and on the reference side by side, on inputs the size of a
    training step's (ARC-like cross-entropy rows, a puzzle table of 100k rows), and name the
    faster path of each: {'stablemax': 'ext', 'softmax': 'torch', ...}. Each op takes at most a
    few hundred milliseconds here, once per process and device type. Draws from its own generator."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(65536, 12, generator=g).to(device).requires_grad_()
    labels = torch.randint(0, 12, (65536,), generator=g).to(device)
    table = torch.randn(100_000, 64, generator=g).to(device)
    ids = torch.randint(0, 100_000, (768,), generator=g).to(device)
    grads = torch.randn(768, 64, generator=g).to(device)

    def best_time(fn):
        times = []
        for _ in range(repeats + 1):  # the first call warms up
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            t = time.perf_counter()
            fn()
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t)
        return min(times[1:])

    def ce(kind, on_ext):
        def run():
            loss = (_FusedCrossEntropy.apply(ext, kind, logits, labels, IGNORE_INDEX) if on_ext else
                    (_stablemax_ref if kind == "stablemax" else _softmax_ref)(logits, labels))
            loss.sum().backward()
            logits.grad = None
        return run

    ops_ = {"stablemax": (ce("stablemax", True), ce("stablemax", False)),
            "softmax": (ce("softmax", True), ce("softmax", False)),
            "gather": (lambda: ext.gather_rows(table, ids), lambda: _gather_rows_ref(table, ids)),
            "sign_sgd": (lambda: ext.sparse_sign_sgd_(table, ids, grads, 0.0, 0.0),
                         lambda: _sparse_sign_sgd_ref(table, ids, grads, 0.0, 0.0))}
    with torch.inference_mode(False), torch.enable_grad():
        return {op: "ext" if best_time(on_ext) < best_time(on_ref) else "torch" for op, (on_ext, on_ref) in ops_.items()}


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


def check_ext(ext, device) -> str | None:
    """Run the extension and the reference side by side on small inputs on device: values and
    gradients of both cross-entropies (float32 and bfloat16 logits), the row gather, and a sign-SGD
    step with repeated ids and exact zero gradients. None when they agree, else a short account of
    the first difference (or error). Draws from its own generator: a run's random stream is untouched."""
    def differ(name, got, want, rtol, atol):
        got, want = got.detach().double().cpu(), want.detach().double().cpu()
        if got.shape != want.shape:
            return f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
        if not torch.allclose(got, want, rtol=rtol, atol=atol):
            return f"{name}: max |difference| {(got - want).abs().max().item():.3g}"
        return None

    g = torch.Generator().manual_seed(1234)
    try:
        with torch.inference_mode(False), torch.enable_grad():
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
                got = _FusedCrossEntropy.apply(ext, kind, a, labels.to(device), IGNORE_INDEX)
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
            bad = differ(f"gather ({str(id_dtype)[6:]} ids)", ext.gather_rows(table.to(device), d_ids),
                         _gather_rows_ref(table, ids), 0, 0)
            if bad:
                return bad
            got, want = table.to(device).contiguous(), table.clone()
            ext.sparse_sign_sgd_(got, d_ids, grads.to(device), 0.01, 0.1)
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


class _FusedCrossEntropy(torch.autograd.Function):
    """Per-row loss from ext.ce_forward (float32, saves only the inputs); its backward
    recomputes the row sums in ext.ce_backward."""

    @staticmethod
    def forward(ctx, ext, kind, logits, labels, ignore_index):
        ctx.ext, ctx.kind, ctx.ignore_index = ext, kind, ignore_index
        ctx.save_for_backward(logits, labels)
        return ext.ce_forward(kind, logits, labels, ignore_index)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        logits, labels = ctx.saved_tensors
        grad_logits = ctx.ext.ce_backward(ctx.kind, grad.contiguous(), logits, labels, ctx.ignore_index)
        return None, None, grad_logits, None, None


def _fused_cross_entropy(kind: str, logits: Tensor, labels: Tensor, ignore_index: int):
    """The extension's loss [...] in float32, or None where the reference has to run (extension
    off or unavailable, a dtype or device it does not take)."""
    if logits.dim() == 0 or logits.shape[-1] == 0 or labels.shape != logits.shape[:-1]:
        return None
    if logits.dtype not in (torch.float32, torch.bfloat16) or labels.dtype not in (torch.int32, torch.int64):
        return None
    ext = _ext_for(kind, logits, labels)
    if ext is None:
        return None
    V = logits.shape[-1]
    loss = _FusedCrossEntropy.apply(ext, kind, logits.reshape(-1, V).contiguous(),
                                    labels.reshape(-1).contiguous(), int(ignore_index))
    return loss.view(labels.shape)


# -----------------------------------------------------------------------------
# cross-entropy

def stablemax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """
    Stablemax cross-entropy (below), on the extension when it is active: it computes in float32
    and the result is returned in float64 like the reference's.
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
    """Ordinary cross-entropy in float32 (below), on the extension when it is active."""
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
        ext = _ext_for("gather", table, ids)
        if ext is not None:
            return ext.gather_rows(table, ids)
    return _gather_rows_ref(table, ids)


def _gather_rows_ref(table: Tensor, ids: Tensor) -> Tensor:
    return table.index_select(0, ids)


@torch.no_grad()
def sparse_sign_sgd_(table: Tensor, ids: Tensor, grads: Tensor, lr: float, weight_decay: float) -> None:
    """The sign-SGD step below, on the extension when it is active (bitwise the same result: it
    sums each column of a repeated id in the same ascending-value order, in float32)."""
    if (table.dtype == torch.float32 and table.dim() == 2 and table.is_contiguous()
            and ids.dim() == 1 and ids.dtype in (torch.int32, torch.int64) and grads.dim() == 2):
        ext = _ext_for("sign_sgd", table, ids, grads)
        if ext is not None:
            ext.sparse_sign_sgd_(table, ids, grads, float(lr), float(weight_decay))
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
