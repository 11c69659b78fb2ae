# Datasets as URM's and HRM's builders write them (REFERENCE.md §8.6, §9.5), made here by small
# writers of their own that copy the layout only: file names, dtypes, dataset.json without
# total_puzzles, identifiers.json, variant names, and HRM's ARC without test_puzzles.json. data.py
# reads them unchanged; ARCEvaluator votes on HRM's ARC layout with the tasks taken from the split.
import json
import os
import re

import numpy as np
import pytest
import torch

from data import IGNORE_LABEL_ID, PuzzleDataset, dihedral, load_metadata
from evaluate import ARCEvaluator, crop, inverse_variant, is_arc_dataset, parse_variant, split_tasks

# dataset.json keys in the order both builders' pydantic metadata dumps them: no total_puzzles
META_KEYS = ["pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
             "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "sets"]


def write_split(root, split, arrays, meta):
    os.makedirs(os.path.join(root, split), exist_ok=True)
    with open(os.path.join(root, split, "dataset.json"), "w") as f:
        json.dump({k: meta[k] for k in META_KEYS}, f)
    for name, arr in arrays.items():
        np.save(os.path.join(root, split, f"all__{name}.npy"), arr)


def indices(counts):
    """puzzle_indices or group_indices from the sizes: int32, starting at 0."""
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)


# -- Sudoku, as URM's builder (num_aug > 0 makes the train tokens int64; test stays uint8) --------

def sudoku_grid(rng):
    base = (3 * (np.arange(9)[:, None] % 3) + np.arange(9)[:, None] // 3 + np.arange(9)) % 9 + 1
    digits = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
    return digits[base]


def write_urm_sudoku(root, n_train=3, n_test=2, aug=2, seed=0):
    rng = np.random.default_rng(seed)
    for split, n, k in (("train", n_train, aug), ("test", n_test, 0)):
        inputs, labels = [], []
        for _ in range(n):
            sol = sudoku_grid(rng)
            board = np.where(rng.random((9, 9)) < 0.5, 0, sol)
            variants = [(board.astype(np.uint8), sol.astype(np.uint8))]
            for _ in range(k):  # an augmented copy: digits permuted, int64 as numpy's permutation gives
                m = np.concatenate([[0], rng.permutation(np.arange(1, 10))])
                variants.append((m[board], m[sol]))
            for b, s in variants:
                inputs.append(b.ravel())
                labels.append(s.ravel())
        # a list of uint8 and int64 rows concatenates to int64; test rows are all uint8
        arrays = {"inputs": np.concatenate(inputs).reshape(len(inputs), -1) + 1,
                  "labels": np.concatenate(labels).reshape(len(labels), -1) + 1,
                  "group_indices": indices([k + 1] * n), "puzzle_indices": indices([1] * (n * (k + 1))),
                  "puzzle_identifiers": np.zeros(n * (k + 1), np.int32)}
        write_split(root, split, arrays, dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=11,
                                              seq_len=81, num_puzzle_identifiers=1, total_groups=n,
                                              mean_puzzle_examples=1.0, sets=["all"]))
    with open(os.path.join(root, "identifiers.json"), "w") as f:
        json.dump(["<blank>"], f)
    return str(root)


# -- ARC, as URM's builder (|||-names, test_puzzles.json) or HRM's (_-names, no test_puzzles.json) --

def canvas(grid, r=0, c=0):
    """900 uint8 tokens: colours + 2 at (r, c), EOS (1) under and right of the grid."""
    out = np.zeros((30, 30), np.uint8)
    h, w = grid.shape
    out[r:r + h, c:c + w] = grid + 2
    if r + h < 30:
        out[r + h, c:c + w] = 1
    if c + w < 30:
        out[r:r + h, c + w] = 1
    return out.ravel()


def random_task(rng, n_train, n_test):
    def grid():
        return rng.integers(0, 10, (rng.integers(1, 5), rng.integers(1, 6))).astype(np.uint8)
    return {"train": [(grid(), grid()) for _ in range(n_train)], "test": [(grid(), grid()) for _ in range(n_test)]}


