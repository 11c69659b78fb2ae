# ops.py against hand computations in plain Python floats and against the reference's outputs.
import itertools
import math
import os

import pytest
import torch

import ops


# -----------------------------------------------------------------------------
# cross-entropy, computed by hand one row at a time

def stablemax_by_hand(row, label):
    """Loss and d(loss)/d(row) for one row of logits (python floats), stablemax."""
    s = [x + 1 if x >= 0 else 1 / (1 - x) for x in row]
    ds = [1.0 if x >= 0 else 1 / (1 - x) ** 2 for x in row]  # s'(x)
    total = sum(s)
    loss = -math.log(s[label] / total)
    # loss = log(sum_j s_j) - log(s_label)
    grad = [ds[j] / total - (ds[j] / s[j] if j == label else 0.0) for j in range(len(row))]
    return loss, grad


def softmax_by_hand(row, label):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    total = sum(e)
    loss = -(row[label] - m - math.log(total))
    grad = [e[j] / total - (1.0 if j == label else 0.0) for j in range(len(row))]
    return loss, grad


BY_HAND = {"stablemax": stablemax_by_hand, "softmax": softmax_by_hand}


def check_against_hand(kind, logits, labels, rtol):
    """ops.cross_entropy values and gradients of their sum == the hand computation."""
    x = logits.clone().requires_grad_(True)
    loss = ops.cross_entropy(kind, x, labels)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all()
    for i, (row, label) in enumerate(zip(logits.double().tolist(), labels.tolist())):
        if label == ops.IGNORE_INDEX:
            assert loss[i].item() == 0 and (x.grad[i] == 0).all()
            continue
        want_loss, want_grad = BY_HAND[kind](row, label)
        assert loss[i].item() == pytest.approx(want_loss, rel=rtol, abs=1e-12)
        torch.testing.assert_close(x.grad[i].double(), torch.tensor(want_grad, dtype=torch.float64),
                                   rtol=rtol, atol=1e-7)


def interesting_logits():
    """[7, 9] float32 logits: random, large, exact 0 and 1 (where a naive stablemax gives NaN)."""
    g = torch.Generator().manual_seed(0)
    return torch.stack([
        torch.randn(9, generator=g),
        torch.randn(9, generator=g) * 3,
        torch.randn(9, generator=g) * 50,
        torch.linspace(-50, 50, 9),
        torch.ones(9),
        torch.zeros(9),
        torch.tensor([1.0, 0.0, -1.0, 1.0, 0.0, 2.0, -3.0, 1.0, 0.0]),
    ])


@pytest.mark.parametrize("kind", ["stablemax", "softmax"])
def test_cross_entropy_matches_hand_computation(kind):
    logits = interesting_logits()
    labels = torch.tensor([3, 0, 8, 4, 2, 5, 1])
    check_against_hand(kind, logits, labels, rtol=1e-5)


@pytest.mark.parametrize("kind", ["stablemax", "softmax"])
def test_ignored_labels_give_zero_loss_and_gradient(kind):
    logits = interesting_logits()
    labels = torch.tensor([3, -100, 8, -100, 0, -100, -100])
    check_against_hand(kind, logits, labels, rtol=1e-5)


def test_stablemax_in_float64_from_any_dtype():
    with ops.use_backend("torch"):  # the reference's own float64 semantics; test_ext.py checks the extension
        check_stablemax_in_float64_from_any_dtype()


def check_stablemax_in_float64_from_any_dtype():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, 1] = -100
    loss32 = ops.stablemax_cross_entropy(logits, labels)
    loss16 = ops.stablemax_cross_entropy(logits.bfloat16(), labels.int())
    assert loss32.shape == labels.shape and loss32.dtype == torch.float64
    assert loss16.dtype == torch.float64 and loss16[0, 1] == 0
    # float64 on the same values gives the same result as the float32 input
    assert torch.equal(loss32, ops.stablemax_cross_entropy(logits.double(), labels))
    torch.testing.assert_close(loss16, loss32, rtol=2e-2, atol=2e-2)


def test_softmax_keeps_shape_and_float32():
    logits = torch.randn(2, 5, 11, dtype=torch.bfloat16)
    labels = torch.randint(0, 11, (2, 5), dtype=torch.int32)
    loss = ops.softmax_cross_entropy(logits, labels)
    assert loss.shape == (2, 5) and loss.dtype == torch.float32


