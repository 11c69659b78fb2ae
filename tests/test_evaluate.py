# evaluate.py: ARC decoding and de-augmentation, voting and pass@K on hand-made predictions, the
# submission format, reference-layout checkpoints, and end-to-end runs (on the reference's own
# checkpoints and data, compared with its outputs; on a tiny ARC checkpoint trained here).
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_preds_match
from data import dihedral
import evaluate
from checkpoint import load_weights, read_checkpoint
from evaluate import ARCEvaluator, crop, grid_key, inverse_variant
from model import TRM, TRMConfig

GOLDEN_ARGS = ["--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--H_cycles=2", "--L_cycles=3",
               "--L_layers=2", "--puzzle_emb_ndim=64", "--puzzle_emb_len=16", "--halt_max_steps=4", "--batch_size=8"]


def canvas(grid, dr=0, dc=0):
    """900 tokens with grid at (dr, dc) and its EOS, as prepare_arc.py lays it out."""
    c = np.zeros((30, 30), np.int64)
    h, w = grid.shape
    c[dr:dr + h, dc:dc + w] = grid + 2
    if dr + h < 30:
        c[dr + h, dc:dc + w] = 1
    if dc + w < 30:
        c[dr:dr + h, dc + w] = 1
    return c.ravel()


def test_crop():
    g = np.arange(12).reshape(3, 4) % 10
    np.testing.assert_array_equal(crop(canvas(g)), g)
    full = np.full((30, 30), 7)
    np.testing.assert_array_equal(crop(canvas(full)), full)
    assert crop(np.zeros(900, np.int64)).shape == (0, 0)
    # a ragged prediction: the largest top-left rectangle of colours (here 2 rows x 3 > 3 rows x 1)
    c = np.zeros((30, 30), np.int64)
    c[0, :5] = 3
    c[1, :3] = 4
    c[2, :1] = 5
    np.testing.assert_array_equal(crop(c.ravel()), [[1, 1, 1], [2, 2, 2]])


@pytest.mark.parametrize("t", range(8))
def test_deaugmentation_round_trip(t):
    rng = np.random.default_rng(t)
    g = rng.integers(0, 10, (5, 7)).astype(np.uint8)
    m = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
    name = f"task|||t{t}|||{''.join(map(str, m))}"
    task, undo = inverse_variant(name)
    assert task == "task"
    variant = dihedral(m[g], t)
    np.testing.assert_array_equal(undo(crop(canvas(variant))), g)
    assert inverse_variant("plain")[0] == "plain"


def arc_dir(tmp_path, tasks):
    """A minimal ARC dataset directory: identifiers and test puzzles only (what voting reads)."""
    names = ["<blank>"] + [n for t in tasks.values() for n in t.pop("_variants")]
    with open(tmp_path / "identifiers.json", "w") as f:
        json.dump(names, f)
    with open(tmp_path / "test_puzzles.json", "w") as f:
        json.dump(tasks, f)
    return str(tmp_path), names


def feed(ev, names, items):
    """items: (variant name, input grid (original), predicted grid (original), q logit); the
    grids are augmented as the variant says before they go in, as the model would see them."""
    inputs, ids, preds, qs = [], [], [], []
    for name, inp, pred, q in items:
        aug = (lambda g: g) if "|||" not in name else (
            lambda g, t=int(name.split("|||")[1][1:]), m=np.array([int(c) for c in name.split("|||")[2]]): dihedral(m[g], t))
        inputs.append(canvas(aug(np.array(inp))))
        preds.append(canvas(aug(np.array(pred))))
        ids.append(names.index(name))
        qs.append(q)
    ev.update(torch.tensor(np.array(inputs)), torch.tensor(ids), torch.tensor(np.array(preds)), torch.tensor(qs))


