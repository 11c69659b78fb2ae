# prepare_maze.py: the CSV path writes what the reference builder writes, --aug adds the 8
# dihedral transforms, generated mazes have one shortest path of the asked length (checked with an
# independent search), bad input is reported by file and line, a failed build never touches an
# existing dataset, and config/maze.py trains on a built dataset.
import json
import math
import os
import subprocess
import sys
from collections import deque

import numpy as np
import pytest

import checkpoint
from conftest import ROOT
from data import PuzzleDataset
from prepare_maze import build, maze_problems

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
CHARS = "# SGo"  # tokens 1..5
HEAD = "source,question,answer,rating"
# REFERENCE.md §5's dihedral transforms, written out independently of data.dihedral
TRANSFORMS = [lambda g: g, lambda g: np.rot90(g, 1), lambda g: np.rot90(g, 2), lambda g: np.rot90(g, 3),
              np.fliplr, np.flipud, lambda g: g.T, lambda g: np.fliplr(np.rot90(g))]

# a 4x4 maze and its one path from S to G
Q = "S  #" "## #" "    " "G###"
A = "Soo#" "##o#" "ooo " "G###"


def load(out, split):
    arrays = {k: np.load(os.path.join(out, split, f"all__{k}.npy")) for k in FIELDS}
    with open(os.path.join(out, split, "dataset.json")) as f:
        return arrays, json.load(f)


def tokens(text):
    n = math.isqrt(len(text))
    return np.array([CHARS.index(ch) + 1 for ch in text], np.uint8).reshape(n, n)


def text(grid):
    return "".join(CHARS[t - 1] for t in np.asarray(grid).ravel())


def write_csv(path, rows):
    path.write_text(HEAD + "\n" + "".join(f"gen,{q},{a},0\n" for q, a in rows))


def expected(rows, aug):
    """What the reference builder writes for these (question, answer) texts."""
    inputs, labels = [], []
    for q, a in rows:
        for f in TRANSFORMS if aug else TRANSFORMS[:1]:
            inputs.append(f(tokens(q)).ravel())
            labels.append(f(tokens(a)).ravel())
    groups, per = len(rows), 8 if aug else 1
    return {"inputs": np.array(inputs, np.uint8), "labels": np.array(labels, np.uint8),
            "puzzle_identifiers": np.zeros(groups * per, np.int32),
            "puzzle_indices": np.arange(groups * per + 1, dtype=np.int32),
            "group_indices": np.arange(0, groups * per + 1, per, dtype=np.int32)}


def bfs(grid, src):
    """Independent search: steps from src to every reachable non-wall cell, {(r, c): steps}."""
    n = len(grid)
    dist, queue = {src: 0}, deque([src])
    while queue:
        r, c = queue.popleft()
        for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nb[0] < n and 0 <= nb[1] < n and grid[nb] != 1 and nb not in dist:
                dist[nb] = dist[r, c] + 1
                queue.append(nb)
    return dist


def check_maze(q, a, min_path_len):
    """The label marks the shortest path from S to G, the only one, of at least min_path_len steps."""
    (s,), (g,) = [list(zip(*np.nonzero(q == t))) for t in (3, 4)]
    assert not (q == 5).any()
    from_s, from_g = bfs(q, s), bfs(q, g)
    assert g in from_s  # solvable
    length = from_s[g]
    assert length >= min_path_len
    ways = {s: 1}  # number of shortest paths to each cell, layer by layer
    for cell in sorted(from_s, key=from_s.get)[1:]:
        r, c = cell
        ways[cell] = sum(ways.get(nb, 0) for nb in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                         if from_s.get(nb) == from_s[cell] - 1)
    assert ways[g] == 1
    on_a_shortest_path = {c for c in from_s if c in from_g and from_s[c] + from_g[c] == length}
    marked = set(zip(*np.nonzero(a != q))) | {s, g}
    assert marked == on_a_shortest_path and len(marked) == length + 1
    assert (a[a != q] == 5).all()


# -- CSV source: the reference's dataset ---------------------------------------------------------

@pytest.fixture(scope="module")
def csv_rows(tmp_path_factory):
    """(question, answer) texts of generated 7x7 mazes, written as train.csv (12) and test.csv (5)."""
    d = tmp_path_factory.mktemp("csv")
    src = build(str(d / "gen"), size=7, num_train=12, num_test=5, seed=5)
    rows = {s: [(text(x), text(y)) for x, y in zip(load(src, s)[0]["inputs"], load(src, s)[0]["labels"])]
            for s in ("train", "test")}
    for s in rows:
        write_csv(d / f"{s}.csv", rows[s])
    return str(d), rows


