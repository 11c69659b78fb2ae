"""model.py's arch switch: URM (REFERENCE.md §8) and HRM (§9) against their reference code's own
outputs (tests/reference, *_urm_small and *_hrm_small), where gradient flows in each of the three
recursions, the causal ConvSwiGLU and its two dtypes, and the checks on settings."""
import json
import os
from collections import Counter

import pytest
import torch

from conftest import assert_preds_match, note_excluded_rows
from model import TRM, Block, ConvSwiGLU, TRMConfig
from test_model import close, strip_prefix, tiny_batch, tiny_cfg, train_a_few_steps

# the reference configs' names for our settings, and what the reference code fixes without a setting
RENAME = {"num_layers": "L_layers", "loops": "halt_max_steps"}
FIXED = {"urm": dict(arch="urm", mlp_kind="conv_swiglu", puzzle_emb_len=0, no_ACT_continue=True,
                     halt_exploration_prob=0.1),  # hard-coded in URM
         "hrm": dict(arch="hrm", puzzle_emb_len=0, no_ACT_continue=False)}
# tests/reference/README.md: URM's bf16 convolution gets looser tolerances; HRM is float32 like TRM.
# The logits tolerance is also the near-tie width of the prediction comparison (conftest).
TOL = {"urm": dict(logits=2e-2, q=1e-2, loss=1e-3, grad=2e-2),
       "hrm": dict(logits=1e-4, q=1e-4, loss=1e-5, grad=1e-4)}


def golden_variant(golden, arch, **kw):
    """model.py built from the reference config, loaded strictly with the reference checkpoint
    (URM's is a training-state dict with the weights under model_state_dict)."""
    with open(os.path.join(golden, f"config_{arch}_small.json")) as f:
        c = {RENAME.get(k, k): v for k, v in json.load(f).items()}
    fields = set(TRMConfig.__dataclass_fields__)
    torch.manual_seed(0)
    model = TRM(TRMConfig(**{**{k: v for k, v in c.items() if k in fields}, **FIXED[arch], **kw}))
    sd = torch.load(os.path.join(golden, f"ckpt_{arch}_small.pt"), weights_only=True)
    model.load_state_dict(strip_prefix(sd.get("model_state_dict", sd)), strict=True)
    return model


def record_inner_calls(model):
    """Wrap model.recurse: per call, the Q values, the new state's position 0 and how many times
    each block / level ran, as the fixtures' inner_calls hold them."""
    calls, counts = [], Counter()
    for name, m in model.named_modules():
        kind = "block" if isinstance(m, Block) else name if name in ("L_level", "H_level") else None
        if kind:
            m.register_forward_hook(lambda m, args, out, kind=kind: counts.update([kind]))
    recurse = model.recurse

    def wrapped(*args):
        counts.clear()
        z_H, z_L, logits, q_halt, q_continue = out = recurse(*args)
        calls.append({"q_halt_logits": q_halt, "q_continue_logits": q_continue,
                      "hidden_pos0": z_H[:, 0], "applications": dict(counts)})
        return out

    model.recurse = wrapped
    return calls


def reference_rows(preds, labels, q_halt):
    """Per row, what the metrics sum (model.py's loss_head, the references' definitions), from a
    set of answers: token accuracy, exact, q_halt right (q_halt >= 0 exactly when exact), labelled."""
    mask = labels != -100
    count = mask.sum(-1)
    correct = (mask & (preds == labels)).sum(-1)
    exact = correct == count
    return {"accuracy": correct.double() / count.clamp_min(1), "exact_accuracy": exact,
            "q_halt_accuracy": (q_halt >= 0) == exact, "labelled": count > 0}