def test_voting_and_pass_at_k(tmp_path):
    A, B, C, D = [[1]], [[2]], [[3]], [[4, 4]]
    tasks = {
        # two test inputs: the first solved by majority, the second right only as runner-up
        "t1": {"train": [{"input": [[0]], "output": [[0]]}],
               "test": [{"input": [[5]], "output": A}, {"input": [[6]], "output": B}],
               "_variants": ["t1", "t1|||t1|||0213456789", "t1|||t5|||0987654321"]},
        # a tie in votes, broken by the mean q: the right answer has the higher mean
        "t2": {"train": [{"input": [[0]], "output": [[0]]}], "test": [{"input": [[7, 8]], "output": D}],
               "_variants": ["t2", "t2|||t2|||0123456798"]},
        # a single candidate, and a task nobody predicted
        "t3": {"train": [{"input": [[0]], "output": [[0]]}], "test": [{"input": [[9]], "output": C}], "_variants": ["t3"]},
        "t4": {"train": [{"input": [[0]], "output": [[0]]}], "test": [{"input": [[1, 1]], "output": A}], "_variants": ["t4"]},
    }
    d, names = arc_dir(tmp_path, tasks)
    ev = ARCEvaluator(d, pass_ks=(1, 2, 5))
    feed(ev, names, [
        ("t1", [[5]], A, 0.0), ("t1|||t1|||0213456789", [[5]], A, -1.0), ("t1|||t5|||0987654321", [[5]], C, 3.0),
        ("t1", [[6]], C, 0.0), ("t1|||t1|||0213456789", [[6]], C, 0.0), ("t1|||t5|||0987654321", [[6]], B, -2.0),
        ("t2", [[7, 8]], D, 2.0), ("t2|||t2|||0123456798", [[7, 8]], [[4, 5]], -2.0),
        ("t3", [[9]], C, 0.0),
    ])
    res = ev.result(bootstrap=200, seed=0)
    m = res["metrics"]
    # t1: 1/2 at pass@1, 2/2 at pass@2; t2: 1; t3: 1; t4: 0 (no prediction)
    assert m["pass@1"] == pytest.approx((0.5 + 1 + 1 + 0) / 4)
    assert m["pass@2"] == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert m["pass@5"] == m["pass@2"]
    lo, hi = m["pass@1_ci95"]
    assert 0 <= lo <= m["pass@1"] <= hi <= 1
    sub = res["submission"]
    assert list(sub) == ["t1", "t2", "t3", "t4"]
    assert sub["t1"] == [{"attempt_1": A, "attempt_2": C}, {"attempt_1": C, "attempt_2": B}]
    assert sub["t2"] == [{"attempt_1": D, "attempt_2": [[4, 5]]}]
    assert sub["t3"] == [{"attempt_1": C, "attempt_2": C}]      # one candidate: repeated
    assert sub["t4"] == [{"attempt_1": [[0]], "attempt_2": [[0]]}]  # no prediction: blank, order kept
    rows = {(r["task"], r["test_index"]): r for r in res["rows"]}
    assert rows[("t1", 1)]["correct@1"] is False and rows[("t1", 1)]["correct@2"] is True
    assert rows[("t1", 0)]["votes"] == 3 and [c["votes"] for c in rows[("t1", 0)]["top"]] == [2, 1]
    assert rows[("t4", 0)]["votes"] == 0 and rows[("t4", 0)]["top"] == []
    # HRM's scoring: a task counts only when all its test inputs are solved (t1 fails at pass@1)
    ev.scoring = "all_or_nothing"
    m = ev.result()["metrics"]
    assert m["pass@1"] == pytest.approx((0 + 1 + 1 + 0) / 4) and m["pass@2"] == pytest.approx(3 / 4)
    # canonical mode: only the unaugmented variant votes
    ev2 = ARCEvaluator(d, pass_ks=(1,), variants="canonical")
    feed(ev2, names, [("t1", [[6]], B, 0.0), ("t1|||t1|||0213456789", [[6]], C, 0.0),
                      ("t1|||t5|||0987654321", [[6]], C, 0.0)])
    assert ev2.result()["rows"][1]["correct@1"] is True


