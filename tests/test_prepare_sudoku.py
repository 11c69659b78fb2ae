# prepare_sudoku.py: the CSV path reproduces the reference builder, augmentations and generated
# puzzles are valid (checked with an independent solver), bad input is reported by file and
# line, and a failed build never touches an existing dataset.
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from data import PuzzleDataset
import prepare_sudoku
from prepare_sudoku import build, validate_solution

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
BOX = {4: (2, 2), 6: (2, 3), 9: (3, 3)}


def load(out, split):
    arrays = {k: np.load(os.path.join(out, split, f"all__{k}.npy")) for k in FIELDS}
    with open(os.path.join(out, split, "dataset.json")) as f:
        return arrays, json.load(f)


def is_solution(grid):
    """Independent check: every row, column and box of an n x n grid holds 1..n."""
    n = len(grid)
    br, bc = BOX[n]
    want = set(range(1, n + 1))
    units = [list(r) for r in grid] + [list(c) for c in zip(*grid)]
    units += [[grid[r][c] for r in range(R, R + br) for c in range(C, C + bc)]
              for R in range(0, n, br) for C in range(0, n, bc)]
    return all(set(int(v) for v in u) == want and len(u) == n for u in units)


def count_solutions(grid, limit=2):
    """Independent solver: plain backtracking with Python sets on the most constrained cell."""
    n = len(grid)
    br, bc = BOX[n]
    g = [list(map(int, r)) for r in grid]

    def options(r, c):
        used = set(g[r]) | {g[i][c] for i in range(n)}
        R, C = r - r % br, c - c % bc
        used |= {g[i][j] for i in range(R, R + br) for j in range(C, C + bc)}
        return [d for d in range(1, n + 1) if d not in used]

    def search():
        blanks = [(len(options(r, c)), r, c) for r in range(n) for c in range(n) if g[r][c] == 0]
        if not blanks:
            return 1
        _, r, c = min(blanks)
        total = 0
        for d in options(r, c):
            g[r][c] = d
            total += search()
            g[r][c] = 0
            if total >= limit:
                break
        return total

    return search()


def check_pairs(inputs, labels, n):
    """Every (input, label) pair of tokens: the label is a solved grid, the input agrees with it."""
    for x, y in zip(inputs, labels):
        q, a = x.reshape(n, n).astype(int) - 1, y.reshape(n, n).astype(int) - 1
        assert is_solution(a.tolist())
        assert ((q == 0) | (q == a)).all()


# -- CSV source: the reference's dataset ---------------------------------------------------------

@pytest.fixture(scope="module")
def ref_build(tmp_path_factory, golden):
    out = str(tmp_path_factory.mktemp("b") / "sudoku")
    build(out, source="csv", input_dir=os.path.join(golden, "sudoku_ref_data", "csv"), num_aug=2, seed=0)
    return out


def test_csv_test_split_equals_the_reference(ref_build, golden):
    ours, meta = load(ref_build, "test")
    ref, ref_meta = load(os.path.join(golden, "sudoku_ref_data"), "test")
    for k in FIELDS:
        assert ours[k].dtype == ref[k].dtype and np.array_equal(ours[k], ref[k]), k
    assert meta == ref_meta
    with open(os.path.join(ref_build, "identifiers.json")) as f:
        assert json.load(f) == ["<blank>"]


def test_csv_train_split_counts_and_tokens(ref_build, golden):
    ours, meta = load(ref_build, "train")
    ref, ref_meta = load(os.path.join(golden, "sudoku_ref_data"), "train")
    assert ours["inputs"].shape == ref["inputs"].shape == (144, 81)
    for k in ("puzzle_identifiers", "puzzle_indices", "group_indices"):
        assert np.array_equal(ours[k], ref[k]), k
    # the first puzzle of each group is the original, in file order; the others are random
    assert np.array_equal(ours["inputs"][::3], ref["inputs"][::3])
    assert np.array_equal(ours["labels"][::3], ref["labels"][::3])
    assert ours["inputs"].min() == 1 and ours["inputs"].max() <= 10 and ours["labels"].min() == 2
    # same metadata, except that total_puzzles counts puzzles (the reference writes the group count)
    assert meta["total_puzzles"] == 144 and ref_meta["total_puzzles"] == 48
    assert {k: v for k, v in meta.items() if k != "total_puzzles"} == \
           {k: v for k, v in ref_meta.items() if k != "total_puzzles"}
    assert list(meta) == list(ref_meta)
    PuzzleDataset(ref_build, "train", 8)  # data.py reads it


def test_augmented_pairs_are_valid_and_varied(ref_build):
    ours, _ = load(ref_build, "train")
    check_pairs(ours["inputs"], ours["labels"], 9)
    originals = ours["inputs"][::3]
    for j in (1, 2):
        variants = ours["inputs"][j::3]
        assert ((variants == 1).sum(1) == (originals == 1).sum(1)).all()  # blanks stay blanks
        assert (variants != originals).any(1).all()