def check_step(arch, out, loss, metrics, carry, ref, labels, what):
    """One ACT call against a fixture step, within the arch's tolerances. The answers equal the
    reference's but at a bounded number of near-ties (conftest.assert_preds_match; URM with its
    looser logits tolerance). The accuracy, exact and q-halt counts are compared always, leaving
    out only the rows that hold an excused near-tie (their number goes to the terminal summary)."""
    t = TOL[arch]
    close(out["logits"], ref["logits"], atol=t["logits"], rtol=1e-4)
    for k in ("q_halt_logits", "q_continue_logits", "target_q_continue"):
        if k in ref:
            close(out[k], ref[k], atol=t["q"], rtol=1e-4)
    close(carry.z_H[:, 0], ref["z_H_pos0"], atol=t["logits"], rtol=1e-4)
    excluded = assert_preds_match(out["preds"], ref["preds"], ref["logits"], atol=t["logits"], what=what).any(-1)
    note_excluded_rows(what, int(excluded.sum()))
    torch.testing.assert_close(loss.double(), ref["loss"], rtol=t["loss"], atol=0)
    assert torch.equal(carry.steps, ref["carry_steps"])
    assert torch.equal(carry.halted, ref["carry_halted"])
    assert set(metrics) == set(ref["metrics"])
    for k in ("count", "steps"):
        assert int(metrics[k]) == int(ref["metrics"][k]), k
    for k in ("lm_loss", "q_halt_loss", "q_continue_loss"):
        if k in ref["metrics"]:
            torch.testing.assert_close(metrics[k].double(), ref["metrics"][k].double(), rtol=t["loss"], atol=1e-6, msg=k)
    # the metrics count the halted, labelled rows; theirs per row follow from the reference's
    # answers and q values (checked: they sum to its metrics), ours are the model's per-row results
    theirs = reference_rows(ref["preds"].long(), labels.long(), ref["q_halt_logits"])
    ours = {"accuracy": out["token_accuracy"], "exact_accuracy": out["exact"], "q_halt_accuracy": out["q_halt_correct"]}
    counted = ref["carry_halted"] & theirs["labelled"]
    assert torch.equal(counted, carry.halted & out["labelled"])
    for k in ours:
        torch.testing.assert_close(theirs[k][counted].double().sum(), ref["metrics"][k].double(),
                                   rtol=1e-5, atol=1e-5, msg=f"{k}: the fixture's rows")
        # the model's metric less the excluded rows' share == the reference's less theirs
        left_out = counted & excluded
        torch.testing.assert_close(metrics[k].double() - ours[k][left_out].double().sum(),
                                   ref["metrics"][k].double() - theirs[k][left_out].double().sum(),
                                   rtol=1e-5, atol=1e-5, msg=f"{k} (leaving out {int(left_out.sum())} rows)")


def check_inner_calls(arch, calls, ref_calls):
    assert len(calls) == len(ref_calls)
    for ours, ref in zip(calls, ref_calls):
        assert ours["applications"] == ref["applications"]
        close(ours["q_halt_logits"], ref["q_halt_logits"], atol=TOL[arch]["q"], rtol=1e-4)
        close(ours["q_continue_logits"], ref["q_continue_logits"], atol=TOL[arch]["q"], rtol=1e-4)
        close(ours["hidden_pos0"], ref["hidden_pos0"], atol=TOL[arch]["logits"], rtol=1e-4)


@pytest.mark.parametrize("arch", ["urm", "hrm"])
def test_eval_matches_reference(golden, arch):
    model = golden_variant(golden, arch).eval()
    ref = torch.load(os.path.join(golden, f"eval_{arch}_small.pt"), weights_only=True)
    calls = record_inner_calls(model)
    batch = ref["batch"]
    carry = model.initial_carry(batch)
    with torch.no_grad():
        for i, r in enumerate(ref["steps"]):
            carry, loss, metrics, out = model(carry, batch)
            check_step(arch, out, loss, metrics, carry, r, batch["labels"], f"{arch} eval step {i}")
            assert bool(carry.halted.all()) == r["all_finish"], f"step {i}"
    assert len(ref["steps"]) == model.cfg.halt_max_steps
    assert [c["applications"] for c in calls] == [ref["inner_call_applications"]] * len(ref["steps"])


