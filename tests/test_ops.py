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


def test_backend_can_be_pinned_to_pytorch():
    with ops.use_backend("torch"):
        assert ops.backend() == "torch"


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
