"""config/*.py: every recipe, applied to train.py's defaults as train.py applies it, builds its
model and optimisers and takes one training step, cut down to a tiny width and depth."""
import ast
import glob
import os

import pytest
import torch

import configurator
from conftest import ROOT
from model import TRM, TRMConfig
from optim import make_optimizers, train_step

CONFIGS = sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))
# data_dir -> (vocab_size, seq_len) of that kind of data, the first match counting; mazes and ARC
# grids are cut to 16 cells to stay fast (the layout of prefix + cells is the same at any length)
KINDS = [("sudoku-mini", 8, 36), ("sudoku", 11, 81), ("maze", 6, 16), ("arc", 12, 16)]
BATCH = 4
PUZZLES = 3  # puzzle identifiers in the synthetic data


def train_defaults() -> dict:
    """The settings at the top of train.py, read without running it: every `name = literal`
    before it imports the configurator."""
    with open(os.path.join(ROOT, "train.py")) as f:
        tree = ast.parse(f.read())
    defaults = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "configurator":
            return defaults
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            defaults[node.targets[0].id] = ast.literal_eval(node.value)
    raise AssertionError("train.py no longer imports configurator after its settings")


def tiny(s: dict) -> dict:
    """The recipe's kind of model (arch, MLP kinds, positions, halting, loss, optimiser) at toy size.
    The puzzle embedding is exactly one hidden vector wide, so a URM/HRM recipe's one-position
    prefix still equals ceil(puzzle_emb_ndim / hidden_size)."""
    small = dict(hidden_size=32, num_heads=2, expansion=2.0, L_layers=1, H_cycles=2, L_cycles=1,
                 halt_max_steps=2, global_batch_size=BATCH)
    if s["H_layers"] > 0:
        small["H_layers"] = 1
    if s["puzzle_emb_ndim"] > 0:
        small["puzzle_emb_ndim"] = 32
    return {**s, **small}


@pytest.fixture(autouse=True)
def one_thread():
    """Toy tensors: handing work to a second thread costs more than it saves (up to a second a
    step on a busy 2-core machine, against a few milliseconds on one thread)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_configs_found():
    assert CONFIGS, "no config/*.py: the parametrized test below would pass vacuously"


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_recipe_takes_a_training_step(path):
    defaults = train_defaults()
    s = tiny({**defaults, **configurator.parse(defaults, [path])})
    sizes = [(v, n) for kind, v, n in KINDS if kind in s["data_dir"]]
    assert sizes, f"{path}: no data kind in KINDS matches data_dir {s['data_dir']!r}"
    vocab, seq = sizes[0]
    torch.manual_seed(0)
    cfg = TRMConfig.from_settings(s, vocab_size=vocab, seq_len=seq, num_puzzle_identifiers=PUZZLES,
                                  forward_dtype="float32")
    model = TRM(cfg)
    optimizers, _ = make_optimizers(model, **s, world_size=1)
    batch = {"inputs": torch.randint(1, vocab, (BATCH, seq), dtype=torch.int32),
             "labels": torch.randint(1, vocab, (BATCH, seq), dtype=torch.int32),
             "puzzle_identifiers": torch.randint(0, PUZZLES, (BATCH,), dtype=torch.int32)}
    before = [p.detach().clone() for p in model.parameters()]
    _, metrics = train_step(model, model.initial_carry(batch), batch, optimizers, s["global_batch_size"])
    assert torch.isfinite(metrics["loss"]).item(), metrics["loss"]
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters())), "no parameter changed"


def test_heldout_recipe_is_the_paper_recipe_but_its_data():
    """config/arc1_heldout.py differs from config/arc1.py only in where its data and run go."""
    a = configurator.load_config_file(os.path.join(ROOT, "config", "arc1.py"))
    b = configurator.load_config_file(os.path.join(ROOT, "config", "arc1_heldout.py"))
    assert {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)} == {"out_dir", "data_dir", "prepare"}
    assert "--hold_out_test_tasks=True" in b["prepare"] and b["data_dir"] in b["prepare"]
