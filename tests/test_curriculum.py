"""Cheaper training (CGAR, arXiv 2511.08653): the depth curriculum (train.py depth_schedule) and the
supervision-step weighting (supervision_decay). Both off by default; the golden tests cover that
path, and here: what each setting does, and that resume and the default path are bit for bit."""
import os
import re

import pytest
import torch

from model import TRM, TRMConfig, supervision_weights
from optim import depth_at, depth_stages
from test_train import TINY, assert_same, run, tiny_data  # noqa: F401  (tiny_data: a fixture)


def test_depth_stages_parse_and_cgar():
    # the paper's model (H_cycles=3, L_cycles=6): its (T, n) = (1, 2), (2, 4), (3, 6) from 0, 0.3, 0.6
    assert depth_stages("cgar", 3, 6) == [(0.0, 1, 2), (0.3, 2, 4), (0.6, 3, 6)]
    # thirds rounded up on smaller models
    assert depth_stages("cgar", 2, 2) == [(0.0, 1, 1), (0.3, 2, 2), (0.6, 2, 2)]
    assert depth_stages("0:1x2,0.5:2x3", 3, 6) == [(0.0, 1, 2), (0.5, 2, 3)]
    assert depth_stages("", 3, 6) == []
    for spec, why in [("0.1:1x1", "must begin at 0"), ("0:1x1,0:2x2", "increase"), ("0:1x1,1.0:2x2", "below 1"),
                      ("0:4x1", "1 <= H <= H_cycles (3)"), ("0:1x0", "1 <= L"), ("0:1-1", "is not START:HxL"),
                      ("deep", "is not START:HxL")]:
        with pytest.raises(ValueError, match=re.escape(why)):
            depth_stages(spec, 3, 6)


def test_depth_at_the_configured_steps():
    """Step s (1-based) is at fraction (s - 1) / total_steps of the schedule."""
    stages = depth_stages("cgar", 3, 6)
    at = {s: depth_at(stages, s, 100) for s in (1, 30, 31, 60, 61, 100)}
    assert at == {1: (1, 2), 30: (1, 2), 31: (2, 4), 60: (2, 4), 61: (3, 6), 100: (3, 6)}
    assert depth_at([], 5, 100) is None


ARCHS = {"trm": dict(arch="trm"),
         "hrm": dict(arch="hrm", H_layers=1, puzzle_emb_len=0, no_ACT_continue=False),
         "urm": dict(arch="urm", puzzle_emb_len=0)}


def small(H, L, **kw):
    return TRMConfig(**{**dict(vocab_size=6, seq_len=8, num_puzzle_identifiers=3, hidden_size=16, num_heads=2,
                               L_layers=1, H_cycles=H, L_cycles=L, puzzle_emb_ndim=16, puzzle_emb_len=1,
                               halt_max_steps=3, halt_exploration_prob=0.0), **kw})


def batch(B=4):
    g = torch.Generator().manual_seed(0)
    return {"inputs": torch.randint(1, 6, (B, 8), generator=g), "labels": torch.randint(1, 6, (B, 8), generator=g),
            "puzzle_identifiers": torch.randint(0, 3, (B,), generator=g)}


@pytest.mark.parametrize("arch", ARCHS)
def test_training_depth_is_the_shallow_model_and_evaluation_the_full(arch):
    """A model of depth 3x2 training at train_depth (1, 2) computes what the same weights built
    with H_cycles=1, L_cycles=2 compute, gradients included; in eval mode it runs its full depth."""
    torch.manual_seed(0)
    full = TRM(small(3, 2, **ARCHS[arch]))
    shallow = TRM(small(1, 2, **ARCHS[arch]))
    shallow.load_state_dict(full.state_dict())
    b = batch()
    full.train_depth = (1, 2)
    outs = []
    for m in (full, shallow):
        m.train()
        carry = m.initial_carry(b)
        carry, loss, _, out = m(carry, b)
        carry, loss, _, out = m(carry, b)  # a second ACT step from the rolling carry
        loss.backward()
        outs.append((out["logits"].detach(), loss.detach(), [p.grad.clone() for p in m.parameters()]))
    (la, lossa, ga), (lb, lossb, gb) = outs
    assert torch.equal(la, lb) and torch.equal(lossa, lossb)
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))
    # evaluation ignores train_depth: the full model's answers, which differ from the shallow one's
    full.eval(); shallow.eval()
    deep = TRM(small(3, 2, **ARCHS[arch]))
    deep.load_state_dict(full.state_dict())
    deep.eval()
    with torch.no_grad():
        a, b_, c = (m.solve(b)[2]["logits"] for m in (full, deep, shallow))
    assert torch.equal(a, b_) and not torch.equal(a, c)


def test_supervision_weights_hand_computed():
    # decay 0.5 over 3 steps: 1, 0.5, 0.25 (sum 1.75), scaled to average 1: x 3 / 1.75
    assert supervision_weights(0.5, 3).tolist() == pytest.approx([12 / 7, 6 / 7, 3 / 7], abs=1e-6)
    assert supervision_weights(1.0, 4).tolist() == [1.0, 1.0, 1.0, 1.0]
    w = supervision_weights(0.7, 16)
    assert float(w.mean()) == pytest.approx(1.0, abs=1e-6) and float(w[1] / w[0]) == pytest.approx(0.7)