def test_votes_curve_and_merge(tmp_path):
    tasks = {"t": {"train": [{"input": [[0]], "output": [[0]]}], "test": [{"input": [[5]], "output": [[1]]}],
                   "_variants": ["t"] + [f"t|||t0|||0{''.join(map(str, np.roll(np.arange(1, 10), k)))}" for k in range(1, 8)]}}
    d, names = arc_dir(tmp_path, tasks)
    half = [ARCEvaluator(d), ARCEvaluator(d)]
    for i, n in enumerate(names[1:]):  # 5 right, 3 wrong, split across two "ranks"
        feed(half[i % 2], names, [(n, [[5]], [[1]] if i < 5 else [[2]], 0.0)])
    ev = ARCEvaluator(d)
    ev.merge([h.votes for h in half])
    curve = ev.result(curve_repeats=4)["curve"]
    assert [c["votes"] for c in curve] == [1, 2, 4, 8]
    assert curve[-1]["pass@1"] == 1.0 and curve[-1]["pass@1_std"] == 0.0
    assert 0 < curve[0]["pass@1"] < 1 and curve[0]["pass@2"] >= curve[0]["pass@1"]


# -----------------------------------------------------------------------------
# checkpoints

def tiny_model():
    torch.manual_seed(0)
    cfg = TRMConfig(vocab_size=11, seq_len=16, num_puzzle_identifiers=3, hidden_size=32, num_heads=2,
                    L_layers=1, H_cycles=2, L_cycles=1, puzzle_emb_ndim=32, puzzle_emb_len=2, halt_max_steps=3)
    return TRM(cfg)


@pytest.mark.parametrize("prefix", ["_orig_mod.model.inner.", "model.inner."])
def test_reference_layout_loads(tmp_path, prefix):
    src = tiny_model()
    path = tmp_path / "ref.pt"
    torch.save({prefix + k: v for k, v in src.state_dict().items()}, path)
    kind, state = read_checkpoint(str(path))
    assert kind == "reference"
    torch.manual_seed(1)
    dst = TRM(src.cfg)
    load_weights(dst, state, str(path))
    batch = {"inputs": torch.randint(1, 11, (4, 16)), "labels": torch.randint(1, 11, (4, 16)),
             "puzzle_identifiers": torch.tensor([0, 1, 2, 1])}
    src.eval(), dst.eval()
    _, m1, o1 = src.solve(batch)
    _, m2, o2 = dst.solve(batch)
    assert torch.equal(o1["logits"], o2["logits"]) and torch.equal(o1["q_halt_logits"], o2["q_halt_logits"])


def test_checkpoint_errors(tmp_path, capsys):
    src = tiny_model()
    sd = {"model.inner." + k: v for k, v in src.state_dict().items()}
    bad = dict(sd)
    bad.pop("model.inner.lm_head.weight")
    bad["model.inner.extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    _, state = read_checkpoint(str(tmp_path / "bad.pt"))
    with pytest.raises(SystemExit, match=r"missing \['lm_head.weight'\]; unexpected \['extra.weight'\]"):
        load_weights(TRM(src.cfg), state, "bad.pt")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(SystemExit, match="not a checkpoint"):
        read_checkpoint(str(tmp_path / "other.pt"))
    (tmp_path / "trunc.pt").write_bytes(open(tmp_path / "bad.pt", "rb").read()[:200])
    with pytest.raises(SystemExit, match="trunc.pt"):
        read_checkpoint(str(tmp_path / "trunc.pt"))
    # a puzzle table of another size: the mean of its rows, with a warning
    grown = TRMConfig(**{**src.cfg.__dict__, "num_puzzle_identifiers": 5})
    dst = TRM(grown)
    load_weights(dst, {k[len("model.inner."):]: v for k, v in sd.items()}, "x.pt")
    assert "the puzzle table has 3 rows and the dataset 5" in capsys.readouterr().out
    want = src.puzzle_emb.weights.mean(0)
    assert torch.allclose(dst.puzzle_emb.weights, want.expand(5, -1))


# -----------------------------------------------------------------------------
# end to end

def run_eval(*args, timeout=600):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, "TRM_USE_EXT": "off"})
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("name, extra", [("att_learned", ["--pos_encodings=learned", "--mlp_t=False"]),
                                         ("mlp_none", ["--pos_encodings=none", "--mlp_t=True"])])
