"""checkpoint.export_reference: one of our checkpoints written as the reference codebase of its
arch saves its own (REFERENCE.md §6, §8.4, §9.4).

(a) The file loads back here exactly as a reference checkpoint does (checkpoint.read_checkpoint,
    checkpoint.reference_config, evaluate.build_model) and the model it gives computes the same
    outputs, bit for bit, as the one exported.
(b) The file has what the reference's own loader requires: a strict load_state_dict (with
    assign=True, so dtypes matter) of the compiled loss-head model. The key sets, shapes and dtypes
    below were written down from the reference models' code; the reference's own checkpoints in
    tests/reference are reproduced exactly; all_config.yaml has the fields each codebase's
    PretrainConfig requires and parses the way URM's evaluate_trained_model.py parses it.
"""
import os
import re
import types
from dataclasses import asdict

import pytest
import torch
import yaml

import checkpoint
import evaluate
from model import TRM, TRMConfig
from test_model import golden_model, strip_prefix, tiny_batch
from test_variants import golden_variant

PREFIX = "_orig_mod.model.inner."  # torch.compile(ACTLossHead(model)): model.inner is the network

SMALL = dict(vocab_size=6, seq_len=16, num_puzzle_identifiers=3, hidden_size=32, num_heads=2, expansion=2.0,
             H_cycles=2, L_cycles=2, puzzle_emb_ndim=32, halt_max_steps=3, halt_exploration_prob=0.0)
ARCHS = {
    "trm_rope": dict(arch="trm", L_layers=2, puzzle_emb_len=2, pos_encodings="rope"),
    "trm_mlp_t": dict(arch="trm", L_layers=1, puzzle_emb_len=2, pos_encodings="none", mlp_t=True),
    # P = ceil(48 / 32) = 2 from the table width, the row zero-padded; learned positions
    "trm_learned": dict(arch="trm", L_layers=1, puzzle_emb_len=0, puzzle_emb_ndim=48, pos_encodings="learned"),
    "urm": dict(arch="urm", L_layers=2, puzzle_emb_len=0, mlp_kind="conv_swiglu"),
    "hrm": dict(arch="hrm", H_layers=1, L_layers=2, puzzle_emb_len=0, no_ACT_continue=False),
}