def test_subsample_and_min_difficulty(tmp_path, golden):
    csv_dir = os.path.join(golden, "sudoku_ref_data", "csv")
    out = build(str(tmp_path / "a"), source="csv", input_dir=csv_dir, subsample_size=10, seed=1)
    ours, meta = load(out, "train")
    ref, _ = load(os.path.join(golden, "sudoku_ref_data"), "train")
    assert meta["total_groups"] == 10 and len(ours["inputs"]) == 10
    originals = {r.astype(np.uint8).tobytes() for r in ref["inputs"][::3]}
    assert all(r.tobytes() in originals for r in ours["inputs"])
    assert len({r.tobytes() for r in ours["inputs"]}) == 10

    lines = open(os.path.join(csv_dir, "train.csv")).read().splitlines()
    rated = [lines[0]] + [line.rsplit(",", 1)[0] + f",{i % 5}" for i, line in enumerate(lines[1:])]
    (tmp_path / "rated").mkdir()
    (tmp_path / "rated" / "train.csv").write_text("\n".join(rated) + "\n")
    test_lines = open(os.path.join(csv_dir, "test.csv")).read().replace(",0\n", ",4\n")
    (tmp_path / "rated" / "test.csv").write_text(test_lines)
    out = build(str(tmp_path / "b"), source="csv", input_dir=str(tmp_path / "rated"), min_difficulty=3)
    ours, _ = load(out, "train")
    assert len(ours["inputs"]) == sum(1 for i in range(len(lines) - 1) if i % 5 >= 3)
    assert len(load(out, "test")[0]["inputs"]) == 24  # the filter applies to both splits


# -- generated puzzles ----------------------------------------------------------------------------

@pytest.mark.parametrize("n,lo,hi,num_train,num_test", [(4, 8, 10, 40, 20), (6, 16, 20, 40, 20), (9, 48, 52, 6, 4)])
def test_generated_puzzles_are_valid_and_unique(tmp_path, n, lo, hi, num_train, num_test):
    out = build(str(tmp_path / "gen"), source="generate", size=n, num_train=num_train, num_test=num_test,
                min_blanks=lo, max_blanks=hi, num_aug=2, seed=0)
    train, train_meta = load(out, "train")
    test, test_meta = load(out, "test")
    assert train_meta["seq_len"] == n * n and train_meta["vocab_size"] == n + 2
    assert train_meta["total_groups"] == num_train and test_meta["total_groups"] == num_test
    assert len(train["inputs"]) == 3 * num_train and len(test["inputs"]) == num_test
    for arrays, originals in ((train, train["inputs"][::3]), (test, test["inputs"])):
        check_pairs(arrays["inputs"], arrays["labels"], n)
        blanks = (arrays["inputs"] == 1).sum(1)
        assert ((blanks >= lo) & (blanks <= hi)).all()
        for x in originals:
            assert count_solutions((x.reshape(n, n).astype(int) - 1).tolist()) == 1
        assert len({x.tobytes() for x in originals}) == len(originals)
    # no test question is a train question or one of the train augmentations
    assert not {x.tobytes() for x in train["inputs"]} & {x.tobytes() for x in test["inputs"]}


def test_generation_is_deterministic(tmp_path):
    kw = dict(source="generate", size=4, num_train=20, num_test=5, min_blanks=8, num_aug=3)
    a, _ = load(build(str(tmp_path / "a"), seed=3, **kw), "train")
    b, _ = load(build(str(tmp_path / "b"), seed=3, **kw), "train")
    c, _ = load(build(str(tmp_path / "c"), seed=4, **kw), "train")
    assert all(np.array_equal(a[k], b[k]) for k in FIELDS)
    assert not np.array_equal(a["inputs"], c["inputs"])


def test_validate_solution():
    grid = [[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]
    assert validate_solution(grid) and validate_solution(np.array(grid).ravel())
    grid[0][0], grid[0][1] = 2, 1  # rows still fine, columns and boxes not
    assert not validate_solution(grid)


def test_impossible_blank_count_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="blank"):
        build(str(tmp_path / "x"), source="generate", size=4, num_train=1, num_test=1, min_blanks=14)
    assert not os.listdir(tmp_path)


# -- bad input --------------------------------------------------------------------------------------

Q = "92.65.4...6............1...789.12..52.3..58...5.7.3.....7..63.2.....71.9..65..7.4"
A = "921658473365274918478391526789412635213965847654783291897146352542837169136529784"
HEAD = "source,question,answer,rating"