def test_reference_checkpoint_end_to_end(golden, tmp_path, name, extra):
    """The reference's checkpoint on its own dataset: the answers and q values after each ACT step
    of the first test batch (the trace) equal the reference's outputs."""
    out = tmp_path / "eval"
    text = run_eval(f"--ckpt={golden}/ckpt_{name}.pt", f"--data={golden}/sudoku_ref_data", *GOLDEN_ARGS, *extra,
                    "--trace=8", f"--out_dir={out}")
    assert "reference checkpoint" in text
    ref = torch.load(os.path.join(golden, f"eval_{name}.pt"), weights_only=True)
    with open(out / "report.json") as f:
        report = json.load(f)
    traces = json_traces(out)
    assert len(traces) == 8
    for s, step in enumerate(ref["steps"]):
        got = torch.tensor([t["steps"][s] for t in traces])
        assert_preds_match(got, step["preds"], step["logits"], what=f"{name} step {s}")
        for row in range(8):
            assert traces[row]["q_halt"][s] == pytest.approx(float(step["q_halt_logits"][row]), abs=1e-4)
    # the first batch's final exact count and token accuracy, from the traced answers, are the
    # reference's metrics on that batch (Sudoku labels every cell: target 0 never occurs)
    target = torch.tensor([t["target"] for t in traces])
    right = torch.tensor([t["steps"][-1] for t in traces]) == target
    final = ref["steps"][-1]["metrics"]
    assert int(right.all(-1).sum()) == int(final["exact_accuracy"])
    assert float(right.float().mean(-1).sum()) == pytest.approx(float(final["accuracy"]), abs=1e-5)
    assert len(report["steps"]) == 4
    prov = report["provenance"]
    assert prov["checkpoint_kind"] == "reference" and len(prov["checkpoint_sha256"]) == 64
    assert len(prov["dataset_fingerprint"]) == 64 and prov["examples_per_s"] > 0
    # the path each op ran on (the run pins the reference: TRM_USE_EXT=off)
    assert {op: prov["op_paths"][op] for op in ("stablemax", "softmax", "gather", "sign_sgd")} == dict.fromkeys(
        ("stablemax", "softmax", "gather", "sign_sgd"), "torch") and prov["op_paths"]["device_type"] == "cpu"
    assert os.path.exists(out / "trace.html")


VARIANT_ARGS = {  # the golden URM and HRM configurations (tests/reference/config_*_small.json)
    "urm_small": ["--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--L_layers=2", "--H_cycles=2",
                  "--L_cycles=3", "--halt_max_steps=4", "--puzzle_emb_ndim=64", "--puzzle_emb_len=0",
                  "--mlp_kind=conv_swiglu", "--mlp_t=False", "--pos_encodings=rope", "--no_ACT_continue=True"],
    "hrm_small": ["--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--H_layers=2", "--L_layers=2",
                  "--H_cycles=2", "--L_cycles=2", "--halt_max_steps=4", "--puzzle_emb_ndim=64", "--puzzle_emb_len=0",
                  "--mlp_t=False", "--pos_encodings=rope", "--no_ACT_continue=False"],
}


