"""Compute at test time: halting by the model's own rule (rows leave the batch), every fixed depth
in the same evaluate.py run, more steps than trained, and quick checks on a seeded subset."""
import csv
import json
import os
import subprocess
import sys

import torch

from conftest import ROOT
from data import PuzzleDataset
from model import TRM
from test_model import tiny_batch, tiny_cfg

ENV = {**os.environ, "TRM_USE_EXT": "off", "PYTHONUNBUFFERED": "1"}


def test_halting_on_q_answers_at_the_first_step_the_rule_fires_and_drops_rows():
    """Each row's answer equals the fixed run's answer at its first step whose halting rule fires
    (or the last step); the rows that stopped are not computed again."""
    torch.manual_seed(0)
    model = TRM(tiny_cfg(halt_max_steps=5)).eval()
    with torch.no_grad():  # q_halt near 0, so that rows stop at different steps
        model.q_head.weight.normal_(0, 0.5)
        model.q_head.bias.fill_(0.0)
    batch = tiny_batch(B=16)
    fixed = []
    model.solve(batch, on_step=lambda s, c, m, o: fixed.append(o))
    first = torch.full((16,), 5)
    for s in reversed(range(5)):
        first = torch.where(model.halts_on_q(fixed[s]), s + 1, first)
    assert 1 < len(set(first.tolist())), "the test needs rows that stop at different steps"
    rows_computed = []
    hook = model.embed_tokens.register_forward_hook(lambda m, a, out: rows_computed.append(len(out)))
    _, metrics, out = model.solve(batch, halt_on_q=True)
    hook.remove()
    assert sum(rows_computed) == int(first.sum()) < 16 * 5  # only running rows are computed
    for r in range(16):
        s = int(first[r]) - 1
        assert torch.equal(out["preds"][r], fixed[s]["preds"][r]) and int(out["steps"][r]) == s + 1
        torch.testing.assert_close(out["q_halt_logits"][r], fixed[s]["q_halt_logits"][r])
    real = batch["labels"].ne(-100).any(-1)
    assert int(metrics["count"]) == int(real.sum())
    assert int(metrics["steps"]) == int(first[real].sum())
    assert int(metrics["exact_accuracy"]) == sum(int(fixed[int(first[r]) - 1]["exact"][r]) for r in range(16) if real[r])


def evaluate(*args):
    r = subprocess.run([sys.executable, "evaluate.py", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_evaluate_halting_q_reports_every_depth(golden, tmp_path):
    """The reference Sudoku checkpoint, 6 ACT steps where it was trained with 4: the compute table
    holds depths 1..6 (equal to steps.csv) and halting=q, in report.json, compute.csv and the
    console; compute.png is written."""
    out = tmp_path / "ev"
    r = evaluate(f"--ckpt={golden}/ckpt_att_learned.pt", f"--data={golden}/sudoku_ref_data", "--batch_size=8",
                 "--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--H_cycles=2", "--L_cycles=3",
                 "--L_layers=2", "--puzzle_emb_ndim=64", "--puzzle_emb_len=16", "--pos_encodings=learned",
                 "--mlp_t=False", "--halting=q", "--halt_max_steps=6", f"--out_dir={out}")
    rep = json.load(open(out / "report.json"))
    rows = rep["compute"]
    assert [row["halting"] for row in rows] == [f"fixed {d}" for d in range(1, 7)] + ["q"]
    for row, step in zip(rows, rep["steps"]):
        assert row["exact_accuracy"] == step["exact_accuracy"] and row["accuracy"] == step["accuracy"]
        assert row["examples_per_s"] > 0
    q = rows[-1]
    assert 1 <= q["mean_steps"] <= 6 and q["examples_per_s"] > 0
    m = rep["metrics"]["all"]  # the reported metrics are halting=q's
    assert m["steps"] == q["mean_steps"] and m["exact_accuracy"] == q["exact_accuracy"]
    with open(out / "compute.csv") as f:
        assert len(list(csv.DictReader(f))) == 7
    assert (out / "compute.png").stat().st_size > 1000
    assert "test-time compute" in r.stdout and "fixed 6" in r.stdout


def test_eval_max_examples_is_a_fixed_subset_of_whole_puzzles(golden, tmp_path):
    ds = PuzzleDataset(os.path.join(golden, "arc_ref_data"), "test", 4)
    assert ds.limit(4, seed=0) == ds.limit(4, seed=0)
    d = ds.data["all"]
    kept = ds.subset["all"]
    puzzles = set(torch.searchsorted(torch.as_tensor(d["puzzle_indices"]), torch.as_tensor(kept), right=True).tolist())
    groups = torch.as_tensor(d["group_indices"])
    for g in range(len(groups) - 1):  # a group is kept whole or not at all
        members = set(range(int(groups[g]) + 1, int(groups[g + 1]) + 1))
        assert members <= puzzles or not members & puzzles
    out = tmp_path / "ev"
    r = evaluate(f"--ckpt={golden}/ckpt_arc_rope.pt", f"--data={golden}/arc_ref_data", "--batch_size=4",
                 "--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--H_cycles=2", "--L_cycles=2",
                 "--L_layers=2", "--puzzle_emb_ndim=64", "--puzzle_emb_len=16", "--pos_encodings=rope",
                 "--mlp_t=False", "--halt_max_steps=4", "--eval_max_examples=3", f"--out_dir={out}")
    note = [line for line in r.stdout.splitlines() if line.startswith("evaluating")][0]
    assert note.endswith("[subset: 3 of 6 test examples, whole puzzles, seed 0]"), note
    printed = [line for line in r.stdout.splitlines() if line.startswith(("[all]", "after each", "ARC ", "3 examples"))]
    assert len(printed) == 4 and all(line.endswith("[subset: 3 of 6 test examples, whole puzzles, seed 0]")
                                     for line in printed), printed
    rep = json.load(open(out / "report.json"))
    assert rep["metrics"]["all"]["count"] == 3 and rep["subset"].startswith("subset: 3 of 6")
    sub = json.load(open(out / "submission.json"))
    assert len(sub) == 1  # the one task the subset holds is the one scored


def test_long_evaluations_show_progress(golden, tmp_path):
    r = evaluate(f"--ckpt={golden}/ckpt_mlp_none.pt", f"--data={golden}/sudoku_ref_data", "--batch_size=2",
                 "--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--H_cycles=2", "--L_cycles=3",
                 "--L_layers=2", "--puzzle_emb_ndim=64", "--puzzle_emb_len=16", "--pos_encodings=none",
                 "--mlp_t=True", f"--out_dir={tmp_path}/ev")
    assert "evaluating: 100%" in r.stderr and "24/24" in r.stderr and "ex/s" in r.stderr