# evaluation tasks (test pairs to the test split) first in file order, then a training-only task
ARC_TASKS = {"00576224": (2, 2), "0c786b71": (2, 1), "007bbfb7": (3, 1)}
ARC_TEST = ["00576224", "0c786b71"]
VARIANTS = [(1, "0935172486"), (6, "0214365879")]  # (dihedral id, colour map) of the augmented copies


def variant_name(task, t, colours, style):
    return f"{task}|||t{t}|||{colours}" if style == "urm" else f"{task}_t{t}_{colours}"


def write_arc(root, style, seed=0):
    """Returns (dir, tasks {name: {'train': [(in, out)], 'test': [(in, out)]}}, variants {name:
    (task, dihedral id, colour map)}). Groups: the original, then the augmented variants; train
    examples moved by one random offset per example except one per puzzle (translation)."""
    rng = np.random.default_rng(seed)
    tasks = {name: random_task(rng, *sizes) for name, sizes in ARC_TASKS.items()}
    variants = {}
    for task in tasks:
        variants[task] = (task, 0, "0123456789")
        for t, colours in VARIANTS:
            variants[variant_name(task, t, colours, style)] = (task, t, colours)
    names = ["<blank>"] + list(variants)
    splits = {"train": [], "test": []}  # per split: groups, each [(variant name, [(in, out)])]
    for task, pairs in tasks.items():
        to_train = pairs["train"] + ([] if task in ARC_TEST else pairs["test"])
        for split, examples in (("train", to_train), ("test", pairs["test"] if task in ARC_TEST else [])):
            if examples:
                splits[split].append([(n, examples) for n, v in variants.items() if v[0] == task])
    for split, groups in splits.items():
        rows, counts, ids = [], [], []
        for group in groups:
            for name, examples in group:
                _, t, colours = variants[name]
                m = np.frombuffer(colours.encode(), np.uint8) - ord("0")
                corner = rng.integers(len(examples))
                for e, (i, o) in enumerate(examples):
                    i, o = dihedral(m[i], t), dihedral(m[o], t)
                    r = c = 0
                    if split == "train" and e != corner:
                        r = rng.integers(0, 30 - max(i.shape[0], o.shape[0]) + 1)
                        c = rng.integers(0, 30 - max(i.shape[1], o.shape[1]) + 1)
                    rows.append((canvas(i, r, c), canvas(o, r, c)))
                counts.append(len(examples))
                ids.append(names.index(name))
        arrays = {"inputs": np.stack([a for a, _ in rows]), "labels": np.stack([b for _, b in rows]),
                  "puzzle_identifiers": np.array(ids, np.int32), "puzzle_indices": indices(counts),
                  "group_indices": indices([len(g) for g in groups])}
        write_split(root, split, arrays, dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12,
                                              seq_len=900, num_puzzle_identifiers=len(names), total_groups=len(groups),
                                              mean_puzzle_examples=len(rows) / len(counts), sets=["all"]))
    with open(os.path.join(root, "identifiers.json"), "w") as f:
        json.dump(names, f)
    if style == "urm":
        as_json = lambda ps: [{"input": i.tolist(), "output": o.tolist()} for i, o in ps]
        with open(os.path.join(root, "test_puzzles.json"), "w") as f:
            json.dump({t: {"train": as_json(tasks[t]["train"]), "test": as_json(tasks[t]["test"])} for t in ARC_TEST}, f)
    return str(root), tasks, variants


# -- data.py reads them ------------------------------------------------------------------------------

def check_reads(root, split, want_puzzles, want_dtype):
    assert "total_puzzles" not in json.load(open(os.path.join(root, split, "dataset.json")))
    assert np.load(os.path.join(root, split, "all__inputs.npy")).dtype == want_dtype
    meta = load_metadata(root, split)
    assert meta.total_puzzles == want_puzzles
    ds = PuzzleDataset(root, split, 4)
    d = ds.data["all"]
    rows = [b for _, b in ds.iter_test()]
    got = torch.cat([b["inputs"] for b in rows])[:len(d["inputs"])]
    assert torch.equal(got, torch.from_numpy(np.asarray(d["inputs"], np.int32)))
    labels = torch.cat([b["labels"] for b in rows])[:len(d["labels"])]
    want = torch.from_numpy(np.asarray(d["labels"], np.int32))
    assert torch.equal(labels, torch.where(want == 0, IGNORE_LABEL_ID, want))
    return ds


