# data.py: batches equal the reference's on its own datasets; invariants of the train and test
# iterators on small synthetic datasets; exact resume; merged directories; clear errors.
import json
import os
import re

import numpy as np
import pytest
import torch

from data import IGNORE_LABEL_ID, PuzzleDataset, dihedral, inverse_dihedral, load_metadata

SEQ = 4
# groups of puzzles, each puzzle a number of examples: multi-example puzzles, groups of several
GROUPS = [[3, 1], [2], [5, 2, 1], [1], [4, 4], [2, 3], [1, 1, 1], [6], [2], [3, 2]]


def write_dataset(root, groups=GROUPS, split="train", dtype=np.int64, **meta):
    """A dataset whose example e of puzzle p has inputs [e+1, p+1, 7, 7] (so padding rows, all 0,
    stand out), labels [e+1, p+1, 7, 0] (0 is the ignored label) and puzzle identifier p+1."""
    counts = [c for g in groups for c in g]
    rows = [[e + 1, p + 1, 7, 7] for p, c in enumerate(counts) for e in range(sum(counts[:p]), sum(counts[:p + 1]))]
    inputs = np.array(rows, dtype)
    labels = inputs.copy()
    labels[:, -1] = 0
    arrays = {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.arange(1, len(counts) + 1, dtype=np.int32),
        "puzzle_indices": np.concatenate([[0], np.cumsum(counts)]).astype(np.int32),
        "group_indices": np.concatenate([[0], np.cumsum([len(g) for g in groups])]).astype(np.int32),
    }
    info = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=50, seq_len=SEQ,
                num_puzzle_identifiers=len(counts) + 1, total_groups=len(groups),
                mean_puzzle_examples=len(rows) / len(counts), total_puzzles=len(counts), sets=["all"])
    info.update(meta)
    os.makedirs(os.path.join(root, split), exist_ok=True)
    with open(os.path.join(root, split, "dataset.json"), "w") as f:
        json.dump(info, f)
    for name, arr in arrays.items():
        np.save(os.path.join(root, split, f"all__{name}.npy"), arr)
    return str(root)


def batches(it, n=None):
    out = []
    for name, batch in it:
        out.append((name, batch))
        if n is not None and len(out) == n:
            break
    return out


def same(a, b):
    return len(a) == len(b) and all(
        x[0] == y[0] and all(torch.equal(x[1][k], y[1][k]) for k in x[1]) for x, y in zip(a, b))


# -- the reference's datasets ------------------------------------------------------------------

def test_first_sudoku_test_batch_is_the_reference_batch(golden):
    ds = PuzzleDataset(os.path.join(golden, "sudoku_ref_data"), "test", 8)
    name, batch = next(ds.iter_test())
    ref = torch.load(os.path.join(golden, "eval_att_learned.pt"), weights_only=True)["batch"]
    assert name == "all" and batch.keys() == ref.keys()
    for k in ref:
        assert batch[k].dtype == torch.int32 and torch.equal(batch[k], ref[k]), k
    assert (batch["labels"] == IGNORE_LABEL_ID).sum() == 0  # Sudoku labels are never the ignored token


def test_first_arc_test_batch_is_the_reference_batch(golden):
    ds = PuzzleDataset(os.path.join(golden, "arc_ref_data"), "test", 8)
    name, batch = next(ds.iter_test())
    ref = torch.load(os.path.join(golden, "eval_arc_rope.pt"), weights_only=True)["batch"]
    assert int((batch["puzzle_identifiers"] != 0).sum()) == 6  # 6 real rows, 2 padding rows
    for k in ref:
        assert batch[k].dtype == torch.int32 and torch.equal(batch[k], ref[k]), k
    assert (batch["labels"][6:] == IGNORE_LABEL_ID).all() and (batch["inputs"][6:] == 0).all()


def test_first_sudoku_train_batch_is_the_reference_batch(golden):
    # One example per puzzle: choosing it draws nothing, so the seeded group order and puzzle
    # choices alone decide the batch, and they are the reference's (its fixture used seed 0).
    ds = PuzzleDataset(os.path.join(golden, "sudoku_ref_data"), "train", 8, seed=0)
    _, batch = next(ds.iter_train())
    ref = torch.load(os.path.join(golden, "train_att_learned.pt"), weights_only=True)["batch"]
    for k in ref:
        assert torch.equal(batch[k], ref[k]), k


