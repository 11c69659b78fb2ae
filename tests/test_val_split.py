# The val split of the three builders (prepare_arc.py --val_pairs, prepare_sudoku.py and
# prepare_maze.py --val_fraction): it never overlaps train or test, the rest of the dataset is the
# build without val less what val took, val_puzzles.json describes the ARC val split, and
# data.PuzzleDataset reads it like the test split.
import filecmp
import json
import os

import numpy as np
import pytest

from data import PuzzleDataset
import prepare_arc
import prepare_maze
import prepare_sudoku
from test_prepare_arc import FIELDS, cut_kaggle, decode, load, undo


def same_files(a, b, names):
    for name in names:
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name


def split_files(split):
    return [f"{split}/dataset.json"] + [f"{split}/all__{k}.npy" for k in FIELDS]


def check_read_val(out, batch):
    """data.PuzzleDataset reads the val split: iter_test gives its inputs in order, then padding."""
    ds = PuzzleDataset([out], "val", batch)
    want = load(out, "val")[0]["inputs"]
    got = np.concatenate([b["inputs"].numpy() for _, b in ds.iter_test()])
    assert len(got) == -(-len(want) // batch) * batch
    np.testing.assert_array_equal(got[:len(want)], want)
    assert (got[len(want):] == ds.metadata.pad_id).all()
    return ds


# -----------------------------------------------------------------------------
# ARC

@pytest.fixture(scope="module")
def arc(tmp_path_factory):
    """The same small build without and with --val_pairs=2 (the evaluation tasks have 2, 5 and 4
    demonstrations: the first gives val one and keeps one)."""
    d = tmp_path_factory.mktemp("arcval")
    prefix, names = cut_kaggle(str(d), cut={"training": 2, "evaluation": 3})
    kw = dict(input_file_prefix=prefix, subsets=["training", "evaluation"], num_aug=3, seed=5, progress=False)
    plain = prepare_arc.build(str(d / "plain"), **kw)
    val = prepare_arc.build(str(d / "val"), val_pairs=2, **kw)
    with open(os.path.join(val, "identifiers.json")) as f:
        ids = json.load(f)
    with open(os.path.join(val, "val_puzzles.json")) as f:
        moved = {t: len(v["test"]) for t, v in json.load(f).items()}
    return plain, val, ids, moved, names


def test_arc_val_moves_the_last_demonstrations(arc):
    plain, val, ids, moved, names = arc
    with open(os.path.join(plain, "test_puzzles.json")) as f:
        demos = {t: len(v["train"]) for t, v in json.load(f).items()}
    assert moved == {t: min(2, demos[t] - 1) for t in names["evaluation"]} and sorted(moved.values()) == [1, 2, 2]
    assert not os.path.exists(os.path.join(plain, "val")) and not os.path.exists(os.path.join(plain, "val_puzzles.json"))


def test_arc_test_split_and_identifiers_unchanged(arc):
    plain, val, *_ = arc
    same_files(plain, val, split_files("test") + ["identifiers.json", "test_puzzles.json"])


def test_arc_train_is_the_old_train_less_val(arc):
    """Row for row: the train split without val's rows is the new train split (the random draws
    are the same), and those rows, at the corner, are the val split, in order."""
    plain, val, ids, moved, _ = arc
    old, _ = load(plain, "train")
    new, meta = load(val, "train")
    v, vmeta = load(val, "val")
    is_val, kept = np.zeros(len(old["inputs"]), bool), []
    for g in range(len(old["group_indices"]) - 1):
        for p in range(old["group_indices"][g], old["group_indices"][g + 1]):
            m = moved.get(ids[old["puzzle_identifiers"][p]].split("|||")[0], 0)
            lo, hi = old["puzzle_indices"][p], old["puzzle_indices"][p + 1]
            is_val[hi - m:hi] = True
            kept.append(hi - lo - m)
    for k in ("inputs", "labels"):
        np.testing.assert_array_equal(new[k], old[k][~is_val])
    for k in ("puzzle_identifiers", "group_indices"):
        np.testing.assert_array_equal(new[k], old[k])
    np.testing.assert_array_equal(new["puzzle_indices"], np.concatenate([[0], np.cumsum(kept)]))
    assert meta["total_groups"] == 5 and vmeta["total_groups"] == 3
    assert vmeta["num_puzzle_identifiers"] == meta["num_puzzle_identifiers"] == len(ids)
    assert len(v["inputs"]) == is_val.sum() == 4 * sum(moved.values())
    for k in ("inputs", "labels"):
        for got, was in zip(v[k], old[k][is_val]):
            grid, r, c = decode(got)
            assert (r, c) == (0, 0)  # no translation in val
            np.testing.assert_array_equal(grid, decode(was)[0])
    # val's puzzles are the test split's: the same variants of the same tasks, in the same order
    test, _ = load(val, "test")
    for k in ("puzzle_identifiers", "group_indices"):
        np.testing.assert_array_equal(v[k], test[k])


def test_arc_val_is_disjoint_from_train_and_test(arc):
    """No (variant, input grid) of val is in train; no val input is a test input."""
    _, val, ids, _, _ = arc

    def pairs(split):
        a, _ = load(val, split)
        puzzle = np.searchsorted(a["puzzle_indices"], np.arange(len(a["inputs"])), side="right") - 1
        return {(int(a["puzzle_identifiers"][p]), decode(x)[0].tobytes(), decode(x)[0].shape)
                for p, x in zip(puzzle, a["inputs"])}

    v = pairs("val")
    assert v and not v & pairs("train") and not v & pairs("test")


def test_arc_val_puzzles_json_matches_val(arc):
    """val_puzzles.json is shaped like test_puzzles.json: each val task's remaining demonstrations
    as "train", the moved ones (with outputs) as "test", in original grids; every val example,
    undone by its variant, is its task's "test" pair of the same index."""
    _, val, ids, moved, names = arc
    with open(os.path.join(val, "val_puzzles.json")) as f:
        vp = json.load(f)
    with open(os.path.join(val, "test_puzzles.json")) as f:
        tp = json.load(f)
    assert set(vp) == set(names["evaluation"])
    for t, v in vp.items():
        assert list(v) == ["train", "test"] and v["train"] + v["test"] == tp[t]["train"]
    a, _ = load(val, "val")
    for p in range(len(a["puzzle_identifiers"])):
        name = ids[a["puzzle_identifiers"][p]]
        want = vp[name.split("|||")[0]]["test"]
        rows = range(a["puzzle_indices"][p], a["puzzle_indices"][p + 1])
        assert len(rows) == len(want)
        for e, pair in zip(rows, want):
            np.testing.assert_array_equal(undo(decode(a["inputs"][e])[0], name), pair["input"])
            np.testing.assert_array_equal(undo(decode(a["labels"][e])[0], name), pair["output"])


def test_arc_val_read_by_puzzle_dataset(arc):
    _, val, *_ = arc
    assert check_read_val(val, batch=8).metadata.total_groups == 3


def test_arc_short_tasks_keep_one_demonstration(tmp_path, capsys):
    """A task with no more demonstrations than --val_pairs keeps one in train, and the build counts
    them; a test set where no task has two is an error. From the command line too."""
    d = str(tmp_path)
    pair = lambda x: {"input": [[x]], "output": [[x, x]]}
    tasks = {"one": {"train": [pair(1)], "test": [pair(2)]},
             "three": {"train": [pair(1), pair(3), pair(4)], "test": [pair(5)]},
             "four": {"train": [pair(6), pair(7), pair(8), pair(9)], "test": [pair(0)]}}
    with open(f"{d}/z_training_challenges.json", "w") as f:
        json.dump(tasks, f)
    prepare_arc.main([f"--input_file_prefix={d}/z", "--subsets=training", "--test_set_name=training",
                      "--num_aug=2", "--val_pairs=3", f"--output_dir={d}/out"])
    assert "val: 2 of 3 training tasks have 3 demonstrations or fewer; each keeps one in train" in capsys.readouterr().out
    with open(f"{d}/out/val_puzzles.json") as f:
        vp = json.load(f)
    assert {t: (len(v["train"]), len(v["test"])) for t, v in vp.items()} == {"three": (1, 2), "four": (1, 3)}
    train, _ = load(f"{d}/out", "train")
    assert np.diff(train["puzzle_indices"]).tolist() == [1] * 9  # every variant of every task: one demonstration
    with open(f"{d}/z_training_challenges.json", "w") as f:
        json.dump({"one": tasks["one"]}, f)
    with pytest.raises(ValueError, match="no task of the test set 'training' has two demonstrations"):
        prepare_arc.build(f"{d}/out2", input_file_prefix=f"{d}/z", subsets=["training"],
                          test_set_name="training", num_aug=0, val_pairs=1, progress=False)


# -----------------------------------------------------------------------------
# Sudoku and Maze

SUDOKU = dict(source="generate", size=4, num_train=30, num_test=8, min_blanks=8, num_aug=2, seed=3)
MAZE = dict(source="generate", size=7, num_train=12, num_test=3, aug=True, seed=5)


@pytest.mark.parametrize("builder, kw, fraction, per_group", [
    (prepare_sudoku, SUDOKU, 0.3, 3),   # 9 of 30 puzzles
    (prepare_maze, MAZE, 0.3, 8),       # round(3.6): 4 of 12 mazes
])
def test_val_fraction(tmp_path, builder, kw, fraction, per_group):
    """round(F * n) original training puzzles, chosen by the seed, form val (one puzzle per group,
    as the test split); train is the build without val less those groups, each with all its
    augmentations; the test split is unchanged; PuzzleDataset reads val."""
    plain = builder.build(str(tmp_path / "plain"), **kw)
    val = builder.build(str(tmp_path / "val"), val_fraction=fraction, **kw)
    n, k = kw["num_train"], round(fraction * kw["num_train"])
    assert not os.path.exists(os.path.join(plain, "val"))
    same_files(plain, val, split_files("test") + ["identifiers.json"])
    old, _ = load(plain, "train")
    new, meta = load(val, "train")
    v, vmeta = load(val, "val")
    # which groups went: the val inputs are originals (first puzzle of a group) of the old train split
    originals = [x.tobytes() for x in old["inputs"][::per_group]]
    chosen = sorted(originals.index(x.tobytes()) for x in v["inputs"])
    assert len(set(chosen)) == k == len(v["inputs"])
    np.testing.assert_array_equal(chosen, builder.choose_val(n, fraction, kw["seed"]))
    out = np.zeros(n, bool)
    out[chosen] = True
    rows = np.repeat(~out, per_group)
    for key in ("inputs", "labels"):
        np.testing.assert_array_equal(new[key], old[key][rows])
        np.testing.assert_array_equal(v[key], old[key][::per_group][out])
    assert not {x.tobytes() for x in v["inputs"]} & {x.tobytes() for x in new["inputs"]}
    np.testing.assert_array_equal(new["group_indices"], np.arange(0, (n - k) * per_group + 1, per_group))
    assert meta["total_groups"] == n - k and vmeta["total_groups"] == vmeta["total_puzzles"] == k
    np.testing.assert_array_equal(v["puzzle_indices"], np.arange(k + 1))
    np.testing.assert_array_equal(v["group_indices"], np.arange(k + 1))
    check_read_val(val, batch=4)
    # seeded: another seed picks others
    assert not np.array_equal(builder.choose_val(n, fraction, 0), builder.choose_val(n, fraction, 1))


@pytest.mark.parametrize("builder, kw", [(prepare_sudoku, SUDOKU), (prepare_maze, MAZE)])
def test_val_fraction_errors_and_cli(tmp_path, builder, kw):
    for fraction, needle in ((1.0, "must be in \\[0, 1\\)"), (-0.1, "must be in \\[0, 1\\)"),
                             (0.01, "is 0 puzzles|is 0 mazes")):
        with pytest.raises(ValueError, match=needle):
            builder.build(str(tmp_path / "x"), val_fraction=fraction, **kw)
    assert not os.path.exists(tmp_path / "x")
    args = [f"--{k}={v}" for k, v in kw.items()] + ["--val_fraction=0.25", f"--output_dir={tmp_path}/cli"]
    builder.main(args)
    assert load(str(tmp_path / "cli"), "val")[1]["total_groups"] == round(0.25 * kw["num_train"])
