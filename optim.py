"""
Optimisation for TRM (REFERENCE.md §4): AdamATan2 for the parameters (or URM's Muon,
REFERENCE.md §8), sign-SGD for the puzzle embedding table (a buffer), the shared
warmup + cosine learning-rate schedule, and the EMA of the parameters used for evaluation and
checkpoints.
"""
import contextlib
import math
from collections import defaultdict

import torch
import torch.distributed as dist

import ops


class AdamATan2(torch.optim.Optimizer):
    """
    Adam with atan2 in place of m / (sqrt(v) + eps) (Everett et al. 2024), so there is no epsilon,
    and decoupled weight decay. For each parameter with a gradient, at its step t = 1, 2, ...:
        p *= 1 - lr * wd
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g^2
        p -= (lr / (1 - b1^t)) * atan2(m, sqrt(v) / sqrt(1 - b2^t))
    The training loop sets param_groups[i]['lr'] before every step.
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            # Parameters that missed a gradient in some step have a smaller step count, hence
            # other bias corrections: bucket by step count (normally a single bucket) and update
            # each bucket with a handful of foreach calls.
            buckets = defaultdict(list)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                buckets[state["step"]].append(p)

            beta1, beta2 = group["betas"]
            for t, params in buckets.items():
                _adam_atan2_(
                    params,
                    [p.grad for p in params],
                    [self.state[p]["exp_avg"] for p in params],
                    [self.state[p]["exp_avg_sq"] for p in params],
                    t, group["lr"], beta1, beta2, group["weight_decay"],
                )


def _adam_atan2_(params, grads, exp_avgs, exp_avg_sqs, t, lr, beta1, beta2, weight_decay):
    """One AdamATan2 step, in place, on lists of tensors that all are at step t."""
    bias_correction1 = 1 - beta1 ** t
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** t)

    torch._foreach_mul_(params, 1 - lr * weight_decay)
    # lerp(m, g, 1 - b1) is b1 * m + (1 - b1) * g; written as lerp, the moments (and so the
    # parameters) come out bitwise equal to the reference run in tests/reference/train_seq_arc_rope.pt
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - beta2)

    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, bias_correction2_sqrt)
    updates = [torch.atan2(m, d) for m, d in zip(exp_avgs, denoms)]  # there is no foreach atan2
    torch._foreach_mul_(updates, lr / bias_correction1)
    torch._foreach_sub_(params, updates)


# Newton-Schulz coefficients (a, b, c) of Muon as URM uses it (REFERENCE.md §8), one
# triple per step. They do not converge to the orthogonal factor: each step maps a singular value
# s to a s + b s^3 + c s^5, and after the five steps every singular value that started at least
# 1e-3 of the Frobenius norm lies in about [0.45, 1.83] (tests/test_muon.py checks this).
NEWTON_SCHULZ_COEFFS = (
    (7.2086, -15.5131, 9.0178),
    (3.9623, -2.5813, 0.4542),
    (3.9466, -2.5765, 0.4544),
    (3.8991, -2.5671, 0.4566),
    (3.7186, -2.5308, 0.4653),
)


def newton_schulz(n):
    """
    Approximate orthogonalisation of a matrix n [rows, cols], in float32: X = n / max(||n||_F, 1e-7),
    transposed first when it has more rows than columns (so that A below is the smaller Gram
    matrix), then X <- a X + (b A + c A^2) X with A = X X^T for each coefficient triple, and the
    transpose undone. Returns float32 [rows, cols].
    """
    x = n.to(torch.float32)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / x.norm().clamp_min(1e-7)
    for a, b, c in NEWTON_SCHULZ_COEFFS:
        A = x @ x.T
        x = a * x + (b * A + c * (A @ A)) @ x
    return x.T if tall else x


def _compute_dtype(p):
    # float32 for float32 / bf16 / fp16 parameters; a float64 parameter keeps float64
    return torch.float64 if p.dtype == torch.float64 else torch.float32


class Muon(torch.optim.Optimizer):
    """
    Muon with an AdamW for the non-matrix parameters, as URM's use_muon option
    (REFERENCE.md §8). Construction splits the parameters into two param_groups:
      param_groups[0], tagged muon=True: every parameter with exactly 2 dims (linear weights, the
        token embedding, lm_head, q_head.weight);
      param_groups[1], tagged muon=False: all others (biases, the [inner, 1, 2] conv weight, ...).
    Both groups are always there (one may be empty) and both take the lr the training loop writes
    into param_groups[i]['lr'] before each step. params may also be (name, parameter) pairs, as
    from named_parameters(); the names are dropped.
    Muon step, per matrix p [rows, cols] with gradient g (momentum mu = 0.95):
        buf = mu * buf + g;  n = g + mu * buf          (Nesterov)
        X = newton_schulz(n)                           (float32)
        p *= 1 - lr * wd;  p -= lr * 0.2 * sqrt(max(rows, cols)) * X
    AdamW step, per parameter at its step t = 1, 2, ... (betas: train.py's beta1 / beta2, default
    0.9 / 0.95; eps 1e-8):
        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g^2
        p *= 1 - lr * wd;  p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (eps + sqrt(v))
    weight_decay applies to both groups. URM hard-codes 0.1 for both, ignoring its config value;
    here it is an argument, default 0.1, and train.py passes its weight_decay.
    The arithmetic is in float32 (float64 for float64 parameters), the states are kept in that
    dtype, and each result is written back in the parameter's dtype, so bf16 parameters are
    rounded once per step. Parameters without a gradient are skipped (their AdamW step count
    stays behind). There are no collectives: with several ranks the gradients must already be
    all-reduced (train_step does), and every rank then computes the same update.
    """

    def __init__(self, params, lr=1e-4, weight_decay=0.1, momentum=0.95, betas=(0.9, 0.95), eps=1e-8):
        params = [p[1] if isinstance(p, tuple) else p for p in params]
        if any(isinstance(p, dict) for p in params):
            raise TypeError("Muon takes parameters (or named parameters), not param groups: it makes its own")
        groups = [
            {"params": [p for p in params if p.dim() == 2], "muon": True},
            {"params": [p for p in params if p.dim() != 2], "muon": False},
        ]
        super().__init__(groups, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["muon"]:
                    self._muon_update(p, group)
                else:
                    self._adamw_update(p, group)
        return loss

    def _muon_update(self, p, group):
        dtype = _compute_dtype(p)
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        mu, lr = group["momentum"], group["lr"]
        g = p.grad.to(dtype)
        buf = state["momentum_buffer"]
        buf.mul_(mu).add_(g)
        x = newton_schulz(g.add(buf, alpha=mu)).to(dtype)
        scale = lr * 0.2 * math.sqrt(max(p.shape))
        new = p.to(dtype)  # p itself when p is already in the compute dtype, else a copy
        new.mul_(1 - lr * group["weight_decay"]).sub_(scale * x)
        if new is not p:
            p.copy_(new)

    def _adamw_update(self, p, group):
        dtype = _compute_dtype(p)
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        state["step"] += 1
        t, lr = state["step"], group["lr"]
        beta1, beta2 = group["betas"]
        g = p.grad.to(dtype)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        new = p.to(dtype)
        new.mul_(1 - lr * group["weight_decay"]).addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size)
        if new is not p:
            p.copy_(new)

    def load_state_dict(self, state_dict):
        # torch.optim.Optimizer casts floating-point state to its parameter's dtype, which would
        # round the float32 states of bf16 parameters to bf16: put the saved tensors back as they
        # were (on the parameter's device), so that a resumed run is bitwise the uninterrupted one.
        super().load_state_dict(state_dict)
        params = [p for group in self.param_groups for p in group["params"]]
        saved_ids = [i for group in state_dict["param_groups"] for i in group["params"]]
        for i, p in zip(saved_ids, params):
            for key, value in state_dict["state"].get(i, {}).items():
                if torch.is_tensor(value):
                    self.state[p][key] = value.to(device=p.device, copy=True)


class SignSGD:
    """
    Sign-SGD with decoupled weight decay for the puzzle embedding table. The table emb.weights
    [N, D] is a buffer, not a parameter: a training forward copies the batch's rows into the leaf
    tensor emb.local_weights [B, D] (ids in emb.local_ids [B]), and backward leaves their gradient
    there. step() applies ops.sparse_sign_sgd_ to the table's rows. With gradient accumulation
    every micro-batch's forward replaces the local rows, so collect() keeps each one's ids and
    gradients after its backward, and step() updates with all of them at once.
    Not a torch.optim.Optimizer, since it owns no parameters, but it has param_groups so that the
    training loop sets its lr like the other optimiser's.
    """

    def __init__(self, emb, lr=1e-2, weight_decay=0.1, world_size=1):
        self.emb = emb
        self.world_size = world_size
        self.param_groups = [{"lr": lr, "weight_decay": weight_decay}]
        self.collected = []  # (ids [b], grads [b, D]) of the micro-batches since the last step

    def collect(self):
        local = getattr(self.emb, "local_weights", None)
        if local is not None and local.grad is not None:
            self.collected.append((self.emb.local_ids, local.grad))
            local.grad = None

    @torch.no_grad()
    def step(self):
        self.collect()
        if not self.collected:
            return
        ids = torch.cat([i for i, _ in self.collected])     # [B]
        grad = torch.cat([g for _, g in self.collected])    # [B, D]
        self.collected = []
        if self.world_size > 1:
            # Every rank keeps a full copy of the table and must apply the same update to it, so
            # each one needs the rows and gradients of all ranks' batches.
            gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the newer name first
            all_ids = ids.new_empty(self.world_size * ids.shape[0])
            all_grad = grad.new_empty(self.world_size * grad.shape[0], grad.shape[1])
            gather(all_ids, ids.contiguous())
            gather(all_grad, grad.contiguous())
            ids, grad = all_ids, all_grad
        group = self.param_groups[0]
        ops.sparse_sign_sgd_(self.emb.weights, ids, grad, group["lr"], group["weight_decay"])

    def zero_grad(self):
        local = getattr(self.emb, "local_weights", None)
        if local is not None:
            local.grad = None

    def state_dict(self):
        # the update keeps no state between steps; lr and weight decay are all there is
        return {"lr": self.param_groups[0]["lr"], "weight_decay": self.param_groups[0]["weight_decay"]}

    def load_state_dict(self, state):
        self.param_groups[0].update(lr=state["lr"], weight_decay=state["weight_decay"])


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """
    Learning rate at a 1-based step (the reference counts the step before computing its rate, so
    the first update uses step 1): linear warmup from 0 over warmup_steps, then a half cosine
    from base_lr down to base_lr * min_ratio at total_steps. min_ratio 1.0 gives a constant rate
    after the warmup.
    """
    if step < warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + max(0.0, (1 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))))


def depth_stages(spec: str, H_cycles: int, L_cycles: int) -> list[tuple[float, int, int]]:
    """
    A depth curriculum as [(start, H, L), ...]: from the fraction `start` of the training schedule
    on, training runs H answer updates of L latent updates each (H_cycles, L_cycles) until the next
    stage starts. `spec` is 'START:HxL,...' (the first START 0, increasing, each depth at least 1
    and at most the model's), 'cgar' for CGAR's three stages (arXiv 2511.08653: a third, two thirds
    and all of each depth, rounded up, from 0, 0.3 and 0.6 of the schedule; (1,2), (2,4), (3,6) for
    the paper's H_cycles=3, L_cycles=6), or '' for none (always the model's depth). ValueError names
    what is wrong.
    """
    if not spec:
        return []
    if spec == "cgar":
        return [(0.0, -(-H_cycles // 3), -(-L_cycles // 3)), (0.3, -(-2 * H_cycles // 3), -(-2 * L_cycles // 3)),
                (0.6, H_cycles, L_cycles)]
    stages = []
    for part in spec.split(","):
        start, _, depth = part.partition(":")
        H, _, L = depth.partition("x")
        try:
            stage = (float(start), int(H), int(L))
        except ValueError:
            raise ValueError(f"depth_schedule {spec!r}: stage {part!r} is not START:HxL (e.g. 0.3:2x4)") from None
        if not 1 <= stage[1] <= H_cycles or not 1 <= stage[2] <= L_cycles:
            raise ValueError(f"depth_schedule {spec!r}: stage {part!r} must have 1 <= H <= H_cycles ({H_cycles}) "
                             f"and 1 <= L <= L_cycles ({L_cycles})")
        if (stages and stage[0] <= stages[-1][0]) or not 0 <= stage[0] < 1 or (not stages and stage[0] != 0):
            raise ValueError(f"depth_schedule {spec!r}: stage starts must begin at 0 and increase below 1")
        stages.append(stage)
    return stages


def depth_at(stages: list, step: int, total_steps: int) -> tuple[int, int] | None:
    """(H_cycles, L_cycles) of the depth curriculum at a 1-based step: the last stage that starts at
    or before (step - 1) / total_steps. None without stages."""
    progress = (step - 1) / max(1, total_steps)
    current = None
    for start, H, L in stages:
        if progress >= start:
            current = (H, L)
    return current


class EMA:
    """
    Exponential moving average of a model's trainable parameters (buffers, such as the puzzle
    table, are not averaged). Evaluation during training runs the averaged weights inside
    swapped_in; checkpoints keep them beside the raw ones (state_dict); copy_to writes them into
    another model of the same architecture.
    """

    def __init__(self, model, decay=0.999):
        self.decay = decay
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model):
        params = dict(model.named_parameters())
        shadow = list(self.shadow.values())
        current = [params[name] for name in self.shadow]
        # shadow = (1 - decay) * p + decay * shadow: each product rounded on its own, then
        # summed, the same roundings as the reference's expression, so the results are bitwise equal
        weighted = torch._foreach_mul(current, 1.0 - self.decay)
        torch._foreach_mul_(shadow, self.decay)
        torch._foreach_add_(shadow, weighted)

    @torch.no_grad()
    def copy_to(self, model):
        params = dict(model.named_parameters())
        for name, s in self.shadow.items():
            params[name].copy_(s)

    @contextlib.contextmanager
    def swapped_in(self, model):
        """Inside the block the model holds the averaged weights; afterwards its own again,
        bit for bit (the tensors trade places: nothing is copied or rounded)."""
        params = dict(model.named_parameters())

        def swap():
            for name, s in self.shadow.items():
                p = params[name]
                p.data, s.data = s.data, p.data

        swap()
        try:
            yield model
        finally:
            swap()

    def state_dict(self):
        return dict(self.shadow)

    def load_state_dict(self, state):
        # copy into the existing tensors so they stay on the model's device
        for name, s in self.shadow.items():
            s.copy_(state[name])


def train_step(model, carry, batch, optimizers, global_batch_size, world_size=1):
    """
    One supervision step of training, with the learning rates already set in each optimiser's
    param_groups: one ACT call on the rolling carry, backward of loss / global batch size,
    gradients summed over ranks, then every optimiser steps and clears its gradients. With
    gradient accumulation, carry and batch are lists, one per micro-batch (each keeps its own
    carry): their gradients add up before the single update, which is then that of one batch
    of all their rows.
    Returns (new carry or carries, metrics as tensors on the device: the loss among them, all
    summed over rows). Nothing here waits for the device: the caller reads the metrics when it
    logs.
    """
    micro = isinstance(batch, list)
    carries, batches = (carry, batch) if micro else ([carry], [batch])
    new, total = [], None
    for c, b in zip(carries, batches):
        c, loss, metrics, _ = model(c, b)
        (loss / global_batch_size).backward()
        for opt in optimizers:
            if isinstance(opt, SignSGD):
                opt.collect()
        new.append(c)
        metrics = {**metrics, "loss": loss.detach()}
        total = metrics if total is None else {k: total[k] + v for k, v in metrics.items()}
    if world_size > 1:
        # one flat all_reduce rather than one per parameter: each collective has a fixed cost
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)
    for opt in optimizers:
        opt.step()
        opt.zero_grad()
    return (new if micro else new[0]), total


def make_optimizers(model, optimizer="adam_atan2", lr=1e-4, beta1=0.9, beta2=0.95, weight_decay=0.1,
                    puzzle_emb_lr=1e-2, puzzle_emb_weight_decay=0.1, world_size=1, **_):
    """The optimisers of a run, from its settings (train.py's globals; other keys are ignored):
    AdamATan2 or Muon for the parameters, and sign-SGD for the puzzle table when there is one,
    first (the reference steps it first). Returns (optimizers, their base learning rates)."""
    if optimizer == "adam_atan2":
        optimizers = [AdamATan2(model.parameters(), lr=lr, betas=(beta1, beta2), weight_decay=weight_decay)]
    elif optimizer == "muon":
        optimizers = [Muon(model.parameters(), lr=lr, weight_decay=weight_decay, betas=(beta1, beta2))]
    else:
        raise ValueError(f"optimizer must be 'adam_atan2' or 'muon', got {optimizer!r}")
    base_lrs = [lr]
    if hasattr(model, "puzzle_emb"):
        optimizers.insert(0, SignSGD(model.puzzle_emb, lr=puzzle_emb_lr, weight_decay=puzzle_emb_weight_decay,
                                     world_size=world_size))
        base_lrs.insert(0, puzzle_emb_lr)
    return optimizers, base_lrs