@pytest.mark.parametrize("name", VARIANT_ARGS)
def test_urm_hrm_reference_checkpoints_end_to_end(golden, tmp_path, name):
    """URM's checkpoint file (weights under model_state_dict) and HRM's bare state dict: the
    architecture is read from the keys, and the answers and q values after each ACT step of the
    first test batch agree with the reference's within tests/reference/README.md's tolerances (answers
    equal but at a bounded number of near-ties of the reference's logits, which are within 2e-2 for
    URM and 1e-4 for HRM; q within 1e-2 and 1e-4)."""
    out = tmp_path / "eval"
    text = run_eval(f"--ckpt={golden}/ckpt_{name}.pt", f"--data={golden}/sudoku_ref_data", "--batch_size=8",
                    *VARIANT_ARGS[name], "--trace=8", f"--out_dir={out}")
    assert "reference checkpoint" in text
    with open(out / "report.json") as f:
        assert json.load(f)["provenance"]["model_config"]["arch"] == name[:3]
    ref = torch.load(os.path.join(golden, f"eval_{name}.pt"), weights_only=True)
    traces = json_traces(out)
    q_tol = 1e-2 if name.startswith("urm") else 1e-4
    for s, step in enumerate(ref["steps"]):
        got = torch.tensor([t["steps"][s] for t in traces])
        assert_preds_match(got, step["preds"], step["logits"], atol=2e-2 if name.startswith("urm") else 1e-4,
                           what=f"{name} step {s}")
        q = torch.tensor([t["q_halt"][s] for t in traces])
        assert torch.allclose(q, step["q_halt_logits"].float(), atol=q_tol), s


def json_traces(out):
    with open(out / "trace.json") as f:
        return json.load(f)


def test_arc_mini_checkpoint_end_to_end(tmp_path):
    """Train a tiny ARC model for a few steps, then evaluate it: every output is written."""
    import prepare_arc
    data = prepare_arc.build(str(tmp_path / "arc"), subsets=["training"], test_set_name="training", num_aug=3,
                             task_ids=prepare_arc.MINI["task_ids"][:4], progress=False)
    r = subprocess.run([sys.executable, "train.py", "config/arc_mini.py", f"--data_dir={data}",
                        f"--out_dir={tmp_path}/out", "--max_steps=2", "--hidden_size=32", "--num_heads=2",
                        "--puzzle_emb_ndim=32", "--halt_max_steps=2", "--global_batch_size=8"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TRM_USE_EXT": "off"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[ARC] pass@1" in r.stdout
    assert os.path.exists(tmp_path / "out" / "submission.json")
    out = tmp_path / "eval"
    text = run_eval(f"--ckpt={tmp_path}/out/ckpt.pt", f"--out_dir={out}", "--trace=2", "--curve_repeats=2",
                    "--bootstrap=50")
    assert "ARC pass@1" in text
    for f in ("report.json", "steps.csv", "submission.json", "predictions.jsonl", "votes_curve.csv",
              "votes_curve.png", "report.html", "trace.html"):
        assert os.path.getsize(out / f) > 0, f
    with open(out / "submission.json") as f:
        sub = json.load(f)
    with open(os.path.join(data, "test_puzzles.json")) as f:
        tp = json.load(f)
    assert list(sub) == list(tp)
    for task, attempts in sub.items():
        assert len(attempts) == len(tp[task]["test"])
        for a in attempts:
            assert set(a) == {"attempt_1", "attempt_2"}
            assert all(0 <= v <= 9 for g in a.values() for row in g for v in row)
    with open(out / "predictions.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == sum(len(t["test"]) for t in tp.values())
    assert all(r["votes"] == 4 for r in rows)  # the original + 3 variants each
    with open(out / "report.json") as f:
        rep = json.load(f)
    assert set(rep["arc"]) >= {"pass@1", "pass@2", "pass@1_ci95", "curve", "variants"}
    assert rep["provenance"]["checkpoint_kind"] == "ours"


def test_trace_unsolved(golden):
    """--trace_unsolved records examples whose answer after step 1 is wrong, with every step."""
    from data import PuzzleDataset
    from test_model import golden_model
    model = golden_model(golden, "att_learned")
    ds = PuzzleDataset([os.path.join(golden, "sudoku_ref_data")], "test", 8)
    res = evaluate.evaluate_split(model, ds, "cpu", trace=3, trace_unsolved=True)
    assert len(res["trace"]) == 3 and len(res["steps"]) == 4
    for t in res["trace"]:
        assert len(t["steps"]) == 4 and len(t["q_halt"]) == 4
        assert any(a != b for a, b in zip(t["steps"][0], t["target"]) if b)