@pytest.mark.parametrize("no_ACT_continue", [True, False])
def test_weighted_loss_is_each_rows_loss_times_its_steps_weight(no_ACT_continue):
    """Rows at ACT steps 1, 2 and 3 (the carry's steps after the call): the loss is
    sum_rows w[step - 1] * (lm + 0.5 q_halt [+ 0.5 q_continue]) of each row's own losses."""
    torch.manual_seed(0)
    m = TRM(small(2, 1, no_ACT_continue=no_ACT_continue))
    m.train()
    b = batch(6)
    carry = m.initial_carry(b)
    carry, *_ = m(carry, b)
    # rows 0-1 halt now (restart at step 1), rows 2-3 continue (step 2), 4-5 are put at step 3
    carry.halted = torch.tensor([True, True, False, False, False, False])
    carry.steps = torch.tensor([1, 1, 1, 1, 2, 2], dtype=torch.int32)
    torch.manual_seed(1)
    _, plain, _, out = m(carry.select(torch.ones(6, dtype=torch.bool)), b)
    assert out["steps"].tolist() == [1, 1, 2, 2, 3, 3]
    m.step_weights = supervision_weights(0.5, 3)
    torch.manual_seed(1)
    _, weighted, _, out_w = m(carry.select(torch.ones(6, dtype=torch.bool)), b)
    w = torch.tensor([12 / 7, 12 / 7, 6 / 7, 6 / 7, 3 / 7, 3 / 7])
    per_row = out["lm_loss"] + 0.5 * out["q_halt_loss"]
    if not no_ACT_continue:
        per_row = per_row + 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(
            out["q_continue_logits"], out["target_q_continue"], reduction="none")
    per_row = per_row.detach()
    assert float(plain.detach()) == pytest.approx(float(per_row.sum()), rel=1e-5)
    assert float(weighted.detach()) == pytest.approx(float((w * per_row).sum()), rel=1e-5)
    assert float(weighted.detach()) != pytest.approx(float(plain.detach()), rel=1e-3)
    # evaluation reports the unweighted loss
    m.eval()
    with torch.no_grad():
        _, ev, _, _ = m(carry.select(torch.ones(6, dtype=torch.bool)), b)
    m.step_weights = None
    with torch.no_grad():
        _, ev_plain, _, _ = m(carry.select(torch.ones(6, dtype=torch.bool)), b)
    assert torch.equal(ev, ev_plain)


def test_unit_weights_and_a_full_depth_stage_train_bit_identically(tiny_data, tmp_path):  # noqa: F811
    """The machinery switched on with no effect (one stage at the full depth, and weights of 1
    through the weighted path) trains exactly as today's default run."""
    args = [*TINY, f"--data_dir={tiny_data}", "--max_steps=8"]
    run([*args, f"--out_dir={tmp_path}/plain"])
    r = run([*args, f"--out_dir={tmp_path}/on", "--depth_schedule=0:2x2", "--supervision_decay=0.999999999999"])
    assert "step 1: training at depth H_cycles=2 L_cycles=2" in r.stdout
    a = torch.load(f"{tmp_path}/plain/ckpt.pt", weights_only=True)
    b = torch.load(f"{tmp_path}/on/ckpt.pt", weights_only=True)
    for key in ("model", "ema", "optimizers", "carry"):
        assert_same(a[key], b[key], key)


def test_resume_across_a_depth_change_is_bit_identical(tiny_data, tmp_path):  # noqa: F811
    """A run stopped at step 6 of a schedule whose depth changes at step 9 (and with weighting),
    resumed to step 12, ends bitwise where the run without the stop ends."""
    args = [*TINY, f"--data_dir={tiny_data}", "--depth_schedule=0:1x1,0.2:2x1,0.3:2x2", "--supervision_decay=0.7"]
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    r = run([*args, f"--out_dir={straight}", "--max_steps=12"])
    total = int(r.stdout.split(" steps in the schedule")[0].split()[-1])
    assert total == 40  # so the stages begin at steps 1, 9 and 13: step 6 to 12 crosses a change
    assert "step 9: training at depth H_cycles=2 L_cycles=1" in r.stdout and "step 13" not in r.stdout
    run([*args, f"--out_dir={split}", "--max_steps=6"])
    r = run([*args, f"--out_dir={split}", "--max_steps=12", "--init_from=resume"])
    assert "step 7: training at depth H_cycles=1 L_cycles=1" in r.stdout  # the stage it stopped in
    a = torch.load(os.path.join(straight, "ckpt.pt"), weights_only=True)
    b = torch.load(os.path.join(split, "ckpt.pt"), weights_only=True)
    for key in ("model", "ema", "optimizers", "data", "carry", "rng"):
        assert_same(a[key], b[key], key)


def test_bad_settings_are_one_line_errors(tiny_data, tmp_path):  # noqa: F811
    base = [*TINY, f"--data_dir={tiny_data}", f"--out_dir={tmp_path}/x"]
    r = run([*base, "--depth_schedule=0:3x1"], check=False)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
        "error: depth_schedule '0:3x1': stage '0:3x1' must have 1 <= H <= H_cycles (2) and 1 <= L <= L_cycles (2)")
    r = run([*base, "--supervision_decay=1.5"], check=False)
    assert r.returncode == 1 and "error: supervision_decay 1.5 must be in (0, 1]" in r.stderr