@pytest.mark.parametrize("arch", ["urm", "hrm"])
def test_train_step_matches_reference(golden, arch, monkeypatch):
    model = golden_variant(golden, arch).train()
    ref = torch.load(os.path.join(golden, f"train_{arch}_small.pt"), weights_only=True)
    if "exploration" in ref:
        # URM explores with probability 0.1 whatever the config: replay that step's two draws
        # (model.forward draws torch.rand_like(q_halt), then torch.randint_like(steps, 2, max + 1))
        e = ref["exploration"]
        assert torch.equal((e["rand"] < 0.1) * e["randint"], e["min_halt_steps"])
        monkeypatch.setattr(torch, "rand_like", lambda t: e["rand"].clone())
        monkeypatch.setattr(torch, "randint_like", lambda t, low, high: e["randint"].clone())
    calls = record_inner_calls(model)
    batch = ref["batch"]
    carry, loss, metrics, out = model(model.initial_carry(batch), batch)
    monkeypatch.undo()
    (loss * ref["backward_scale"]).backward()

    check_step(arch, out, loss, metrics, carry, {**ref["outputs"], **ref}, batch["labels"], f"{arch} train step")
    assert ("target_q_continue" in out) == (arch == "hrm")
    check_inner_calls(arch, calls, ref["inner_calls"])
    params = dict(model.named_parameters())
    ref_grads = strip_prefix(ref["grads"])
    # exactly the parameters the reference leaves without gradient get none (none, in both)
    no_grad = set(strip_prefix(dict.fromkeys(ref["params_without_grad"])))
    assert {k for k, p in params.items() if p.grad is None} == no_grad
    assert set(ref_grads) == set(params) - no_grad
    for k, g in ref_grads.items():
        assert params[k].grad.dtype == g.dtype, k  # URM's conv gradients are bf16
        err = (params[k].grad.float() - g.float()).abs().max().item()
        assert err <= TOL[arch]["grad"] * g.abs().max().item() + 1e-12, f"{k}: max |diff| {err}"
    emb = model.puzzle_emb
    err = (emb.local_weights.grad - ref["puzzle_emb_local_grad"]).abs().max().item()
    assert err <= TOL[arch]["grad"] * ref["puzzle_emb_local_grad"].abs().max().item()
    assert torch.equal(emb.local_ids.long(), ref["puzzle_emb_local_ids"].long())


# ------------------------------------------------------------------------------------------
# where gradient flows


def expected_updates(arch, H_cycles, L_cycles):
    """The updates of one ACT step in order, as (net, with gradient), from REFERENCE.md §8-§9."""
    if arch == "urm":  # iterations; the last L_cycles with gradient
        n = H_cycles * L_cycles
        return [("layers", i >= n - L_cycles) for i in range(n)]
    updates = []
    for _ in range(H_cycles):
        updates += ["L_level"] * L_cycles + ["H_level" if arch == "hrm" else "L_level"]
    # TRM: the whole last cycle (L_cycles + 1 updates); HRM: the last z_L and the last z_H update
    n_grad = 2 if arch == "hrm" else L_cycles + 1
    return [(net, i >= len(updates) - n_grad) for i, net in enumerate(updates)]


VARIANT_KW = {"trm": dict(),
              "urm": dict(arch="urm", mlp_kind="conv_swiglu", puzzle_emb_len=0),
              "hrm": dict(arch="hrm", H_layers=1, puzzle_emb_len=0, no_ACT_continue=False)}


