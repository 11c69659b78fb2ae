# evaluate.py --puzzle_ids=own|blank|mean|random|all: each test example evaluated with its own
# puzzle-embedding row or another, for ours and the reference's checkpoints, side by side.
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT

import checkpoint
from data import PuzzleDataset, read_identifiers
from evaluate import inverse_variant, puzzle_table, random_rows
from model import TRM, TRMConfig

ENV = {**os.environ, "TRM_USE_EXT": "off"}
ARC_ROPE = ["--hidden_size=64", "--num_heads=4", "--expansion=4.0", "--H_cycles=2", "--L_cycles=2", "--L_layers=2",
            "--puzzle_emb_ndim=64", "--puzzle_emb_len=16", "--pos_encodings=rope", "--mlp_t=False",
            "--halt_max_steps=4", "--batch_size=4"]
NAMES = ["<blank>", "a", "a|||t1|||0123456789", "b", "b|||t2|||0123456789", "c"]


def test_tables_by_hand():
    table = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(puzzle_table("own", table, 0, NAMES), table)
    blank = puzzle_table("blank", table, 0, NAMES)
    assert torch.equal(blank, torch.tensor([[0.0, 1.0]]).expand(6, 2))  # every row is row 0's
    mean = puzzle_table("mean", table, 0, NAMES)
    assert torch.equal(mean[0], table[0]) and torch.equal(mean[1:], torch.tensor([[6.0, 7.0]]).expand(5, 2))
    src = random_rows(6, 0, NAMES, seed=3)
    assert src[0] == 0
    task = lambda i: inverse_variant(NAMES[i])[0]
    assert all(task(int(src[i])) != task(i) and src[i] != 0 for i in range(1, 6))  # another task's row
    rnd = puzzle_table("random", table, 0, NAMES, seed=3)
    assert torch.equal(rnd, table[src]) and torch.equal(random_rows(6, 0, NAMES, seed=3), src)
    with pytest.raises(SystemExit, match="at least two tasks"):
        random_rows(3, 0, ["<blank>", "a", "a|||t1|||0123456789"], 0)


def puzzle_only_model(golden):
    """The reference ARC checkpoint with its token embedding zeroed: its answers depend on the
    puzzle row alone (and the positions)."""
    kind, ck = checkpoint.read_checkpoint(os.path.join(golden, "ckpt_arc_rope.pt"))
    cfg = TRMConfig(vocab_size=12, seq_len=900, num_puzzle_identifiers=19, hidden_size=64, num_heads=4, expansion=4.0,
                    H_cycles=2, L_cycles=2, L_layers=2, puzzle_emb_ndim=64, puzzle_emb_len=16, pos_encodings="rope",
                    halt_max_steps=2, halt_exploration_prob=0.0)
    model = TRM(cfg).eval()
    checkpoint.load_weights(model, ck, "ckpt_arc_rope.pt")
    with torch.no_grad():
        model.embed_tokens.embedding_weight.zero_()
    return model


def answers(model, batch):
    """The logits of the last ACT step (argmax alone hides small differences in this model)."""
    with torch.inference_mode():
        return model.solve(batch)[2]["logits"].float()