@pytest.mark.parametrize("kind", ["stablemax", "softmax"])
def test_cross_entropy_matches_reference(golden, kind):
    ref = torch.load(os.path.join(golden, "ce_ref.pt"), weights_only=True)
    x = ref["logits"].clone().requires_grad_(True)
    loss = ops.cross_entropy(kind, x, ref["labels"], ref["ignore_index"])
    loss.sum().backward()
    assert loss.dtype == ref[f"{kind}_values"].dtype
    torch.testing.assert_close(loss, ref[f"{kind}_values"], rtol=1e-6, atol=0)
    torch.testing.assert_close(x.grad, ref[f"{kind}_grad"], rtol=1e-6, atol=1e-12)


def test_cross_entropy_rejects_unknown_kind():
    with pytest.raises(ValueError, match="sparsemax"):
        ops.cross_entropy("sparsemax", torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))


# -----------------------------------------------------------------------------
# which path each op takes: fixed per device type (AUTO_PATHS), imposed (set_op_paths), overridden
# (TRM_USE_EXT, use_backend). A counting stand-in for the extension shows where each op went.

class CountingExt:
    """The extension's four functions made of the reference ops (forward only), counting calls."""
    with_cuda = False

    def __init__(self):
        self.calls = {}

    def _count(self, name):
        self.calls[name] = self.calls.get(name, 0) + 1

    def ce_forward(self, kind, logits, labels, ignore_index):
        self._count(f"ce_forward {kind}")
        ref = ops._stablemax_ref if kind == "stablemax" else ops._softmax_ref
        return ref(logits, labels, ignore_index).float()

    def ce_backward(self, kind, grad, logits, labels, ignore_index):
        raise AssertionError("no test here takes a gradient through the counting extension")

    def gather_rows(self, table, ids):
        self._count("gather_rows")
        return table.index_select(0, ids)

    def sparse_sign_sgd_(self, table, ids, grads, lr, weight_decay):
        self._count("sparse_sign_sgd_")
        ops._sparse_sign_sgd_ref(table, ids, grads, lr, weight_decay)


ALL_CALLS = {"ce_forward stablemax": 1, "ce_forward softmax": 1, "gather_rows": 1, "sparse_sign_sgd_": 1}


def run_every_op():
    """Each of the four ops once, on the CPU; the results must be the reference's on either path."""
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 12, generator=g), torch.randint(0, 12, (6,), generator=g)
    for kind in ("stablemax", "softmax"):
        ref = ops._stablemax_ref if kind == "stablemax" else ops._softmax_ref
        torch.testing.assert_close(ops.cross_entropy(kind, logits, labels), ref(logits, labels), rtol=1e-6, atol=0)
    table, ids, grads = torch.randn(10, 4, generator=g), torch.tensor([1, 7, 1]), torch.randn(3, 4, generator=g)
    assert torch.equal(ops.gather_rows(table, ids), table[ids])
    want = table.clone()
    ops._sparse_sign_sgd_ref(want, ids, grads, 0.1, 0.1)
    ops.sparse_sign_sgd_(table, ids, grads, 0.1, 0.1)
    assert torch.equal(table, want)


@pytest.fixture
def counting_ext(monkeypatch):
    """A CountingExt as the loaded extension, taken as checked on the CPU; no paths imposed."""
    fake = CountingExt()
    monkeypatch.setattr(ops, "_ext", fake)
    monkeypatch.setattr(ops, "_checked", {"cpu": None})
    monkeypatch.setattr(ops, "_imposed", {})
    monkeypatch.setattr(ops, "_forced", None)
    monkeypatch.setattr(ops, "USE_EXT", "auto")
    return fake


def test_backend_can_be_pinned_to_pytorch(counting_ext, monkeypatch):
    monkeypatch.setattr(ops, "USE_EXT", "on")
    run_every_op()  # not pinned: every op reaches the extension
    assert counting_ext.calls == ALL_CALLS
    counting_ext.calls.clear()
    with ops.use_backend("torch"):
        assert ops.backend() == "torch"
        assert ops.op_paths("cpu") == {**dict.fromkeys(ops.OPS, "torch"), "device_type": "cpu",
                                       "source": "use_backend('torch')", "ext_check": "not needed"}
        run_every_op()
    assert counting_ext.calls == {}
    monkeypatch.setattr(ops, "USE_EXT", "off")
    run_every_op()
    assert counting_ext.calls == {}
    with ops.use_backend("ext"):  # and back: pinned to the extension, whatever TRM_USE_EXT says
        run_every_op()
    assert counting_ext.calls == ALL_CALLS