def test_urm_sudoku_reads(tmp_path):
    root = write_urm_sudoku(tmp_path)
    check_reads(root, "test", 2, np.uint8)
    ds = check_reads(root, "train", 9, np.int64)
    assert ds.metadata.total_groups == 3 and ds.metadata.mean_puzzle_examples == 1.0
    batches = list(ds.iter_train())
    assert len(batches) == 0  # 3 groups give 3 rows a pass: no full batch of 4
    ds = PuzzleDataset(root, "train", 2)
    batches = [b for _, b in ds.iter_train()]
    assert len(batches) == 1 and batches[0]["inputs"].shape == (2, 81) and batches[0]["inputs"].dtype == torch.int32
    # merged with itself: the derived counts add up like written ones
    m = load_metadata([root, root], "train")
    assert m.total_puzzles == 18 and m.mean_puzzle_examples == 1.0


@pytest.mark.parametrize("style", ["urm", "hrm"])
def test_arc_reads(tmp_path, style):
    root, tasks, variants = write_arc(tmp_path, style)
    # test: 3 variants of each evaluation task; train: 3 of every task
    check_reads(root, "test", 3 * len(ARC_TEST), np.uint8)
    ds = check_reads(root, "train", 3 * len(ARC_TASKS), np.uint8)
    assert ds.metadata.total_groups == len(ARC_TASKS)
    for _, b in PuzzleDataset(root, "train", 4).iter_train():
        assert b["inputs"].shape == (4, 900) and (b["puzzle_identifiers"] > 0).all()
    assert os.path.exists(os.path.join(root, "test_puzzles.json")) == (style == "urm")
    assert is_arc_dataset(root)


def test_total_puzzles_needs_the_arrays(tmp_path):
    root = write_urm_sudoku(tmp_path)
    file = os.path.join(root, "test", "all__puzzle_identifiers.npy")
    os.remove(file)
    with pytest.raises(ValueError, match=re.escape(file) + ".*total_puzzles"):
        load_metadata(root, "test")
    assert not is_arc_dataset(root)


# -- HRM's variant names ----------------------------------------------------------------------

@pytest.mark.parametrize("t", range(8))
def test_hrm_names_undo(t):
    rng = np.random.default_rng(t)
    g = rng.integers(0, 10, (3, 5)).astype(np.uint8)
    m = np.concatenate([[0], rng.permutation(np.arange(1, 10))]).astype(np.uint8)
    for task in ("0c786b71", "my_task"):  # the suffix is taken from the right
        name = f"{task}_t{t}_{''.join(map(str, m))}"
        got, undo = inverse_variant(name)
        assert got == task and parse_variant(name) == (task, t, "".join(map(str, m)))
        np.testing.assert_array_equal(undo(crop(canvas(dihedral(m[g], t)))), g)


@pytest.mark.parametrize("name", ["0c786b71", "a_t8_0123456789", "a_t1_012345678", "a_t1_0123456788",
                                  "_t1_0123456789", "a_x1_0123456789", "a_t10_0123456789", "<blank>"])
def test_names_that_are_no_variant(name):
    assert parse_variant(name) is None and inverse_variant(name)[0] == name


# -- voting on HRM's ARC layout ---------------------------------------------------------------

def as_lists(pairs):
    return [{"input": i.tolist(), "output": o.tolist()} for i, o in pairs]