@pytest.mark.parametrize("aug", [False, True])
def test_csv_build_has_the_reference_layout(tmp_path, csv_rows, aug):
    """The arrays and dataset.json equal the layout of REFERENCE.md §1 and §5 as written out by
    this test's own `expected` (no dataset written by the reference's maze builder is stored
    here, so this is a check against the documented layout, not against the reference's bytes)."""
    csv_dir, rows = csv_rows
    out = build(str(tmp_path / "maze"), source="csv", input_dir=csv_dir, aug=aug)
    for split in ("train", "test"):
        ours, meta = load(out, split)
        want = expected(rows[split], aug and split == "train")  # the test split is never augmented
        for k in FIELDS:
            assert ours[k].dtype == want[k].dtype and np.array_equal(ours[k], want[k]), (split, k)
        groups = len(rows[split])
        puzzles = len(want["puzzle_identifiers"])
        assert meta == {"pad_id": 0, "ignore_label_id": 0, "blank_identifier_id": 0, "vocab_size": 6,
                        "seq_len": 49, "num_puzzle_identifiers": 1, "total_groups": groups,
                        "mean_puzzle_examples": 1.0, "total_puzzles": puzzles, "sets": ["all"]}
        # the reference's keys, order and values, except that with --aug it writes the number of
        # groups as total_puzzles
        assert list(meta) == ["pad_id", "ignore_label_id", "blank_identifier_id", "vocab_size", "seq_len",
                              "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples",
                              "total_puzzles", "sets"]
    with open(os.path.join(out, "identifiers.json")) as f:
        assert json.load(f) == ["<blank>"]
    if aug:  # each group: the original and its transforms 1..7, in the order of REFERENCE.md §5
        train = load(out, "train")[0]
        for i, (q, a) in enumerate(rows["train"]):
            for t, f in enumerate(TRANSFORMS):
                assert np.array_equal(train["inputs"][8 * i + t], f(tokens(q)).ravel())
                assert np.array_equal(train["labels"][8 * i + t], f(tokens(a)).ravel())
    data = PuzzleDataset(out, "test", 4)  # data.py reads it
    batches = list(data.iter_test())
    assert len(batches) == 2 and batches[0][1]["inputs"].shape == (4, 49)
    assert (batches[1][1]["labels"][1:] == -100).all()  # the padding rows of the short batch


def test_subsample(tmp_path, csv_rows):
    csv_dir, rows = csv_rows
    originals = {tokens(q).tobytes() for q, _ in rows["train"]}
    picks = []
    for seed in (1, 1, 2):
        out = build(str(tmp_path / f"s{len(picks)}"), source="csv", input_dir=csv_dir, subsample_size=5,
                    aug=True, seed=seed)
        train, meta = load(out, "train")
        assert meta["total_groups"] == 5 and len(train["inputs"]) == 40
        firsts = [x.tobytes() for x in train["inputs"][::8]]
        assert len(set(firsts)) == 5 and set(firsts) <= originals
        assert len(load(out, "test")[0]["inputs"]) == 5  # the test split is kept whole
        picks.append(firsts)
    assert picks[0] == picks[1] and picks[0] != picks[2]  # seeded


