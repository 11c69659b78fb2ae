# optim.py against direct transcriptions of REFERENCE.md §4 and against the reference's training run.
import math
import os
import types

import pytest
import torch

import ops
import optim

BETAS = (0.9, 0.95)


def adam_atan2_by_hand(p, grads, lrs, wd, betas=BETAS):
    """REFERENCE.md §4 in float64, one step per (grad, lr); a None grad is a skipped step."""
    b1, b2 = betas
    p = p.double().clone()
    m = torch.zeros_like(p)
    v = torch.zeros_like(p)
    t = 0
    for g, lr in zip(grads, lrs):
        if g is None:
            continue
        g = g.double()
        t += 1
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - (lr / (1 - b1 ** t)) * torch.atan2(m, torch.sqrt(v) / math.sqrt(1 - b2 ** t))
    return p


def run_adam(params, grads_per_step, lrs, wd, opt=None):
    """Step AdamATan2 over params with the given per-step grads (None = no grad) and lrs."""
    opt = opt or optim.AdamATan2(params, lr=lrs[0], betas=BETAS, weight_decay=wd)
    for grads, lr in zip(grads_per_step, lrs):
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.clone()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    return opt


def make_problem(dtype, steps=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 4), (7,), (3, 2)]
    init = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    grads = [[torch.randn(s, generator=g, dtype=dtype) * 10 ** (i - 1) for i, s in enumerate(shapes)]
             for _ in range(steps)]
    for step in (1, 4):
        grads[step][1] = None  # the second parameter misses two steps: its step count falls behind
    for step in range(steps):
        grads[step][2] = None  # the third never gets a gradient
    lrs = [1e-3 * (1 + 0.5 * k) for k in range(steps)]  # changes every step, as the schedule does
    return init, grads, lrs


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-6), (torch.float64, 1e-13)])
def test_adam_atan2_matches_spec(dtype, rtol):
    init, grads, lrs = make_problem(dtype)
    params = [p.clone().requires_grad_(True) for p in init]
    opt = run_adam(params, grads, lrs, wd=0.1)

    for i, p in enumerate(params):
        want = adam_atan2_by_hand(init[i], [gs[i] for gs in grads], lrs, wd=0.1)
        torch.testing.assert_close(p.detach().double(), want, rtol=rtol, atol=rtol * 1e-3)
    assert opt.state[params[0]]["step"] == 6
    assert opt.state[params[1]]["step"] == 4
    assert torch.equal(params[2].detach(), init[2]) and len(opt.state[params[2]]) == 0