def test_tasks_from_the_split(tmp_path):
    """Without test_puzzles.json the tasks come from the original variants: the test split's
    pairs, and the train split's (moved) demonstrations; on URM's layout they equal its file."""
    root, tasks, _ = write_arc(tmp_path / "hrm", "hrm")
    ev = ARCEvaluator(root)
    assert list(ev.tasks) == ARC_TEST
    for t in ARC_TEST:
        assert ev.tasks[t] == {"train": as_lists(tasks[t]["train"]), "test": as_lists(tasks[t]["test"])}
    root, _, _ = write_arc(tmp_path / "urm", "urm")
    with open(os.path.join(root, "test_puzzles.json")) as f:
        assert split_tasks(root, "test", ARCEvaluator(root).names) == json.load(f) == ARCEvaluator(root).tasks
    os.remove(os.path.join(root, "test_puzzles.json"))
    os.remove(os.path.join(tmp_path / "urm", "test", "dataset.json"))
    with pytest.raises(ValueError, match=re.escape(os.path.join(root, "test_puzzles.json"))):
        ARCEvaluator(root)


def answer(variants, name, grid):
    """A prediction for a puzzle of variant `name`: the original grid as that variant shows it."""
    _, t, colours = variants[name]
    return canvas(dihedral((np.frombuffer(colours.encode(), np.uint8) - ord("0"))[grid], t))


def test_hrm_voting_and_submission(tmp_path):
    root, tasks, variants = write_arc(tmp_path, "hrm")
    ds = PuzzleDataset(root, "test", 4)
    names = json.load(open(os.path.join(root, "identifiers.json")))
    a, b = ARC_TEST
    wrong = np.array([[9, 9], [9, 9]], np.uint8)
    evs = {"all": ARCEvaluator(root, pass_ks=(1, 2)), "right": ARCEvaluator(root, pass_ks=(1, 2)),
           "canonical": ARCEvaluator(root, pass_ks=(1,), variants="canonical")}
    seen = {}
    for _, batch in ds.iter_test():
        preds = batch["labels"].clamp(min=0).numpy().copy()  # the answers, as the variants show them
        for r, pid in enumerate(batch["puzzle_identifiers"].tolist()):
            if pid == 0:
                continue
            name = names[pid]
            k = seen[name] = seen.get(name, -1) + 1  # the puzzle's k-th test input
            if (variants[name][0], k) == (a, 1) or (variants[name][0] == b and variants[name][1] != 0):
                preds[r] = answer(variants, name, wrong)  # a's 2nd input: all wrong; b: all but the original
        q = torch.zeros(len(preds))
        evs["right"].update(batch["inputs"], batch["puzzle_identifiers"], batch["labels"].clamp(min=0), q)
        for ev in (evs["all"], evs["canonical"]):
            ev.update(batch["inputs"], batch["puzzle_identifiers"], torch.from_numpy(preds), q)
    assert evs["right"].result()["metrics"] == {"pass@1": 1.0, "pass@2": 1.0}
    res = evs["all"].result()
    # a: 1 of 2 inputs; b: the right answer has 1 vote of 3, second place
    assert res["metrics"] == {"pass@1": pytest.approx((0.5 + 0) / 2), "pass@2": pytest.approx((0.5 + 1) / 2)}
    sub = res["submission"]
    out = lambda t, i: tasks[t]["test"][i][1].tolist()
    assert list(sub) == [a, b]
    assert sub[a] == [{"attempt_1": out(a, 0), "attempt_2": out(a, 0)},
                      {"attempt_1": wrong.tolist(), "attempt_2": wrong.tolist()}]
    assert sub[b] == [{"attempt_1": wrong.tolist(), "attempt_2": out(b, 0)}]
    assert [(r["task"], r["test_index"], r["votes"]) for r in res["rows"]] == [(a, 0, 3), (a, 1, 3), (b, 0, 3)]
    evs["all"].scoring = "all_or_nothing"
    assert evs["all"].result()["metrics"] == {"pass@1": 0.0, "pass@2": 0.5}
    # only the original variant votes: b is right
    assert evs["canonical"].result()["metrics"] == {"pass@1": pytest.approx((0.5 + 1) / 2)}
    html = evs["all"].html_tasks(res)
    assert [t["task"] for t in html] == [a, b] and len(html[0]["demos"]) == 2 and len(html[0]["tests"]) == 2