def test_auto_paths_come_from_the_fixed_table(counting_ext, monkeypatch):
    """Under 'auto' each op takes the path AUTO_PATHS names for the device type, op by op: no
    timing decides it, so every process takes the same paths."""
    assert ops.AUTO_PATHS["cpu"] == dict.fromkeys(ops.OPS, "torch")
    assert ops.AUTO_PATHS["cuda"] == dict.fromkeys(ops.OPS, "ext")
    run_every_op()
    assert counting_ext.calls == {}
    mixed = {"stablemax": "ext", "softmax": "torch", "gather": "ext", "sign_sgd": "torch"}
    monkeypatch.setitem(ops.AUTO_PATHS, "cpu", mixed)
    assert ops.op_paths("cpu") == {**mixed, "device_type": "cpu", "source": "AUTO_PATHS", "ext_check": "passed"}
    assert ops.backend("cpu") == "ext"
    run_every_op()
    assert counting_ext.calls == {"ce_forward stablemax": 1, "gather_rows": 1}
    assert ops.op_paths("mps") == {**dict.fromkeys(ops.OPS, "torch"), "device_type": "mps", "source": "AUTO_PATHS",
                                   "ext_check": "not needed"}


def test_cpu_auto_neither_builds_nor_checks_the_extension(monkeypatch):
    def no_build():
        raise AssertionError("the extension was loaded where no op asks for it")
    monkeypatch.setattr(ops, "load_ext", no_build)
    monkeypatch.setattr(ops, "_imposed", {})
    monkeypatch.setattr(ops, "USE_EXT", "auto")
    assert ops.op_paths("cpu") == {**dict.fromkeys(ops.OPS, "torch"), "device_type": "cpu", "source": "AUTO_PATHS",
                                   "ext_check": "not needed"}
    run_every_op()


def test_set_op_paths_keeps_recorded_paths_unless_TRM_USE_EXT_overrides(counting_ext, monkeypatch):
    recorded = {"stablemax": "ext", "softmax": "ext", "gather": "torch", "sign_sgd": "ext", "device_type": "cpu",
                "source": "AUTO_PATHS", "ext_check": "passed"}  # as op_paths() gave it, say in a checkpoint
    ops.set_op_paths("cpu", recorded)
    assert ops.op_paths("cpu") == {**recorded, "source": "set_op_paths"}
    assert ops.op_paths("cuda")["source"] == "AUTO_PATHS"  # per device type
    run_every_op()
    assert counting_ext.calls == {"ce_forward stablemax": 1, "ce_forward softmax": 1, "sparse_sign_sgd_": 1}
    # round trip: what op_paths reports can be imposed again as it is
    ops.set_op_paths("cpu", ops.op_paths("cpu"))
    assert ops.op_paths("cpu") == {**recorded, "source": "set_op_paths"}
    # TRM_USE_EXT=on / off override the recorded paths; 'auto' follows them again
    monkeypatch.setattr(ops, "USE_EXT", "off")
    assert ops.op_paths("cpu") == {**dict.fromkeys(ops.OPS, "torch"), "device_type": "cpu",
                                   "source": "TRM_USE_EXT=off", "ext_check": "not needed"}
    monkeypatch.setattr(ops, "USE_EXT", "on")
    assert ops.op_paths("cpu") == {**dict.fromkeys(ops.OPS, "ext"), "device_type": "cpu", "source": "TRM_USE_EXT=on",
                                   "ext_check": "passed"}
    monkeypatch.setattr(ops, "USE_EXT", "auto")
    assert ops.op_paths("cpu")["source"] == "set_op_paths"
    # some ops only: the rest keep the table's; None: back to the table
    ops.set_op_paths("cpu", {"gather": "ext"})
    assert ops.op_paths("cpu") == {**ops.AUTO_PATHS["cpu"], "gather": "ext", "device_type": "cpu",
                                   "source": "set_op_paths", "ext_check": "passed"}
    ops.set_op_paths("cpu", None)
    assert ops.op_paths("cpu")["source"] == "AUTO_PATHS"
    with pytest.raises(ValueError, match="unknown op"):
        ops.set_op_paths("cpu", {"layernorm": "ext"})
    with pytest.raises(ValueError, match="'ext' or 'torch'"):
        ops.set_op_paths("cpu", {"gather": "cuda"})
    # paths recorded on another device type: imposed for that type, they leave this one alone
    with pytest.raises(ValueError, match="recorded for 'cuda'"):
        ops.set_op_paths("cpu", {**recorded, "device_type": "cuda"})
    ops.set_op_paths("cuda", {**recorded, "device_type": "cuda"})
    assert ops.op_paths("cpu")["source"] == "AUTO_PATHS"