def test_adam_atan2_resumes_bitwise():
    init, grads, lrs = make_problem(torch.float32, steps=8)
    straight = [p.clone().requires_grad_(True) for p in init]
    run_adam(straight, grads, lrs, wd=0.1)

    first = [p.clone().requires_grad_(True) for p in init]
    opt = run_adam(first, grads[:3], lrs[:3], wd=0.1)
    saved = {"params": [p.detach().clone() for p in first], "opt": opt.state_dict()}

    resumed = [p.clone().requires_grad_(True) for p in saved["params"]]
    opt2 = optim.AdamATan2(resumed, lr=0.0, betas=BETAS, weight_decay=0.1)
    opt2.load_state_dict(saved["opt"])
    run_adam(resumed, grads[3:], lrs[3:], wd=0.1, opt=opt2)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_adam_atan2_reproduces_reference_training(golden):
    # train_seq_arc_rope.pt: three reference steps (AdamATan2 lr 1e-3, wd 0.1; sign-SGD lr 1e-2,
    # wd 0.1), with the gradients each step saw and the weights after it.
    ref = torch.load(os.path.join(golden, "train_seq_arc_rope.pt"), weights_only=True)
    ckpt = torch.load(os.path.join(golden, "ckpt_arc_rope.pt"), weights_only=True)
    names = list(ref["calls"][0]["grads"])
    params = [ckpt[n].clone().requires_grad_(True) for n in names]
    table_name = "_orig_mod.model.inner.puzzle_emb.weights"
    table = ckpt[table_name].clone()
    opt = optim.AdamATan2(params, lr=1e-3, betas=BETAS, weight_decay=0.1)

    for call in ref["calls"]:
        for n, p in zip(names, params):
            p.grad = call["grads"][n]
        opt.step()
        ops.sparse_sign_sgd_(table, call["puzzle_emb_local_ids"], call["puzzle_emb_local_grad"], 1e-2, 0.1)
        after = call["state_dict_after"]
        for n, p in zip(names, params):
            torch.testing.assert_close(p.detach(), after[n], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(table, after[table_name], rtol=1e-6, atol=0)


def test_lr_at():
    base = 1e-3
    # warmup: linear from 0
    assert optim.lr_at(0, base, 10, 110, 0.1) == 0.0
    assert optim.lr_at(5, base, 10, 110, 0.1) == pytest.approx(0.5e-3)
    # cosine from base (at the end of warmup) down to min_ratio * base (at total_steps)
    assert optim.lr_at(10, base, 10, 110, 0.1) == pytest.approx(1e-3)
    assert optim.lr_at(60, base, 10, 110, 0.1) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert optim.lr_at(110, base, 10, 110, 0.1) == pytest.approx(1e-4)
    # min_ratio 1.0: constant after the warmup; no warmup: full rate from step 1
    assert optim.lr_at(5, base, 10, 110, 1.0) == pytest.approx(0.5e-3)
    assert all(optim.lr_at(s, base, 10, 110, 1.0) == base for s in (10, 37, 110, 500))
    assert optim.lr_at(1, base, 0, 100, 1.0) == base


def test_ema_update_and_copy_to():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    model.register_buffer("table", torch.zeros(2, 2))  # a buffer is not averaged
    model[1].bias.requires_grad_(False)  # nor is a frozen parameter
    ema = optim.EMA(model, decay=0.9)
    assert set(ema.shadow) == {"0.weight", "0.bias", "1.weight"}

    want = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model)
        for n, p in model.named_parameters():
            if n in ema.shadow:
                want[n] = (1. - 0.9) * p.detach() + 0.9 * want[n]  # the reference's expression
    for n in ema.shadow:
        assert torch.equal(ema.shadow[n], want[n])

    other = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    bias_before = other[1].bias.detach().clone()
    ema.copy_to(other)
    assert torch.equal(other[0].weight, want["0.weight"]) and torch.equal(other[1].weight, want["1.weight"])
    assert torch.equal(other[1].bias, bias_before)

    restored = optim.EMA(model, decay=0.9)  # starts from the current weights, not the average
    restored.load_state_dict(ema.state_dict())
    assert all(torch.equal(restored.shadow[n], ema.shadow[n]) for n in ema.shadow)


def fake_puzzle_emb(seed=0):
    """What SignSGD needs from the model's puzzle embedding after a training forward."""
    g = torch.Generator().manual_seed(seed)
    emb = types.SimpleNamespace(weights=torch.randn(6, 4, generator=g))
    emb.local_ids = torch.tensor([5, 0, 5, 2], dtype=torch.int32)
    emb.local_weights = emb.weights[emb.local_ids.long()].clone().requires_grad_(True)
    (emb.local_weights * torch.randn(4, 4, generator=g)).sum().backward()
    return emb


def test_sign_sgd_step_is_the_sparse_op():
    emb = fake_puzzle_emb()
    want = emb.weights.clone()
    ops.sparse_sign_sgd_(want, emb.local_ids, emb.local_weights.grad, lr=0.02, weight_decay=0.5)

    opt = optim.SignSGD(emb, lr=1.0, weight_decay=0.5)
    opt.param_groups[0]["lr"] = 0.02  # set by the training loop, as for AdamATan2
    opt.step()
    assert torch.equal(emb.weights, want)

    opt.zero_grad()
    assert emb.local_weights.grad is None
    opt.step()  # without a gradient: nothing happens
    assert torch.equal(emb.weights, want)


def test_sign_sgd_state_dict():
    opt = optim.SignSGD(fake_puzzle_emb(), lr=0.1, weight_decay=0.2)
    opt.param_groups[0]["lr"] = 0.05
    other = optim.SignSGD(fake_puzzle_emb(), lr=1.0, weight_decay=1.0)
    other.load_state_dict(opt.state_dict())
    assert other.param_groups == [{"lr": 0.05, "weight_decay": 0.2}]
