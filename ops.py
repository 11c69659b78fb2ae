"""
The two custom ops of TRM, in plain PyTorch:
- cross-entropy per position, stablemax (the reference's default) or softmax;
- the puzzle-embedding table's gather and its sparse sign-SGD update.
model.py and optim.py call only these functions, so that the csrc/ extension can later take
over behind the same signatures; the versions here stay as the reference it is tested against.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # label of positions that carry no loss (padding, ignored cells)

# Slot for the compiled csrc/ extension. Nothing loads it yet, so every op below runs in PyTorch.
_ext = None


def backend() -> str:
    """Which implementation the ops run on: 'torch' until the csrc/ extension is loaded."""
    return "torch" if _ext is None else "ext"


# -----------------------------------------------------------------------------
# cross-entropy

def stablemax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """
    Cross-entropy under stablemax, the softmax substitute of "Grokking at the edge of numerical
    stability": s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0, p_i = s(x_i) / sum_j s(x_j).
    logits [..., V] (any float dtype), labels [...] (integer) -> loss [...] in float64, 0 where
    the label is ignore_index. Computed in float64 like the reference.
    """
    x = logits.to(torch.float64)
    # Each branch sees only inputs from its own side of 0, so the branch that `where` drops stays
    # finite and its gradient is 0, not 0 * inf = NaN (e.g. 1 / (1 - x) at x = 1).
    # The 1e-30 is the reference's guard against division by zero; it never changes a value here.
    s = torch.where(x >= 0, x.clamp_min(0) + 1, 1 / (1 - x.clamp_max(0) + 1e-30))  # [..., V]
    logp = torch.log(s / s.sum(dim=-1, keepdim=True))  # [..., V]

    valid = labels != ignore_index  # [...]
    # ignored labels are -100: point them at class 0 so that gather stays in range
    safe_labels = torch.where(valid, labels, 0).long()
    logp_label = logp.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)  # [...]
    return torch.where(valid, -logp_label, 0.0)


def softmax_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Ordinary cross-entropy in float32. logits [..., V], labels [...] -> loss [...], 0 where ignored."""
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
    return table.index_select(0, ids)


@torch.no_grad()
def sparse_sign_sgd_(table: Tensor, ids: Tensor, grads: Tensor, lr: float, weight_decay: float) -> None:
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