@pytest.mark.parametrize("arch", ["trm", "urm", "hrm"])
def test_gradient_reaches_exactly_the_last_updates(arch):
    """Every block application records whether its output is part of the autograd graph; the
    order must be the arch's schedule: a prefix without gradient, then the updates with it."""
    torch.manual_seed(0)
    H_cycles, L_cycles = 3, 2
    model = TRM(tiny_cfg(L_layers=2, H_cycles=H_cycles, L_cycles=L_cycles, **VARIANT_KW[arch])).train()
    seen = []
    for name, m in model.named_modules():
        if isinstance(m, Block):
            net = name.rsplit(".layers.", 1)[0] if ".layers." in name else "layers"
            m.register_forward_hook(lambda m, args, out, net=net: seen.append((net, out.requires_grad)))
    batch = tiny_batch()
    carry, loss, _, _ = model(model.initial_carry(batch), batch)
    n_layers = {"layers": 2, "L_level": 2, "H_level": 1}
    expected = [u for u in expected_updates(arch, H_cycles, L_cycles) for _ in range(n_layers[u[0]])]
    if arch == "hrm":  # the Q-continue target's extra step: the same schedule, all without gradient
        expected += [(net, False) for net, _ in expected]
    assert seen == expected
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert not carry.z_H.requires_grad and not carry.z_L.requires_grad
    if arch == "urm":
        assert carry.z_L is carry.z_H  # one state


def test_urm_halted_rows_restart_from_init_hidden():
    """URM keeps one state across ACT calls; a halted row restarts from init_hidden and then
    computes exactly what a fresh carry computes."""
    torch.manual_seed(0)
    model = TRM(tiny_cfg(**VARIANT_KW["urm"])).train()
    assert not hasattr(model, "H_init") and not hasattr(model, "L_level")
    b1, b2 = tiny_batch(seed=1), tiny_batch(seed=2)
    carry, _, _, _ = model(model.initial_carry(b1), b1)
    carry.halted = torch.tensor([False, True, False, True])
    new, _, _, out = model(carry, b2)
    assert new.steps.tolist() == [2, 1, 2, 1]
    _, _, _, out_fresh = model(model.initial_carry(b2), b2)
    torch.testing.assert_close(out["logits"][[1, 3]], out_fresh["logits"][[1, 3]])
    assert not torch.allclose(out["logits"][[0, 2]], out_fresh["logits"][[0, 2]])