def test_recorded_ext_paths_fall_back_where_the_extension_is_missing(monkeypatch, capsys):
    """A run resumed where the extension cannot be built: under 'auto' the recorded 'ext' paths run
    on the reference, and op_paths says so (and why); under 'on' it is an error."""
    monkeypatch.setattr(ops, "_ext", None)
    monkeypatch.setattr(ops, "_ext_error", "TRM_NO_EXT is set")
    monkeypatch.setattr(ops, "_imposed", {})
    monkeypatch.setattr(ops, "USE_EXT", "auto")
    ops.set_op_paths("cpu", dict.fromkeys(ops.OPS, "ext"))
    assert ops.op_paths("cpu") == {**dict.fromkeys(ops.OPS, "torch"), "device_type": "cpu", "source": "set_op_paths",
                                   "ext_check": "unavailable: TRM_NO_EXT is set"}
    run_every_op()
    monkeypatch.setattr(ops, "USE_EXT", "on")
    with pytest.raises(RuntimeError, match="TRM_NO_EXT"):
        ops.op_paths("cpu")


# -----------------------------------------------------------------------------
# puzzle-embedding table

def sign_sgd_by_hand(table, ids, grads, lr, wd):
    """The update row by row in float64: sum the gradients of each id exactly, then step."""
    out = table.clone()
    for i in sorted(set(ids.tolist())):
        summed = grads.double()[ids == i].sum(0)
        out[i] = (table[i].double() * (1 - lr * wd) - lr * torch.sign(summed)).float()
    return out


def test_gather_rows():
    table = torch.arange(20.0).view(5, 4)
    ids = torch.tensor([4, 0, 4, 2], dtype=torch.int32)
    rows = ops.gather_rows(table, ids)
    assert torch.equal(rows, table[ids.long()])
    rows += 1  # a copy: writing it leaves the table alone
    assert torch.equal(table, torch.arange(20.0).view(5, 4))


def test_sign_sgd_matches_reference(golden):
    ref = torch.load(os.path.join(golden, "signsgd_ref.pt"), weights_only=True)
    table = ref["weights_before"].clone()
    ops.sparse_sign_sgd_(table, ref["ids"], ref["grad"], ref["lr"], ref["weight_decay"])
    torch.testing.assert_close(table, ref["weights_after"], rtol=1e-6, atol=0)


def test_sign_sgd_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(10, 6, generator=g)
    ids = torch.tensor([0, 9, 3, 0, 9, 9, 5], dtype=torch.int32)  # both ends of the table, repeats
    grads = torch.randn(7, 6, generator=g)
    grads[3, :2] = -grads[0, :2]  # id 0: summed gradient exactly 0 in two columns -> decay only
    before = table.clone()
    ops.sparse_sign_sgd_(table, ids, grads, lr=0.01, weight_decay=0.1)

    torch.testing.assert_close(table, sign_sgd_by_hand(before, ids, grads, 0.01, 0.1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(table[0, :2], before[0, :2] * (1 - 0.01 * 0.1))
    untouched = [1, 2, 4, 6, 7, 8]
    assert torch.equal(table[untouched], before[untouched])


def test_sign_sgd_ignores_the_order_of_repeated_ids():
    # Column 0 of id 2 sums to +1 or to 0 in float32 depending on the order of its terms,
    # which flips the sign of the step; every order must give the same table, bit for bit.
    ids = torch.tensor([2, 7, 2, 2, 0, 7], dtype=torch.int32)
    grads = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    grads[[0, 2, 3], 0] = torch.tensor([1e8, 1.0, -1e8])
    table = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))

    results = []
    for perm in itertools.permutations(range(6)):
        perm = list(perm)
        t = table.clone()
        ops.sparse_sign_sgd_(t, ids[perm], grads[perm], lr=0.01, weight_decay=0.1)
        results.append(t)
    assert all(torch.equal(t, results[0]) for t in results)


def test_sign_sgd_ignores_order_on_a_large_batch():
    # 64 entries per id: two of +1e8 and two of -1e8 swamp the small ones in float32, so a plain
    # scatter_add / index_add gives a different table for almost every shuffle
    g = torch.Generator().manual_seed(2)
    ids = torch.arange(256) % 4
    grads = torch.randn(256, 16, generator=g)
    grads[:8] = 1e8
    grads[8:16] = -1e8
    table = torch.randn(4, 16, generator=g)
    first = table.clone()
    ops.sparse_sign_sgd_(first, ids, grads, lr=0.01, weight_decay=0.1)
    for _ in range(5):
        perm = torch.randperm(256, generator=g)
        t = table.clone()
        ops.sparse_sign_sgd_(t, ids[perm], grads[perm], lr=0.01, weight_decay=0.1)
        assert torch.equal(t, first)