def test_golden_metadata_and_dtypes(golden):
    m = load_metadata(os.path.join(golden, "sudoku_ref_data"), "train")
    assert (m.seq_len, m.vocab_size, m.total_groups, m.sets, m.ignore_label_id) == (81, 11, 48, ["all"], 0)
    assert isinstance(m.mean_puzzle_examples, float)
    # train is int64 on disk, test uint8: both come out int32
    for split in ("train", "test"):
        ds = PuzzleDataset(os.path.join(golden, "sudoku_ref_data"), split, 8)
        it = ds.iter_train() if split == "train" else ds.iter_test()
        _, batch = next(it)
        assert all(v.dtype == torch.int32 for v in batch.values())


# -- train iteration ----------------------------------------------------------------------------

def check_train_batch(batch, G, counts, starts):
    """Every row real, and the rows form runs of one puzzle each: distinct examples of that puzzle,
    all of them except possibly in the last run, which was cut by the batch size."""
    inputs, labels, ids = batch["inputs"].numpy(), batch["labels"].numpy(), batch["puzzle_identifiers"].numpy()
    assert inputs.shape == (G, SEQ) and labels.shape == (G, SEQ) and ids.shape == (G,)
    assert (ids > 0).all()  # full batch: no padding row
    assert (ids == inputs[:, 1]).all()  # the identifier belongs to the row's own puzzle
    assert (labels[:, :3] == inputs[:, :3]).all() and (labels[:, 3] == IGNORE_LABEL_ID).all()
    puzzles = inputs[:, 1] - 1
    bounds = [0] + [i for i in range(1, G) if puzzles[i] != puzzles[i - 1]] + [G]
    runs = [(puzzles[a], inputs[a:b, 0] - 1) for a, b in zip(bounds, bounds[1:])]
    assert len({p for p, _ in runs}) == len(runs)  # a puzzle appears in one contiguous run
    for i, (p, examples) in enumerate(runs):
        assert len(set(examples)) == len(examples)
        assert all(starts[p] <= e < starts[p] + counts[p] for e in examples)
        if i < len(runs) - 1:
            assert len(examples) == counts[p]
        else:
            assert len(examples) == min(counts[p], G - bounds[-2])
    return [p for p, _ in runs]


def test_train_batches_keep_puzzles_together(tmp_path):
    root = write_dataset(tmp_path)
    counts = [c for g in GROUPS for c in g]
    starts = np.concatenate([[0], np.cumsum(counts)])
    group_of = [g for g, grp in enumerate(GROUPS) for _ in grp]
    G = 8
    ds = PuzzleDataset(root, "train", G, seed=3)
    for _ in range(5):  # several passes
        out = batches(ds.iter_train())
        assert len(out) >= 2
        used = []
        for name, batch in out:
            assert name == "all" and len(batch["inputs"]) == G
            used += [group_of[p] for p in check_train_batch(batch, G, counts, starts)]
        assert len(used) == len(set(used))  # one epoch: each group gives at most one puzzle
        # the pass stops only when the groups left cannot fill a batch
        left = [g for g in range(len(GROUPS)) if g not in used]
        assert sum(min(GROUPS[g]) for g in left) < G


def test_epochs_per_iter_walks_several_epochs(tmp_path):
    root = write_dataset(tmp_path)
    one = batches(PuzzleDataset(root, "train", 8, seed=1).iter_train())
    three = batches(PuzzleDataset(root, "train", 8, seed=1, epochs_per_iter=3).iter_train())
    assert len(three) > 2 * len(one)