# What each reference's PretrainConfig requires (fields without a default), from its pretrain.py
REQUIRED = {
    "trm": {"arch", "data_paths", "global_batch_size", "epochs", "lr", "lr_min_ratio", "lr_warmup_steps",
            "weight_decay", "beta1", "beta2", "puzzle_emb_lr", "puzzle_emb_weight_decay"},
    "hrm": {"arch", "data_path", "global_batch_size", "epochs", "lr", "lr_min_ratio", "lr_warmup_steps",
            "weight_decay", "beta1", "beta2", "puzzle_emb_lr", "puzzle_emb_weight_decay"},
    "urm": {"arch", "data_path", "global_batch_size", "epochs", "lr", "lr_min_ratio", "lr_warmup_steps",
            "weight_decay", "beta1", "beta2", "target_q_update_every", "puzzle_emb_lr", "puzzle_emb_weight_decay"},
}
# ... and every field it has (TRM's and HRM's ignore others; URM's too, but its script parses text)
FIELDS = {
    "trm": REQUIRED["trm"] | {"data_paths_test", "evaluators", "project_name", "run_name", "load_checkpoint",
                              "checkpoint_path", "seed", "checkpoint_every_eval", "eval_interval",
                              "min_eval_interval", "eval_save_outputs", "ema", "ema_rate", "freeze_weights"},
    "hrm": REQUIRED["hrm"] | {"project_name", "run_name", "checkpoint_path", "seed", "checkpoint_every_eval",
                              "eval_interval", "eval_save_outputs"},
    "urm": REQUIRED["urm"] | {"evaluators", "grad_accum_steps", "project_name", "run_name", "checkpoint_path",
                              "load_checkpoint", "load_strict", "load_optimizer_state", "seed",
                              "checkpoint_every_eval", "eval_interval", "eval_save_outputs", "loop_deltas", "ema",
                              "ema_rate", "use_muon"},
}
# the arch section: the model config's fields (the rest come from the dataset) and name, loss
ARCH_FIELDS = {
    "trm": {"H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "expansion", "num_heads",
            "pos_encodings", "rms_norm_eps", "rope_theta", "halt_max_steps", "halt_exploration_prob",
            "forward_dtype", "mlp_t", "puzzle_emb_len", "no_ACT_continue", "puzzle_emb_ndim"},
    "hrm": {"H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "expansion", "num_heads",
            "pos_encodings", "rms_norm_eps", "rope_theta", "halt_max_steps", "halt_exploration_prob",
            "forward_dtype", "puzzle_emb_ndim"},
    "urm": {"num_layers", "hidden_size", "expansion", "num_heads", "pos_encodings", "attn_dropout", "mlp_dropout",
            "rms_norm_eps", "rope_theta", "loops", "L_cycles", "H_cycles", "forward_dtype", "puzzle_emb_ndim"},
}
MODEL_NAMES = {"trm": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
               "hrm": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1", "urm": "urm.urm@URM"}


def reference_keys(c: TRMConfig, fdtype: torch.dtype) -> dict:
    """{name: (shape, dtype)} of the state dict the reference model of c.arch has (read from
    trm.py, hrm_act_v1.py, urm.py and their layers.py / sparse_embedding.py): rotary tables,
    local_weights and local_ids are non-persistent; linear and embedding weights float32, the init
    states in the forward dtype, URM's conv bfloat16."""
    f32, h = torch.float32, c.hidden_size
    P = (c.puzzle_emb_len if c.arch == "trm" else 0) or -(-c.puzzle_emb_ndim // h)
    S = P + c.seq_len

    def inner(width):  # SwiGLU / ConvSwiGLU: _find_multiple(round(expansion * width * 2 / 3), 256)
        return -(-round(c.expansion * width * 2 / 3) // 256) * 256

    keys = {"embed_tokens.embedding_weight": ((c.vocab_size, h), f32), "lm_head.weight": ((c.vocab_size, h), f32),
            "q_head.weight": ((2, h), f32), "q_head.bias": ((2,), f32),
            "puzzle_emb.weights": ((c.num_puzzle_identifiers, c.puzzle_emb_ndim), f32)}
    for b in (["init_hidden"] if c.arch == "urm" else ["H_init", "L_init"]):
        keys[b] = ((h,), fdtype)
    if c.pos_encodings == "learned":
        keys["embed_pos.embedding_weight"] = ((S, h), f32)
    stacks = {"trm": [("L_level.layers", c.L_layers)], "urm": [("layers", c.L_layers)],
              "hrm": [("H_level.layers", c.H_layers), ("L_level.layers", c.L_layers)]}[c.arch]
    i_h = inner(h)
    for stack, n in stacks:
        for i in range(n):
            b = f"{stack}.{i}."
            if c.mlp_t:
                keys[b + "mlp_t.gate_up_proj.weight"] = ((2 * inner(S), S), f32)
                keys[b + "mlp_t.down_proj.weight"] = ((S, inner(S)), f32)
            else:
                keys[b + "self_attn.qkv_proj.weight"] = ((3 * h, h), f32)
                keys[b + "self_attn.o_proj.weight"] = ((h, h), f32)
            keys[b + "mlp.gate_up_proj.weight"] = ((2 * i_h, h), f32)
            keys[b + "mlp.down_proj.weight"] = ((h, i_h), f32)
            if c.arch == "urm":
                keys[b + "mlp.dwconv.weight"] = ((i_h, 1, 2), torch.bfloat16)
                keys[b + "mlp.dwconv.bias"] = ((i_h,), torch.bfloat16)
    return keys


def small_model(name, **kw):
    torch.manual_seed(0)
    model = TRM(TRMConfig(**{**SMALL, **ARCHS[name], **kw}))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from their zero / -5 start, so that every path through them counts
        model.q_head.weight.normal_(0, 0.3, generator=g)
        model.q_head.bias.normal_(0, 1.0, generator=g)
        model.puzzle_emb.weights.normal_(0, 1.0, generator=g)
    return model


def our_checkpoint(model, data_dir, ema=True, step=7):
    """A checkpoint dict as train.py's save() writes it (the parts export reads, and a few more)."""
    g = torch.Generator().manual_seed(2)
    averaged = None
    if ema:  # an EMA that differs from the live weights in every parameter
        averaged = {n: (p.detach().float() + 0.01 * torch.randn(p.shape, generator=g)).to(p.dtype)
                    for n, p in model.named_parameters()}
    return {"model": model.state_dict(), "ema": averaged, "optimizers": [], "step": step,
            "rng": {"torch": [torch.get_rng_state()], "cuda": None}, "model_config": asdict(model.cfg),
            "config": {"data_dir": str(data_dir), "test_data_dir": "", "global_batch_size": 8, "epochs": 20,
                       "eval_interval": 10, "lr": 3e-3, "lr_min_ratio": 1.0, "lr_warmup_steps": 10, "beta1": 0.9,
                       "beta2": 0.95, "weight_decay": 0.1, "puzzle_emb_lr": 1e-2, "puzzle_emb_weight_decay": 0.1,
                       "ema": ema, "ema_rate": 0.99, "seed": 0, "optimizer": "adam_atan2", "freeze_weights": False},
            "identifiers": ["<blank>", "a", "b"]}


def with_weights(cfg: TRMConfig, state: dict, forward_dtype: str) -> TRM:
    model = TRM(TRMConfig(**{**asdict(cfg), "forward_dtype": forward_dtype}))
    model.load_state_dict(state)
    return model.eval()


def run_steps(model, batch):
    """Logits and both Q values after every ACT step of model.solve, as float32."""
    seen = []
    model.solve(batch, on_step=lambda s, c, m, o: seen.append(
        {k: o[k].float() for k in ("logits", "q_halt_logits", "q_continue_logits")}))
    return seen


def reload(path, cfg, forward_dtype):
    """The exported file loaded here as a reference checkpoint is: read_checkpoint, the
    architecture from all_config.yaml (reference_config), build_model, load_weights."""
    kind, state = checkpoint.read_checkpoint(str(path))
    assert kind == "reference"
    settings = {**{k: None for k in checkpoint.ARCH_KEYS}, "ckpt": str(path), "config": "", "halt_max_steps": 0,
                "use_ema": True}
    meta = types.SimpleNamespace(vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
                                 num_puzzle_identifiers=cfg.num_puzzle_identifiers)
    model, _ = evaluate.build_model(kind, state, meta, settings, "cpu", forward_dtype)
    return model.eval()


def export(ck, tmp_path, **kw):
    name = checkpoint.reference_file_name(ck["model_config"]["arch"], ck["step"])
    return checkpoint.export_reference(ck, str(tmp_path / "ref" / name), **kw)


# ------------------------------------------------------------------------------------------
# (a) back here: the same model, the same outputs

@pytest.mark.parametrize("forward_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_export_loads_back_with_identical_outputs(tmp_path, name, forward_dtype):
    src = small_model(name)
    ck = our_checkpoint(src, tmp_path / "data")
    info = export(ck, tmp_path, forward_dtype=forward_dtype)
    arch = src.cfg.arch
    assert info["arch"] == arch and info["ema"] is True
    assert os.path.basename(info["checkpoint"]) == ("step_7.pt" if arch == "urm" else "step_7")
    assert info["config"] == str(tmp_path / "ref" / "all_config.yaml")

    ref = checkpoint.reference_config(info["checkpoint"])
    assert ref["data_paths"] == [str(tmp_path / "data")]
    for k in ("arch", "hidden_size", "num_heads", "expansion", "L_layers", "H_cycles", "L_cycles",
              "puzzle_emb_ndim", "pos_encodings", "halt_max_steps", "loss_type"):
        assert ref["model"][k] == getattr(src.cfg, k), k

    # the exported weights are the EMA ones; the init states (float32 here) as the forward dtype has them
    expected = with_weights(src.cfg, {**ck["model"], **ck["ema"]}, forward_dtype)
    back = reload(info["checkpoint"], src.cfg, forward_dtype)
    assert asdict(back.cfg) == asdict(expected.cfg)  # the whole architecture came back from the yaml
    batch = tiny_batch(B=4, L=SMALL["seq_len"], vocab=SMALL["vocab_size"])
    got, want = run_steps(back, batch), run_steps(expected, batch)
    assert len(got) == len(want) == SMALL["halt_max_steps"]
    for step, (a, b) in enumerate(zip(got, want)):
        for k in a:
            assert torch.equal(a[k], b[k]), (step, k)
    assert not torch.equal(got[-1]["logits"], run_steps(with_weights(src.cfg, ck["model"], forward_dtype), batch)[-1]["logits"])
    # a model trained in float32 and exported for a bfloat16 reference: its init states were rounded
    assert any("rounded to bfloat16" in n for n in info["notes"]) == (forward_dtype == "bfloat16")


def test_live_weights_without_ema_and_uncompiled_prefix(tmp_path):
    src = small_model("trm_rope")
    ck = our_checkpoint(src, tmp_path / "data")
    info = export(ck, tmp_path, use_ema=False, forward_dtype="float32", compiled=False)
    assert info["ema"] is False
    raw = torch.load(info["checkpoint"], weights_only=True)
    assert all(k.startswith("model.inner.") for k in raw)
    state = strip_prefix(raw)
    assert state.keys() == ck["model"].keys()
    assert all(torch.equal(state[k], ck["model"][k]) for k in state)
    back = reload(info["checkpoint"], src.cfg, "float32")
    batch = tiny_batch(B=4, L=SMALL["seq_len"], vocab=SMALL["vocab_size"])
    for a, b in zip(run_steps(back, batch), run_steps(src.eval(), batch)):
        assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------
# (b) what the reference's loader requires

@pytest.mark.parametrize("forward_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(ARCHS))
def test_file_layout_keys_shapes_dtypes(tmp_path, name, forward_dtype):
    src = small_model(name)
    ck = our_checkpoint(src, tmp_path / "data")
    info = export(ck, tmp_path, forward_dtype=forward_dtype)
    raw = torch.load(info["checkpoint"], weights_only=True)  # tensors and plain containers only
    arch = src.cfg.arch
    if arch == "urm":
        # URM's load_checkpoint: model_state_dict (required), step, rng_state (CPU generator);
        # optimizer_states absent, so that it does not load ours into its optimisers
        assert set(raw) == {"step", "model_state_dict", "rng_state"}
        assert raw["step"] == 7 and raw["rng_state"].dtype == torch.uint8
        assert torch.equal(raw["rng_state"], ck["rng"]["torch"][0])
        state = raw["model_state_dict"]
    else:
        state = raw  # TRM's load_checkpoint and HRM's evaluate.py: a bare state dict
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert all(k.startswith(PREFIX) for k in state)
    bare = {k[len(PREFIX):]: v for k, v in state.items()}
    want = reference_keys(src.cfg, getattr(torch, forward_dtype))
    assert set(bare) == set(want)  # exactly: the loaders are strict
    for k, (shape, dtype) in want.items():
        assert tuple(bare[k].shape) == shape and bare[k].dtype == dtype, (k, bare[k].shape, bare[k].dtype)
        assert bare[k].is_contiguous()
    # the values: the EMA parameters, the live buffers, each cast to its reference dtype
    for k, v in bare.items():
        assert torch.equal(v, {**ck["model"], **ck["ema"]}[k].to(v.dtype)), k


@pytest.mark.parametrize("name", list(ARCHS))
def test_all_config_yaml_fields(tmp_path, name):
    src = small_model(name)
    ck = our_checkpoint(src, tmp_path / "data")
    info = export(ck, tmp_path)
    with open(info["config"]) as f:
        text = f.read()
    cfg = yaml.safe_load(text)
    c, arch = src.cfg, src.cfg.arch
    assert REQUIRED[arch] <= set(cfg) <= FIELDS[arch]
    a = cfg["arch"]
    assert a["name"] == MODEL_NAMES[arch]
    assert a["loss"] == {"name": "losses@ACTLossHead", "loss_type": "stablemax_cross_entropy"}
    assert set(a) - {"name", "loss"} <= ARCH_FIELDS[arch]
    assert a["forward_dtype"] == "bfloat16" and a["expansion"] == 2 and isinstance(a["expansion"], int)
    layers = {"trm": dict(L_layers=c.L_layers, H_layers=0), "hrm": dict(L_layers=c.L_layers, H_layers=c.H_layers),
              "urm": dict(num_layers=c.L_layers)}[arch]
    steps = {"loops": c.halt_max_steps} if arch == "urm" else {"halt_max_steps": c.halt_max_steps}
    for k, v in {**layers, **steps, "hidden_size": 32, "num_heads": 2, "H_cycles": 2, "L_cycles": 2,
                 "puzzle_emb_ndim": c.puzzle_emb_ndim, "pos_encodings": c.pos_encodings}.items():
        assert a[k] == v, k
    if arch == "trm":
        assert (a["mlp_t"], a["puzzle_emb_len"], a["no_ACT_continue"]) == (c.mlp_t, c.puzzle_emb_len, True)
        assert cfg["data_paths"] == [str(tmp_path / "data")] and cfg["data_paths_test"] == []
    else:
        assert cfg["data_path"] == str(tmp_path / "data")
    assert (cfg["lr"], cfg["global_batch_size"], cfg["epochs"], cfg["eval_interval"]) == (3e-3, 8, 20, 10)
    if arch == "urm":
        # URM's evaluate_trained_model.py: everything from the line "beta1:" on is yaml for its
        # PretrainConfig (arch excluded), and the arch is picked out of the whole text by regex
        idx = text.find("\nbeta1:")
        assert idx != -1
        flat = yaml.safe_load(text[idx + 1:])
        assert REQUIRED["urm"] - {"arch"} <= set(flat) and "arch" not in flat
        for key, v in dict(loops=3, num_heads=2, num_layers=2, puzzle_emb_ndim=32, hidden_size=32, expansion=2,
                           H_cycles=2, L_cycles=2).items():
            assert int(re.search(rf"\b{key}:\s*(\d+)", text).group(1)) == v, key
        assert re.search(r"\bpos_encodings:\s*(\w+)", text).group(1) == "rope"


# the reference's own checkpoints (tests/reference, written by its code on CPU in float32)
FIXTURES = ["att_learned", "mlp_none", "arc_rope", "urm_small", "hrm_small"]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_reference_checkpoints_reproduced_exactly(golden, tmp_path, fixture):
    """Reference -> ours -> reference is the identity: load one of the reference's checkpoints
    here, export it (forward_dtype float32, as the fixtures were made) and get the same keys in
    the same order, the same dtypes and the same values back."""
    arch = fixture.split("_")[0]
    if arch in ("urm", "hrm"):
        model = golden_variant(golden, arch)
    else:
        model = golden_model(golden, fixture)
    ck = our_checkpoint(model, tmp_path / "data", ema=False, step=0)
    info = export(ck, tmp_path, forward_dtype="float32")
    orig = torch.load(os.path.join(golden, f"ckpt_{fixture}.pt"), weights_only=True)
    new = torch.load(info["checkpoint"], weights_only=True)
    if arch == "urm":
        assert set(new) <= set(orig) and new["step"] == orig["step"] == 0
        orig, new = orig["model_state_dict"], new["model_state_dict"]
    assert list(new) == list(orig)
    for k in orig:
        assert new[k].dtype == orig[k].dtype and torch.equal(new[k], orig[k]), k
    assert set(strip_prefix(orig)) == set(reference_keys(model.cfg, torch.float32))


# ------------------------------------------------------------------------------------------
# what the references cannot take

def test_models_no_reference_loader_takes(tmp_path):
    ck = our_checkpoint(small_model("trm_rope"), tmp_path / "data")
    no_table = TRM(TRMConfig(**{**SMALL, **ARCHS["trm_rope"], "puzzle_emb_ndim": 0}))
    with pytest.raises(ValueError, match="puzzle embedding"):
        checkpoint.export_reference({**ck, "model": no_table.state_dict(), "ema": None,
                                     "model_config": asdict(no_table.cfg)}, str(tmp_path / "a" / "step_1"))
    conv = TRM(TRMConfig(**{**SMALL, **ARCHS["trm_rope"], "mlp_kind": "conv_swiglu"}))
    with pytest.raises(ValueError, match="SwiGLU"):
        checkpoint.export_reference({**ck, "model": conv.state_dict(), "ema": None,
                                     "model_config": asdict(conv.cfg)}, str(tmp_path / "b" / "step_1"))
    with pytest.raises(ValueError, match="not one of our checkpoints"):
        checkpoint.export_reference(ck["model"], str(tmp_path / "c" / "step_1"))
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written


def test_notes_on_what_the_reference_does_differently(tmp_path):
    # URM with a float32 conv: rounded to URM's bfloat16, and said so
    src = small_model("urm", conv_dtype="float32")
    info = export(our_checkpoint(src, tmp_path / "data"), tmp_path)
    state = torch.load(info["checkpoint"], weights_only=True)["model_state_dict"]
    assert state[PREFIX + "layers.0.mlp.dwconv.weight"].dtype == torch.bfloat16
    assert any("conv weights were rounded to bfloat16" in n for n in info["notes"])
    # TRM with softmax: written as it is, with the reference's problem named
    src = small_model("trm_rope", loss_type="softmax")
    info = export(our_checkpoint(src, tmp_path / "data2"), tmp_path / "t")
    with open(info["config"]) as f:
        assert yaml.safe_load(f)["arch"]["loss"]["loss_type"] == "softmax_cross_entropy"
    assert checkpoint.reference_config(info["checkpoint"])["model"]["loss_type"] == "softmax"
    assert any("valid_mask" in n for n in info["notes"])


def test_rounding_note_only_when_the_forward_dtype_changes(tmp_path):
    """A model that ran in bfloat16 used its init states rounded already: nothing changes."""
    src = small_model("hrm", forward_dtype="bfloat16")
    info = export(our_checkpoint(src, tmp_path / "data"), tmp_path)
    assert not any("rounded" in n for n in info["notes"])
    state = torch.load(info["checkpoint"], weights_only=True)
    assert torch.equal(state[PREFIX + "H_init"], src.H_init.to(torch.bfloat16))


def test_export_command_round_trip(tmp_path):
    """evaluate.py --export=reference on a trained run of ours: evaluating the exported file as a
    reference checkpoint (its all_config.yaml giving the architecture) gives the same metrics and
    answers as evaluating ours."""
    import json
    import subprocess
    import sys

    import prepare_sudoku
    from conftest import ROOT
    from test_train import TINY

    env = {**os.environ, "TRM_USE_EXT": "off"}
    data = prepare_sudoku.build(str(tmp_path / "data"), source="generate", size=4, num_train=32, num_test=8,
                                min_blanks=6, seed=0)
    run = str(tmp_path / "run")

    def py(*args):
        r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    py("train.py", *TINY, f"--data_dir={data}", f"--out_dir={run}", "--epochs=2", "--eval_interval=2")
    out = py("evaluate.py", "--export=reference", f"--ckpt={run}/ckpt.pt", f"--out={tmp_path}/ref/step_4")
    assert f"wrote {tmp_path}/ref/step_4 (trm, EMA weights" in out
    py("evaluate.py", f"--ckpt={tmp_path}/ref/step_4", f"--data={data}", f"--out_dir={tmp_path}/e1", "--batch_size=16",
       "--trace=8")
    py("evaluate.py", f"--ckpt={run}/ckpt.pt", f"--out_dir={tmp_path}/e2", "--trace=8")
    r1, r2 = (json.load(open(tmp_path / e / "report.json")) for e in ("e1", "e2"))
    assert r1["provenance"]["checkpoint_kind"] == "reference" and r1["metrics"] == r2["metrics"]
    t1, t2 = (json.load(open(tmp_path / e / "trace.json")) for e in ("e1", "e2"))
    assert [t["steps"] for t in t1] == [t["steps"] for t in t2] and [t["q_halt"] for t in t1] == [t["q_halt"] for t in t2]
