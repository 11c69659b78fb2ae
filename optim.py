"""
Optimisation for TRM (SPEC section 4): AdamATan2 for the parameters, sign-SGD for the puzzle
embedding table (a buffer), the shared warmup + cosine learning-rate schedule, and the EMA of
the parameters used for evaluation and checkpoints.
"""
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
    # parameters) come out bitwise equal to the reference run in golden/train_seq_arc_rope.pt
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - beta2)

    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, bias_correction2_sqrt)
    updates = [torch.atan2(m, d) for m, d in zip(exp_avgs, denoms)]  # there is no foreach atan2
    torch._foreach_mul_(updates, lr / bias_correction1)
    torch._foreach_sub_(params, updates)


class SignSGD:
    """
    Sign-SGD with decoupled weight decay for the puzzle embedding table. The table emb.weights
    [N, D] is a buffer, not a parameter: a training forward copies the batch's rows into the leaf
    tensor emb.local_weights [B, D] (ids in emb.local_ids [B]), and backward leaves their gradient
    there. step() applies ops.sparse_sign_sgd_ to the table's rows.
    Not a torch.optim.Optimizer, since it owns no parameters, but it has param_groups so that the
    training loop sets its lr like the other optimiser's.
    """

    def __init__(self, emb, lr=1e-2, weight_decay=0.1, world_size=1):
        self.emb = emb
        self.world_size = world_size
        self.param_groups = [{"lr": lr, "weight_decay": weight_decay}]

    @torch.no_grad()
    def step(self):
        local = getattr(self.emb, "local_weights", None)
        if local is None or local.grad is None:
            return
        ids, grad = self.emb.local_ids, local.grad  # [B], [B, D]
        if self.world_size > 1:
            # Every rank keeps a full copy of the table and must apply the same update to it, so
            # each one needs the rows and gradients of all ranks' batches.
            all_ids = ids.new_empty(self.world_size * ids.shape[0])
            all_grad = grad.new_empty(self.world_size * grad.shape[0], grad.shape[1])
            dist.all_gather_into_tensor(all_ids, ids.contiguous())
            dist.all_gather_into_tensor(all_grad, grad.contiguous())
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


class EMA:
    """
    Exponential moving average of a model's trainable parameters (buffers, such as the puzzle
    table, are not averaged). Evaluation and saved checkpoints use the averaged weights, written
    into a copy of the model with copy_to.
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
    gradients summed over ranks, then every optimiser steps and clears its gradients.
    Returns (new carry, summed loss as a float, metrics as tensors).
    """
    carry, loss, metrics, _ = model(carry, batch)
    (loss / global_batch_size).backward()
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
    return carry, loss.item(), metrics