def test_train_rank_slices_make_the_global_batch(tmp_path):
    root = write_dataset(tmp_path)
    full = batches(PuzzleDataset(root, "train", 8, seed=5).iter_train())
    for W in (2, 4):
        per_rank = [batches(PuzzleDataset(root, "train", 8, rank=r, world_size=W, seed=5).iter_train())
                    for r in range(W)]
        assert all(len(b) == len(full) for b in per_rank)
        for i, (name, batch) in enumerate(full):
            for k in batch:
                parts = [per_rank[r][i][1][k] for r in range(W)]
                assert all(len(p) == 8 // W for p in parts)
                assert torch.equal(torch.cat(parts), batch[k])


def test_train_order_is_deterministic_per_seed(tmp_path):
    root = write_dataset(tmp_path)
    a, b = PuzzleDataset(root, "train", 8, seed=7), PuzzleDataset(root, "train", 8, seed=7)
    pass_a, pass_b = [batches(a.iter_train()) for _ in range(3)], [batches(b.iter_train()) for _ in range(3)]
    assert all(same(x, y) for x, y in zip(pass_a, pass_b))
    assert not same(pass_a[0], pass_a[1])  # each pass reseeds with a new counter
    other = batches(PuzzleDataset(root, "train", 8, seed=8).iter_train())
    assert not same(pass_a[0], other)


def stream(ds, total):
    """The first `total` train batches over as many iter_train passes as it takes."""
    out = []
    while len(out) < total:
        out += batches(ds.iter_train(), total - len(out))
    return out


@pytest.mark.parametrize("epochs", [1, 2])
def test_resume_continues_exactly(tmp_path, epochs):
    # two directories, so two sets ("all", "all1") per pass: the resume may fall in either
    root0 = write_dataset(tmp_path / "a")
    root1 = write_dataset(tmp_path / "b", groups=GROUPS[::-1])
    make = lambda: PuzzleDataset([root0, root1], "train", 8, seed=11, epochs_per_iter=epochs)
    per_call = len(batches(make().iter_train()))
    total = 3 * per_call + 2
    reference = stream(make(), total)
    for k in sorted({0, 1, 2, per_call // 2, per_call - 1, per_call, per_call + 3, 2 * per_call + 1}):
        ds = make()
        first = []
        while len(first) < k:  # stop in the middle of an iter_train call, as a training loop would
            it = ds.iter_train()
            for item in it:
                first.append(item)
                if len(first) == k:
                    break
        state = ds.state_dict()
        resumed = make()
        resumed.load_state_dict(json.loads(json.dumps(state)))  # a plain dict, survives a checkpoint
        assert same(first + stream(resumed, total - k), reference), k


# -- test iteration -----------------------------------------------------------------------------

@pytest.mark.parametrize("W", [1, 2, 4])
@pytest.mark.parametrize("G", [4, 8, 12])
def test_test_iteration_visits_every_example_once(tmp_path, W, G):
    root = write_dataset(tmp_path, split="test", dtype=np.uint8)
    counts = [c for g in GROUPS for c in g]
    N = sum(counts)
    puzzle_of = np.repeat(np.arange(len(counts)), counts)
    seen = []
    runs = [batches(PuzzleDataset(root, "test", G, rank=r, world_size=W).iter_test()) for r in range(W)]
    assert len({len(r) for r in runs}) == 1 and len(runs[0]) == -(-N // G)
    for i in range(len(runs[0])):
        real_rows = sum(int((runs[r][i][1]["puzzle_identifiers"] != 0).sum()) for r in range(W))
        assert real_rows == min(G, N - i * G)
        for r in range(W):
            _, batch = runs[r][i]
            inputs, labels, ids = (batch[k].numpy() for k in ("inputs", "labels", "puzzle_identifiers"))
            assert inputs.shape == (G // W, SEQ) and batch["inputs"].dtype == torch.int32
            real = ids != 0
            # real rows first, then padding: pad_id inputs, ignored labels, the blank identifier
            assert (real[:real.sum()]).all()
            assert (inputs[~real] == 0).all() and (labels[~real] == IGNORE_LABEL_ID).all()
            examples = inputs[real, 0] - 1
            assert (ids[real] == puzzle_of[examples] + 1).all()
            assert (examples == np.arange(i * G + r * (G // W), i * G + r * (G // W) + real.sum())).all()
            seen += list(examples)
    assert sorted(seen) == list(range(N))
    if W == 1:  # the world-size-1 batch is the concatenation of the ranks' batches
        return
    full = batches(PuzzleDataset(root, "test", G).iter_test())
    for i, (_, batch) in enumerate(full):
        for k in batch:
            assert torch.equal(torch.cat([runs[r][i][1][k] for r in range(W)]), batch[k])


def test_empty_puzzles_get_the_right_identifier(tmp_path):
    # a puzzle without examples (equal consecutive offsets) must not take over the next example
    root = write_dataset(tmp_path, groups=[[2, 1], [3]], split="test")
    path = os.path.join(root, "test")
    np.save(os.path.join(path, "all__puzzle_indices.npy"), np.array([0, 2, 2, 3, 6], np.int32))
    np.save(os.path.join(path, "all__puzzle_identifiers.npy"), np.array([1, 9, 2, 3], np.int32))
    np.save(os.path.join(path, "all__group_indices.npy"), np.array([0, 3, 4], np.int32))
    _, batch = next(PuzzleDataset(root, "test", 8).iter_test())
    assert batch["puzzle_identifiers"].tolist() == [1, 1, 2, 3, 3, 3, 0, 0]


# -- several directories ------------------------------------------------------------------------

def test_merged_directories(tmp_path):
    a = write_dataset(tmp_path / "a")
    # the reference requires equal num_puzzle_identifiers (and adds them up)
    b = write_dataset(tmp_path / "b", groups=[[1, 1], [2]], num_puzzle_identifiers=len(sum(GROUPS, [])) + 1)
    m = load_metadata([a, b], "train")
    ma, mb = load_metadata(a, "train"), load_metadata(b, "train")
    assert m.num_puzzle_identifiers == ma.num_puzzle_identifiers + mb.num_puzzle_identifiers
    assert m.total_groups == ma.total_groups + mb.total_groups
    assert m.total_puzzles == ma.total_puzzles + mb.total_puzzles
    want = (ma.mean_puzzle_examples * ma.total_puzzles + mb.mean_puzzle_examples * mb.total_puzzles) / m.total_puzzles
    assert m.mean_puzzle_examples == pytest.approx(want)
    assert (m.seq_len, m.sets) == (SEQ, ["all"])

    write_dataset(tmp_path / "b", groups=[[1, 1], [2]], split="test", num_puzzle_identifiers=len(sum(GROUPS, [])) + 1)
    write_dataset(tmp_path / "a", split="test")
    ds = PuzzleDataset([a, b], "test", 64)
    assert list(ds.data) == ["all", "all1"]
    out = batches(ds.iter_test())
    assert [o[0] for o in out] == ["all", "all1"]
    assert [int((o[1]["puzzle_identifiers"] != 0).sum()) for o in out] == [sum(map(sum, GROUPS)), 4]
    # identifiers are kept as stored, not offset per directory
    assert out[1][1]["puzzle_identifiers"][:4].tolist() == [1, 2, 3, 3]


def test_merged_directories_must_agree(tmp_path):
    a = write_dataset(tmp_path / "a")
    b = write_dataset(tmp_path / "b", seq_len=SEQ + 1)
    with pytest.raises(ValueError) as e:
        load_metadata([a, b], "train")
    assert a in str(e.value) and b in str(e.value) and "seq_len" in str(e.value)


# -- errors ---------------------------------------------------------------------------------------

def test_bad_metadata_names_path_and_key(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        load_metadata(str(tmp_path / "nowhere"), "train")
    root = write_dataset(tmp_path)
    with pytest.raises(ValueError, match="test"):
        load_metadata(root, "test")
    file = os.path.join(root, "train", "dataset.json")
    with open(file) as f:
        good = json.load(f)
    with open(file, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match=re.escape(file)):
        load_metadata(root, "train")
    for key, value in (("vocab_size", None), ("sets", "all"), ("ignore_label_id", "x")):
        bad = dict(good)
        if value is None:
            del bad[key]
        else:
            bad[key] = value
        with open(file, "w") as f:
            json.dump(bad, f)
        with pytest.raises(ValueError) as e:
            load_metadata(root, "train")
        assert file in str(e.value) and key in str(e.value)


def corrupt(root, field, arr):
    np.save(os.path.join(root, "train", f"all__{field}.npy"), arr)
    return os.path.join(root, "train", f"all__{field}.npy")


@pytest.mark.parametrize("field,make", [
    ("puzzle_indices", lambda a: a[:-1]),                            # last value != examples
    ("group_indices", lambda a: np.append(a, a[-1] + 1)),            # last value != puzzles
    ("labels", lambda a: a[:-1]),                                    # shape differs from inputs
    ("inputs", lambda a: np.concatenate([a, a[:, :1]], 1)),          # width != seq_len
    ("puzzle_identifiers", lambda a: a[:-1]),                        # one id short
    ("inputs", lambda a: a.astype(np.float32)),                      # not integers
])
def test_inconsistent_arrays_name_the_file(tmp_path, field, make):
    root = write_dataset(tmp_path)
    arr = np.load(os.path.join(root, "train", f"all__{field}.npy"))
    file = corrupt(root, field, make(arr))
    with pytest.raises(ValueError, match=re.escape(file)):
        PuzzleDataset(root, "train", 8)


def test_missing_array_names_the_file(tmp_path):
    root = write_dataset(tmp_path)
    file = os.path.join(root, "train", "all__group_indices.npy")
    os.remove(file)
    with pytest.raises(ValueError, match=re.escape(file)):
        PuzzleDataset(root, "train", 8)


def test_batch_size_must_split_over_ranks(tmp_path):
    root = write_dataset(tmp_path)
    with pytest.raises(ValueError):
        PuzzleDataset(root, "train", 6, world_size=4)
    assert PuzzleDataset(root, "train", 12, world_size=4).local_batch_size == 3


# -- dihedral transforms ------------------------------------------------------------------------

def test_dihedral():
    g = np.arange(12).reshape(3, 4)
    assert np.array_equal(dihedral(g, 1), np.rot90(g))
    assert np.array_equal(dihedral(g, 6), g.T)
    assert np.array_equal(dihedral(g, 7), g[::-1, ::-1].T)  # anti-transpose
    results = {dihedral(g, t).tobytes() + bytes(dihedral(g, t).shape) for t in range(8)}
    assert len(results) == 8
    for t in range(8):
        assert np.array_equal(inverse_dihedral(dihedral(g, t), t), g)
    with pytest.raises(ValueError):
        dihedral(g, 8)