def test_hub_source_downloads_both_files(tmp_path, csv_rows, monkeypatch):
    import huggingface_hub
    csv_dir, rows = csv_rows
    calls = []

    def fake_download(repo_id, filename, repo_type=None):
        calls.append((repo_id, filename, repo_type))
        return os.path.join(csv_dir, filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    out = build(str(tmp_path / "hub"), source="hub")
    assert calls == [("sapientinc/maze-30x30-hard-1k", f, "dataset") for f in ("train.csv", "test.csv")]
    assert np.array_equal(load(out, "test")[0]["inputs"], expected(rows["test"], False)["inputs"])


# -- bad input --------------------------------------------------------------------------------------

def edit(s, i, ch):
    return s[:i] + ch + s[i + 1:]


# 6x6: a path from S to G, and apart from it a 2x2 loop of 'o' (each 'o' has two 'o' neighbours)
Q6 = "S   ##" "### ##" "G   ##" "######" "##  ##" "##  ##"
A6 = "Sooo##" "###o##" "Gooo##" "######" "##oo##" "##oo##"


@pytest.mark.parametrize("text,line,needle", [
    ("q,a\n", 1, "header"),
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A}\n", 3, "columns"),
    (f"{HEAD}\nx,{Q},{A},0\nx,{edit(Q, 1, 'x')},{A},0\n", 3, "'x' are not among"),        # character
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{edit(A, 15, 'é')},0\n", 3, "are not among"),
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q[:-1]},{A[:-1]},0\n", 3, "16 characters"),                # row length
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{A + '#'},0\n", 3, "16 characters"),
    (f"{HEAD}\nx,{Q[:-1]},{A[:-1]},0\n", 2, "not a square"),
    (f"{HEAD}\nx,{Q},{A},0\nx,{A},{A},0\n", 3, "question must not contain 'o'"),
    (f"{HEAD}\nx,{Q},{edit(A, 3, 'o')},0\n", 2, "answer must equal the question"),       # 'o' on a wall
    (f"{HEAD}\nx,{Q},{edit(A, 0, 'o')},0\n", 2, "answer must equal the question"),       # S moved
    (f"{HEAD}\nx,{edit(Q, 11, 'S')},{edit(A, 11, 'S')},0\n", 2, "got 2 S and 1 G"),
    (f"{HEAD}\nx,{edit(Q, 12, ' ')},{edit(A, 12, ' ')},0\n", 2, "got 1 S and 0 G"),
    (f"{HEAD}\nx,{Q},{edit(A, 11, 'o')},0\n", 2, "row 3, column 3 has 3 path neighbours"),  # a branch
    (f"{HEAD}\nx,{Q},{edit(A, 6, ' ')},0\n", 2, "not a path from S to G"),               # a gap
    (f"{HEAD}\nx,{Q},{A},0\nx,{Q},{Q},0\n", 3, "the 'S' at row 1, column 1 has 0"),      # no path
    (f"{HEAD}\nx,{Q6},{A6},0\n", 2, "some are apart from it"),                            # a loop
])
def test_malformed_csv_names_file_and_line(tmp_path, text, line, needle):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "train.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    (tmp_path / "in" / "test.csv").write_text(text)
    path = str(tmp_path / "in" / "test.csv")
    with pytest.raises(ValueError) as e:
        build(str(tmp_path / "out"), source="csv", input_dir=str(tmp_path / "in"))
    assert f"{path}:{line}:" in str(e.value) and needle in str(e.value)
    assert sorted(os.listdir(tmp_path)) == ["in"]  # nothing written, no temporary left


def test_maze_problems_accepts_paths_of_any_shape():
    q6, a6 = tokens(Q6), tokens(A6)
    a6[4:, 2:4] = q6[4:, 2:4]  # without the loop
    ok = [(tokens(Q), tokens(A)), (q6, a6),
          (tokens("SG" "  "), tokens("SG" "  "))]  # S next to G: a path without 'o'
    for q, a in ok:
        assert maze_problems(q[None], a[None]) == [None]
    problems = maze_problems(np.stack([tokens(Q6), tokens(Q6)]), np.stack([a6, tokens(A6)]))
    assert problems[0] is None and "apart" in problems[1]


def test_cli_reports_a_bad_row_in_one_line(tmp_path):
    (tmp_path / "train.csv").write_text(f"{HEAD}\nx,{Q},{A},0\nx,{Q},{edit(A, 11, 'o')},0\n")
    (tmp_path / "test.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "prepare_maze.py"), "--source=csv",
                        f"--input_dir={tmp_path}", f"--output_dir={tmp_path / 'out'}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and f"{tmp_path / 'train.csv'}:3:" in r.stderr
    assert r.stderr.startswith("prepare_maze.py: error:")
    assert not os.path.exists(tmp_path / "out")


def test_failed_build_keeps_the_old_dataset(tmp_path):
    out = str(tmp_path / "data")
    build(out, size=6, num_train=10, num_test=3, seed=0)

    def files():
        return {f: open(os.path.join(d, f), "rb").read() for d, _, names in os.walk(out) for f in names}

    before = files()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "train.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    (tmp_path / "in" / "test.csv").write_text(f"{HEAD}\nx,{Q},{Q},0\n")
    with pytest.raises(ValueError, match="test.csv:2:"):
        build(out, source="csv", input_dir=str(tmp_path / "in"))
    assert files() == before
    assert sorted(os.listdir(tmp_path)) == ["data", "in"]
    (tmp_path / "in" / "test.csv").write_text(f"{HEAD}\nx,{Q},{A},0\n")
    build(out, source="csv", input_dir=str(tmp_path / "in"))  # a good build replaces it
    assert load(out, "train")[1]["seq_len"] == 16
    assert sorted(os.listdir(tmp_path)) == ["data", "in"]


# -- generated mazes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("size,num_train,num_test,min_path_len,loop_prob", [
    (4, 40, 10, None, 0.05),   # tiny: random mazes often repeat a train maze up to symmetry
    (10, 30, 10, None, 0.05),
    (13, 20, 5, 40, 0.2),
    (30, 8, 4, None, 0.05),    # the hard set's size: paths of at least 110 steps
])
def test_generated_mazes_are_valid(tmp_path, size, num_train, num_test, min_path_len, loop_prob):
    out = build(str(tmp_path / "gen"), size=size, num_train=num_train, num_test=num_test,
                min_path_len=min_path_len, loop_prob=loop_prob, aug=True, seed=0)
    want_len = {4: 2, 10: 12, 13: 40, 30: 110}[size]
    train, meta = load(out, "train")
    test, test_meta = load(out, "test")
    assert meta["seq_len"] == size * size and meta["vocab_size"] == 6
    assert meta["total_groups"] == num_train and test_meta["total_groups"] == num_test
    assert len(train["inputs"]) == 8 * num_train and len(test["inputs"]) == num_test
    for arrays in (train, test):
        q, a = arrays["inputs"].reshape(-1, size, size), arrays["labels"].reshape(-1, size, size)
        for x, y in zip(q, a):
            check_maze(x, y, want_len)
        assert maze_problems(q, a) == [None] * len(q)
    originals = train["inputs"][::8]
    assert len({x.tobytes() for x in originals}) == num_train
    assert len({x.tobytes() for x in test["inputs"]}) == num_test
    # no test maze is a train maze or one of its transforms
    train_keys = {f(x.reshape(size, size)).tobytes() for x in originals for f in TRANSFORMS}
    assert not any(x.tobytes() in train_keys for x in test["inputs"])