def test_each_mode_changes_exactly_the_rows_it_should(golden):
    """With answers that depend only on the puzzle row: 'own' answers differ by puzzle, 'blank'
    gives every example the blank identifier's answer, 'mean' one answer for all, 'random' each
    example the answer of the puzzle whose row it drew."""
    model = puzzle_only_model(golden)
    data = os.path.join(golden, "arc_ref_data")
    names = read_identifiers(data)
    batch = next(PuzzleDataset(data, "test", 6).iter_test())[1]
    ids = batch["puzzle_identifiers"]
    own_table = model.puzzle_emb.weights.clone()
    own = answers(model, batch)
    same = lambda a, b: torch.allclose(a, b, rtol=0, atol=1e-4)
    assert not same(own[0], own[3]), "own rows should give different answers"
    every = {int(i): answers(model, {**batch, "puzzle_identifiers": torch.full_like(ids, int(i))})[0]
             for i in range(len(names))}  # each row's answer (the inputs do not matter)
    for mode in ("blank", "mean", "random"):
        model.puzzle_emb.weights.copy_(puzzle_table(mode, own_table, 0, names, seed=0))
        got = answers(model, batch)
        if mode == "blank":
            assert all(same(r, every[0]) for r in got)
        elif mode == "mean":
            assert all(same(r, got[0]) for r in got) and not same(got[0], every[0])
        else:
            src = random_rows(len(names), 0, names, 0)
            assert all(same(r, every[int(src[i])]) for r, i in zip(got, ids))
            assert all(not same(r, o) for r, o in zip(got, own))
        model.puzzle_emb.weights.copy_(own_table)


def evaluate(*args):
    r = subprocess.run([sys.executable, "evaluate.py", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=ENV)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_all_equals_the_separate_runs(golden, tmp_path):
    """--puzzle_ids=all on the reference ARC checkpoint: each mode's figures are those of its own
    run, in the console, report.json and puzzle_ids.csv."""
    base = [f"--ckpt={golden}/ckpt_arc_rope.pt", f"--data={golden}/arc_ref_data", *ARC_ROPE, "--curve_repeats=0",
            "--bootstrap=20", "--html=False"]
    text = evaluate(*base, "--puzzle_ids=all", f"--out_dir={tmp_path}/all")
    assert "puzzle identity ablation" in text
    with open(tmp_path / "all" / "report.json") as f:
        side = json.load(f)["puzzle_ids"]
    assert list(side) == ["own", "blank", "mean", "random"]
    for mode in side:
        evaluate(*base, f"--puzzle_ids={mode}", f"--out_dir={tmp_path}/{mode}")
        with open(tmp_path / mode / "report.json") as f:
            rep = json.load(f)
        assert rep["provenance"]["puzzle_ids"] == mode
        for k in ("exact_accuracy", "accuracy", "lm_loss"):
            assert side[mode][f"all/{k}"] == pytest.approx(rep["metrics"]["all"][k], abs=1e-9), (mode, k)
        for k in ("pass@1", "pass@2", "pass@1_ci95", "pass@2_ci95"):
            assert side[mode][k] == pytest.approx(rep["arc"][k], abs=1e-9), (mode, k)
    with open(tmp_path / "all" / "puzzle_ids.csv") as f:
        rows = f.read().splitlines()
    assert rows[0].startswith("puzzle_ids,all/exact_accuracy,all/accuracy,all/lm_loss,pass@1,pass@2") and len(rows) == 5
    # the modes really differ on this checkpoint (its loss moves)
    assert len({round(side[m]["all/lm_loss"], 6) for m in side}) == 4


def test_no_puzzle_embedding_says_so(tmp_path):
    import prepare_sudoku
    data = prepare_sudoku.build(str(tmp_path / "data"), source="generate", size=4, num_train=32, num_test=8,
                                min_blanks=6, num_aug=0, seed=0)
    r = subprocess.run([sys.executable, "train.py", f"--data_dir={data}", f"--out_dir={tmp_path}/run", "--max_steps=1",
                        "--hidden_size=16", "--num_heads=2", "--global_batch_size=8", "--epochs=1", "--eval_interval=1",
                        "--compile=False"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=ENV)
    assert r.returncode == 0, r.stderr
    text = evaluate(f"--ckpt={tmp_path}/run/ckpt.pt", "--puzzle_ids=all", f"--out_dir={tmp_path}/ev")
    assert "has no puzzle embedding (puzzle_emb_ndim=0), so the setting has no effect; evaluating once" in text
    assert text.count("[all] accuracy") == 1 and not os.path.exists(tmp_path / "ev" / "puzzle_ids.csv")