@pytest.mark.parametrize("text,line,needle", [
    ("q,a\n", 1, "header"),                                                   # missing header
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A}\n", 3, "columns"),                       # column count
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A},0,9\n", 3, "columns"),
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q[:-1]},{A},0\n", 3, "characters"),             # wrong length
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A},0\nx,{Q[:5]}x{Q[6:]},{A},0\n", 4, "digits"),  # not a digit
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A[:-1]}.,0\n", 3, "answer"),                # blank in answer
    (f"{HEAD}\nx,{Q},{A[1]}{A[0]}{A[2:]},0\n", 2, "disagrees"),                # answer vs clue
    (f"{HEAD}\nx,{Q},{A},0\nx,{'.' * 81},{A[1]}{A[0]}{A[2:]},0\n", 3, "valid"),  # answer not a Sudoku
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A},hard\n", 3, "rating"),                  # rating, when filtering
])
def test_malformed_csv_names_file_and_line(tmp_path, text, line, needle):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "train.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    (tmp_path / "in" / "test.csv").write_text(text)
    path = str(tmp_path / "in" / "test.csv")
    with pytest.raises(ValueError) as e:
        build(str(tmp_path / "out"), source="csv", input_dir=str(tmp_path / "in"), min_difficulty=0)
    assert f"{path}:{line}:" in str(e.value) and needle in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["in"]  # nothing written, no temporary left


def test_cli_reports_a_bad_row_in_one_line(tmp_path):
    (tmp_path / "train.csv").write_text(f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A}\n")
    (tmp_path / "test.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "prepare_sudoku.py"), "--source=csv",
                        f"--input_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and f"{tmp_path / 'train.csv'}:3:" in r.stderr


def test_failed_build_keeps_the_old_dataset(tmp_path):
    out = str(tmp_path / "data")
    build(out, source="generate", size=4, num_train=10, num_test=3, min_blanks=6, seed=0)
    before = {f: open(os.path.join(dirpath, f), "rb").read()
              for dirpath, _, files in os.walk(out) for f in files}
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "train.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    (tmp_path / "in" / "test.csv").write_text(f"{HEAD}\nx,{Q},{A[::-1]},0\n")
    with pytest.raises(ValueError):
        build(out, source="csv", input_dir=str(tmp_path / "in"))
    after = {f: open(os.path.join(dirpath, f), "rb").read()
             for dirpath, _, files in os.walk(out) for f in files}
    assert after == before
    assert sorted(os.listdir(tmp_path)) == ["data", "in"]
    # a good build replaces it, leaving nothing else behind
    (tmp_path / "in" / "test.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    build(out, source="csv", input_dir=str(tmp_path / "in"))
    assert load(out, "train")[1]["seq_len"] == 81
    assert sorted(os.listdir(tmp_path)) == ["data", "in"]


def test_failure_while_writing_leaves_no_trace(tmp_path, monkeypatch):
    out = str(tmp_path / "data")
    build(out, source="generate", size=4, num_train=10, num_test=3, min_blanks=6, seed=0)
    before = open(os.path.join(out, "train", "all__inputs.npy"), "rb").read()
    write_split = prepare_sudoku.write_split

    def fail_on_test(out_dir, split, *args):
        if split == "test":
            raise OSError("disk full")
        write_split(out_dir, split, *args)

    monkeypatch.setattr(prepare_sudoku, "write_split", fail_on_test)
    with pytest.raises(OSError):
        build(out, source="generate", size=4, num_train=10, num_test=3, min_blanks=6, seed=1)
    assert open(os.path.join(out, "train", "all__inputs.npy"), "rb").read() == before
    assert os.listdir(tmp_path) == ["data"]


def test_hub_source_downloads_both_files(tmp_path, golden, monkeypatch):
    import huggingface_hub
    calls = []

    def fake_download(repo_id, filename, repo_type=None):
        calls.append((repo_id, filename, repo_type))
        return os.path.join(golden, "sudoku_ref_data", "csv", filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = build(str(tmp_path / "hub"), source="hub")
    assert calls == [("sapientinc/sudoku-extreme", f, "dataset") for f in ("train.csv", "test.csv")]
    assert np.array_equal(load(out, "test")[0]["inputs"], load(os.path.join(golden, "sudoku_ref_data"), "test")[0]["inputs"])


def test_small_test_puzzles_are_no_augmentation_of_train_puzzles(tmp_path):
    # 4x4 has few essentially different puzzles, so random ones would often repeat train puzzles
    # up to symmetry. Check every symmetry of every test puzzle, enumerated independently.
    out = build(str(tmp_path / "g"), source="generate", size=4, num_train=300, num_test=30, min_blanks=10, seed=0)
    train, test = load(out, "train")[0]["inputs"], load(out, "test")[0]["inputs"]

    def relabel(grid):  # digits renamed in order of first appearance (token 1 = blank kept)
        names = {1: 1}
        return tuple(names.setdefault(int(v), len(names) + 1) for v in grid.ravel())

    lines = [[0, 1, 2, 3], [1, 0, 2, 3], [0, 1, 3, 2], [1, 0, 3, 2],
             [2, 3, 0, 1], [3, 2, 0, 1], [2, 3, 1, 0], [3, 2, 1, 0]]
    train_keys = {relabel(x) for x in train}
    for x in test:
        g = x.reshape(4, 4)
        for t in (g, g.T):
            for rows in lines:
                for cols in lines:
                    assert relabel(t[rows][:, cols]) not in train_keys