def test_generation_is_deterministic(tmp_path):
    kw = dict(size=9, num_train=10, num_test=4)
    a, _ = load(build(str(tmp_path / "a"), seed=3, **kw), "test")
    b, _ = load(build(str(tmp_path / "b"), seed=3, **kw), "test")
    c, _ = load(build(str(tmp_path / "c"), seed=4, **kw), "test")
    assert all(np.array_equal(a[k], b[k]) for k in FIELDS)
    assert not np.array_equal(a["inputs"], c["inputs"])


@pytest.mark.parametrize("kw,needle", [
    (dict(size=6, min_path_len=36), "min_path_len"),
    (dict(size=6, min_path_len=30), "found only 0"),  # possible in principle, never carved
    (dict(size=1), "size"),
    (dict(size=6, loop_prob=1.5), "loop_prob"),
    (dict(source="csv"), "input_dir"),
    (dict(source="web"), "unknown source"),
])
def test_bad_options_are_errors(tmp_path, kw, needle):
    with pytest.raises(ValueError, match=needle):
        build(str(tmp_path / "x"), **{"num_train": 2, "num_test": 1, **kw})
    assert not os.listdir(tmp_path)


# -- the recipe ------------------------------------------------------------------------------------

def test_maze_recipe_trains_on_a_generated_dataset(tmp_path):
    """prepare_maze.py from the command line, then config/maze.py (the paper's recipe) with a
    small model for 3 steps on CPU: it evaluates and writes a checkpoint."""
    data = str(tmp_path / "maze")
    r = subprocess.run([sys.executable, "prepare_maze.py", "--source=generate", "--size=8", "--num_train=32",
                        "--num_test=8", "--aug=True", f"--output_dir={data}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"wrote {data}" in r.stdout, r.stderr
    out = str(tmp_path / "out")
    r = subprocess.run([sys.executable, "train.py", "config/maze.py", f"--data_dir={data}", f"--out_dir={out}",
                        "--hidden_size=32", "--num_heads=2", "--puzzle_emb_ndim=32", "--puzzle_emb_len=2",
                        "--H_cycles=2", "--L_cycles=2", "--halt_max_steps=2", "--global_batch_size=8",
                        "--max_steps=3", "--compile=False"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, TRM_USE_EXT="off"))  # no extension build: a quick test
    assert r.returncode == 0, r.stdout + r.stderr
    assert "eval step 3 [all]" in r.stdout
    ck = checkpoint.load(os.path.join(out, "ckpt.pt"))
    assert ck["step"] == 3 and ck["model_config"]["seq_len"] == 64 and ck["model_config"]["vocab_size"] == 6
    # the recipe's own settings, under the overrides
    assert ck["config"]["lr"] == 1e-4 and ck["config"]["weight_decay"] == 1.0 and ck["config"]["epochs"] == 50000
    assert not ck["model_config"]["mlp_t"] and ck["model_config"]["pos_encodings"] == "rope"