# ------------------------------------------------------------------------------------------
# ConvSwiGLU


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_conv_swiglu_is_causal(dtype):
    torch.manual_seed(0)
    mlp = ConvSwiGLU(32, 2.0, dtype)
    x = torch.randn(2, 12, 32)
    y = mlp(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    for t in (0, 1, 5, 11):
        x2 = x.clone()
        x2[:, t] += torch.randn(2, 32)
        y2 = mlp(x2)
        assert torch.equal(y2[:, :t], y[:, :t]), t  # the past does not see position t
        assert (y2[:, t] != y[:, t]).any(), t      # position t does
        if t + 1 < x.shape[1]:
            assert (y2[:, t + 1] != y[:, t + 1]).any(), t  # nor does its right neighbour (kernel 2)
        if t + 2 < x.shape[1]:
            assert torch.equal(y2[:, t + 2:], y[:, t + 2:]), t  # the kernel reaches one position


def test_conv_swiglu_formula():
    """c[t] = w0 * u[t-1] + w1 * u[t] + b per channel, u[-1] = 0, then down(silu(c))."""
    torch.manual_seed(0)
    mlp = ConvSwiGLU(16, 4.0, torch.float32)
    x = torch.randn(3, 7, 16)
    gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
    u = torch.nn.functional.silu(gate) * up                              # [B, S, inner]
    w, b = mlp.dwconv.weight[:, 0], mlp.dwconv.bias                      # [inner, 2], [inner]
    prev = torch.cat((torch.zeros_like(u[:, :1]), u[:, :-1]), dim=1)
    c = w[:, 0] * prev + w[:, 1] * u + b
    torch.testing.assert_close(mlp(x), mlp.down_proj(torch.nn.functional.silu(c)), atol=1e-5, rtol=1e-5)
    # PyTorch's default Conv1d init: uniform(+-1/sqrt(fan_in)), fan_in = 2
    assert mlp.dwconv.weight.shape == (256, 1, 2) and mlp.dwconv.weight.abs().max() <= 2 ** -0.5


@pytest.mark.parametrize("conv_dtype", ["bfloat16", "float32"])
def test_conv_dtype_setting_loads_reference_weights(golden, conv_dtype):
    model = golden_variant(golden, "urm", conv_dtype=conv_dtype)  # strict load, cast to conv_dtype
    ckpt = torch.load(os.path.join(golden, "ckpt_urm_small.pt"), weights_only=True)
    sd = strip_prefix(ckpt["model_state_dict"])
    for name, p in model.named_parameters():
        want = getattr(torch, conv_dtype) if ".dwconv." in name else torch.float32
        assert p.dtype == want, name
        assert torch.equal(p.float(), sd[name].float()), name  # bf16 -> float32 is exact
    ref = torch.load(os.path.join(golden, "eval_urm_small.pt"), weights_only=True)
    with torch.no_grad():
        _, _, out = model.eval().solve(ref["batch"])
    assert out["logits"].dtype == torch.float32
    err = (out["logits"] - ref["steps"][-1]["logits"]).abs().max().item()
    # bf16 reproduces URM within its tolerance (bf16 convolution rounding differs between torch
    # builds: tests/reference/README.md); float32 moves the logits a little more (up to about 0.01)
    assert err <= (TOL["urm"]["logits"] if conv_dtype == "bfloat16" else 5e-2), err


# ------------------------------------------------------------------------------------------
# sizes and settings


def test_parameter_counts_match_spec():
    """REFERENCE.md §8 and §9: the recipes' trainable parameter counts (ARC, vocabulary 12)."""
    arc = dict(vocab_size=12, seq_len=900, num_puzzle_identifiers=1, hidden_size=512, num_heads=8,
               expansion=4.0, puzzle_emb_ndim=512, puzzle_emb_len=0)
    urm = TRM(TRMConfig(**arc, arch="urm", mlp_kind="conv_swiglu", L_layers=4))
    hrm = TRM(TRMConfig(**arc, arch="hrm", H_layers=4, L_layers=4, no_ACT_continue=False))
    assert urm.num_params() == 13_663_234
    assert hrm.num_params() == 27_276_290
    assert urm.P == hrm.P == 1


@pytest.mark.parametrize("kw, msg", [
    (dict(arch="xrm"), "arch must be"),
    (dict(H_layers=2), "H_layers"),
    (dict(arch="hrm", no_ACT_continue=False, puzzle_emb_len=0), "H_layers"),
    (dict(arch="hrm", H_layers=1, puzzle_emb_len=0), "no_ACT_continue=False"),
    (dict(arch="hrm", H_layers=1, puzzle_emb_len=0, no_ACT_continue=False, pos_encodings="none"), "rope"),
    (dict(arch="urm", puzzle_emb_len=0, pos_encodings="learned"), "RoPE"),
    (dict(arch="urm", puzzle_emb_len=0, mlp_t=True), "mlp_t"),
    (dict(arch="urm", puzzle_emb_len=0, no_ACT_continue=False), "no_ACT_continue=True"),
    (dict(arch="urm", puzzle_emb_len=2), "puzzle_emb_len=0"),
    (dict(mlp_kind="conv"), "mlp_kind"),
    (dict(mlp_kind="conv_swiglu", conv_dtype="float16"), "conv_dtype"),
])
def test_impossible_settings_raise(kw, msg):
    with pytest.raises(ValueError, match=msg):
        tiny_cfg(**kw)


@pytest.mark.parametrize("kw", [dict(VARIANT_KW["hrm"], pos_encodings="learned"),
                                dict(VARIANT_KW["urm"], conv_dtype="float32", loss_type="softmax"),
                                dict(mlp_kind="conv_swiglu")])  # TRM with URM's channel MLP
def test_variants_train(kw):
    model, metrics, out = train_a_few_steps(tiny_cfg(**kw))
    assert ("q_continue_loss" in metrics) == (kw.get("arch") == "hrm")
