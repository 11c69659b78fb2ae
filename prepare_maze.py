"""
Build a Maze dataset in the format of REFERENCE.md §1 (the reference's format).

Sources:
  --source=hub       sapientinc/maze-30x30-hard-1k (Maze-Hard) from the Hugging Face hub (train.csv, test.csv)
  --source=csv       DIR/train.csv and DIR/test.csv in the same format (--input_dir=DIR)
  --source=generate  offline: random --size x --size mazes with one shortest path from S to G (below)

CSV format: header source,question,answer,rating; question and answer hold one character per cell,
row by row, from "# SGo" (wall, open, start, goal, path). The question has no 'o'; the answer is the
question with the open cells of a path from S to G marked 'o'. The grid size follows from the
length, n * n for every row of a file.

Tokens: "# SGo" -> 1..5, 0 is padding (vocab 6, seq_len n * n). Each original maze is a group; with
--aug=True (train split only) the group holds its 8 dihedral transforms as 8 puzzles, the original first.
One example per puzzle, every puzzle identifier 0.

With --val_fraction=F a seeded choice of round(F * training mazes) training mazes (each with its
transforms) leaves the train split for a val split, written like the test split (the originals
only), to choose checkpoints without the test answers. Nothing else changes: the train split is the
build's without val, less those mazes.

Generated mazes come from this file's own generator (the hub's is not published): corridors carved
depth first, a few loops knocked through (--loop_prob), S at a random open cell and G at a random
cell that exactly one shortest path from S reaches, at least --min_path_len steps away (default:
110 at 30x30, scaled with the area: hard mazes only).

Options, as --key=value (--help lists each with its value; 0 or '' is unset where that is described):
  --output_dir=DIR         where the dataset goes
  --source_repo=REPO       hub dataset repo (source hub)
  --size=N                 grid size (source generate)
  --num_train=N, --num_test=N   mazes to generate
  --min_path_len=N         fewest steps from S to G of a generated maze (unset: 110 at 30x30, scaled)
  --loop_prob=P            chance that a wall between two corridors of a generated maze is knocked out
  --subsample_size=N       keep this many random train mazes (unset: all)
  --aug=True               the 8 dihedral transforms of each train maze
  --val_fraction=F         share of the train mazes moved to the val split (unset: none)
  --seed=N

Examples:
  python prepare_maze.py --aug=True   # Maze-Hard, 1000 training mazes x 8 (config/maze.py)
  python prepare_maze.py --aug=True --val_fraction=0.1 --output_dir=data/maze-30x30-hard-1k-val
                                      # the same, 900 of the mazes to train and 100 to val
  python prepare_maze.py --source=generate --size=15 --num_train=1000 --num_test=200 --aug=True --output_dir=data/maze-15
"""
import functools
import json
import math
import os
import sys

import numpy as np
from tqdm import tqdm

from configurator import configure
from data import building, check_output_dir, dihedral, csv_files, read_puzzle_rows, write_split

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = range(1, 6)  # token of each character of CHARSET; 0 is padding


# -----------------------------------------------------------------------------
# grids

@functools.cache
def _neighbours(n: int) -> list[list[int]]:
    """The 4-connected neighbours of each cell of an n x n grid, as flat indices."""
    return [[(r + dr) * n + c + dc for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
             if 0 <= r + dr < n and 0 <= c + dc < n]
            for r in range(n) for c in range(n)]


def maze_problems(q: np.ndarray, a: np.ndarray) -> list[str | None]:
    """Token grids q (questions) and a (answers), [N, n, n] -> for each maze, why the answer is not
    its question plus a path from S to G (None where it is). A path: the answer equals the question
    except open cells turned 'o'; the S, 'o' and G cells form one simple 4-connected chain from S to
    G (every 'o' has exactly two neighbours on it, S and G one each, and all are connected)."""
    N, n = q.shape[0], q.shape[1]
    found = [None] * N

    def report(bad, msg):  # msg(i) for the rows that are bad and have no problem yet
        for i in np.flatnonzero(bad):
            found[i] = found[i] or msg(i)

    starts, goals = (q == START).sum((1, 2)), (q == GOAL).sum((1, 2))
    report((q == PATH).any((1, 2)), lambda i: "question must not contain 'o'")
    report((starts != 1) | (goals != 1),
           lambda i: f"need exactly one S and one G, got {starts[i]} S and {goals[i]} G")
    report(((a != q) & ~((q == OPEN) & (a == PATH))).any((1, 2)),
           lambda i: "answer must equal the question except for open cells marked 'o'")

    # path neighbours of every path cell: 2 for an 'o', 1 for S and G
    on = (a == START) | (a == GOAL) | (a == PATH)
    degree = np.zeros(on.shape, np.int8)
    degree[:, 1:] += on[:, :-1]
    degree[:, :-1] += on[:, 1:]
    degree[:, :, 1:] += on[:, :, :-1]
    degree[:, :, :-1] += on[:, :, 1:]
    wrong = on & (degree != np.where(a == PATH, 2, 1))

    def degree_msg(i):
        r, c = np.argwhere(wrong[i])[0]
        return (f"answer's 'o' cells are not a path from S to G: the {CHARSET[a[i, r, c] - 1]!r} at "
                f"row {r + 1}, column {c + 1} has {degree[i, r, c]} path neighbours")
    report(wrong.any((1, 2)), degree_msg)

    # With those degrees the path cells are a chain from S to G plus, possibly, separate loops of
    # 'o': walk the chain and compare its length with the number of path cells.
    nbrs = _neighbours(n)
    for i in range(N):
        if found[i] is None:
            cells = on[i].ravel().tolist()
            prev, cur, length = -1, int(np.argmax(a[i].ravel() == START)), 1
            while True:
                ahead = [j for j in nbrs[cur] if cells[j] and j != prev]
                if not ahead:  # at G
                    break
                prev, cur, length = cur, ahead[0], length + 1
            if length != sum(cells):
                found[i] = "answer's 'o' cells are not a path from S to G: some are apart from it"
    return found


# -----------------------------------------------------------------------------
# reading CSV files

def read_csv(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Questions and answers of a CSV file as uint8 token grids [N, n, n]. Any malformed row raises
    ValueError naming the file and line."""
    texts, lines = [], []  # question + answer of every row, and its line
    square = lambda cells: None if cells and math.isqrt(cells) ** 2 == cells else "a square grid"
    for line, q, a, _ in read_puzzle_rows(path, square):
        odd = set(q + a) - set(CHARSET)
        if odd:
            raise ValueError(f"{path}:{line}: characters {''.join(sorted(odd))!r} are not among {CHARSET!r}")
        texts.append(q + a)
        lines.append(line)
    cells = len(texts[0]) // 2 if texts else 0
    if not lines:
        raise ValueError(f"{path}: no mazes")

    n = math.isqrt(cells)
    to_token = np.zeros(128, np.uint8)
    to_token[[ord(ch) for ch in CHARSET]] = np.arange(1, len(CHARSET) + 1)
    tokens = to_token[np.frombuffer("".join(texts).encode("ascii"), np.uint8)].reshape(len(lines), 2, n, n)
    q, a = tokens[:, 0], tokens[:, 1]
    problems = maze_problems(q, a)
    for line, problem in zip(lines, problems):
        if problem:
            raise ValueError(f"{path}:{line}: {problem}")
    return q, a


# -----------------------------------------------------------------------------
# generating

def default_min_path_len(size: int) -> int:
    """110 steps at 30x30, about the shortest of the hub's Maze-Hard paths, scaled with the area."""
    return max(1, round(110 * (size / 30) ** 2))


def carve(n: int, loop_prob: float, rng) -> np.ndarray:
    """A random maze as an [n, n] bool grid, True = open. Rooms sit on every other row and column,
    joined by one-cell corridors along a spanning tree grown depth first (long winding corridors);
    then each wall left between two neighbouring rooms is knocked out with probability loop_prob,
    making loops, so that the shortest path is not simply the only path. For even n the rooms start
    at row 0 or 1 and column 0 or 1 at random, so the spare wall row and column fall on either side."""
    r0, c0 = rng.integers(2, size=2) if n % 2 == 0 else (0, 0)
    is_open = np.zeros((n, n), bool)
    rooms = [(r, c) for r in range(r0, n, 2) for c in range(c0, n, 2)]
    stack = [rooms[rng.integers(len(rooms))]]
    is_open[stack[0]] = True
    while stack:  # extend the newest corridor into an unvisited room; back up when there is none
        r, c = stack[-1]
        ahead = [(r + dr, c + dc) for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))
                 if 0 <= r + dr < n and 0 <= c + dc < n and not is_open[r + dr, c + dc]]
        if not ahead:
            stack.pop()
            continue
        nr, nc = ahead[rng.integers(len(ahead))]
        is_open[(r + nr) // 2, (c + nc) // 2] = is_open[nr, nc] = True
        stack.append((nr, nc))
    between = np.zeros((n, n), bool)  # the cells between two rooms, across or down
    between[r0::2, c0 + 1:n - 1:2] = True
    between[r0 + 1:n - 1:2, c0::2] = True
    return is_open | (between & (rng.random((n, n)) < loop_prob))


def shortest_paths(is_open: list[bool], n: int, source: int) -> tuple[list[int], list[int]]:
    """Breadth-first search over the open cells of a flat n x n grid: the steps from source to each
    cell (-1 if unreachable) and its number of shortest paths, counted up to 2. A cell's count is the
    sum of the counts of its neighbours one step closer (a sum over the BFS layers)."""
    nbrs = _neighbours(n)
    dist, count = [-1] * (n * n), [0] * (n * n)
    dist[source], count[source] = 0, 1
    queue = [source]
    for cell in queue:  # the list grows while we walk it: a FIFO queue
        d = dist[cell] + 1
        for j in nbrs[cell]:
            if is_open[j]:
                if dist[j] < 0:
                    dist[j], count[j] = d, count[cell]
                    queue.append(j)
                elif dist[j] == d:
                    count[j] = min(2, count[j] + count[cell])
    return dist, count


def make_maze(n: int, min_path_len: int, loop_prob: float, rng) -> tuple[np.ndarray, np.ndarray] | None:
    """One maze (question, answer: [n, n] uint8 tokens) with S at a random open cell and G at a random
    cell that only one shortest path reaches from S, at least min_path_len steps long; None when the
    carved maze has no such cell."""
    is_open = carve(n, loop_prob, rng)
    opens = np.flatnonzero(is_open)
    start = int(opens[rng.integers(len(opens))])
    dist, count = shortest_paths(is_open.ravel().tolist(), n, start)
    dist, count = np.array(dist), np.array(count)
    goals = np.flatnonzero((dist >= min_path_len) & (count == 1))
    if len(goals) == 0:
        return None
    goal = int(goals[rng.integers(len(goals))])
    q = np.where(is_open, OPEN, WALL).astype(np.uint8).ravel()
    q[start], q[goal] = START, GOAL
    a = q.copy()
    # back from G: a cell reached by one shortest path has exactly one neighbour a step closer
    nbrs, cell = _neighbours(n), goal
    while dist[cell] > 1:
        cell = next(j for j in nbrs[cell] if dist[j] == dist[cell] - 1)
        a[cell] = PATH
    return q.reshape(n, n), a.reshape(n, n)


def _canonical(q: np.ndarray) -> bytes:
    """The same key for a maze and each of its 8 dihedral transforms."""
    return min(dihedral(q, t).tobytes() for t in range(8))


def generate(n: int, num_train: int, num_test: int, min_path_len: int, loop_prob: float, rng):
    """Train and test mazes ([N, n, n] uint8 questions and answers; see make_maze). Questions are
    distinct within a split, and no test maze is a train maze or a dihedral transform of one."""
    splits, train_keys = [], set()
    for split, count in (("train", num_train), ("test", num_test)):
        seen, q_all, a_all = set(), [], []
        tries = 0
        with tqdm(total=count, desc=f"generating {split} {n}x{n}") as bar:
            while len(q_all) < count:
                tries += 1
                if tries > 100 * count + 1000:
                    raise ValueError(f"found only {len(q_all)} distinct {n}x{n} {split} mazes with a unique "
                                     f"shortest path of at least {min_path_len} steps in {tries - 1} tries; "
                                     f"lower min_path_len or loop_prob")
                maze = make_maze(n, min_path_len, loop_prob, rng)
                if maze is None or maze[0].tobytes() in seen:
                    continue
                key = _canonical(maze[0])
                if split == "train":
                    train_keys.add(key)
                elif key in train_keys:
                    continue
                seen.add(maze[0].tobytes())
                q_all.append(maze[0])
                a_all.append(maze[1])
                bar.update()
        shape = (count, n, n)
        splits.append((np.array(q_all, np.uint8).reshape(shape), np.array(a_all, np.uint8).reshape(shape)))
    return splits


# -----------------------------------------------------------------------------
# writing

def write_maze_split(out_dir: str, split: str, q: np.ndarray, a: np.ndarray, aug: bool):
    """One split in the REFERENCE.md §1 layout: each maze a group of itself, or of its 8 dihedral
    transforms (transform 0, the identity, first)."""
    N, n = q.shape[0], q.shape[1]
    per_group = 8 if aug else 1
    total = N * per_group  # puzzles = examples: one example per puzzle
    arrays = {
        "inputs": np.array([[dihedral(x, t) for t in range(per_group)] for x in q], np.uint8).reshape(total, n * n),
        "labels": np.array([[dihedral(y, t) for t in range(per_group)] for y in a], np.uint8).reshape(total, n * n),
        "puzzle_identifiers": np.zeros(total, np.int32),
        "puzzle_indices": np.arange(total + 1, dtype=np.int32),
        "group_indices": np.arange(0, total + 1, per_group, dtype=np.int32),
    }
    meta = {
        "pad_id": 0,
        "ignore_label_id": 0,
        "blank_identifier_id": 0,
        "vocab_size": len(CHARSET) + 1,  # padding and the 5 characters
        "seq_len": n * n,
        "num_puzzle_identifiers": 1,
        "total_groups": N,
        "mean_puzzle_examples": 1.0,
        # The reference writes the number of groups here: 8 times too few with --aug=True, the same
        # without. Only data.py's merge of several datasets reads it, to weigh
        # mean_puzzle_examples, which is 1 here anyway.
        "total_puzzles": total,
        "sets": ["all"],
    }
    write_split(out_dir, split, arrays, meta)


def build(output_dir: str, source: str = "generate", input_dir: str | None = None,
          source_repo: str = "sapientinc/maze-30x30-hard-1k", size: int = 30, num_train: int = 1000,
          num_test: int = 1000, min_path_len: int | None = None, loop_prob: float = 0.05,
          subsample_size: int | None = None, aug: bool = False, val_fraction: float = 0.0, seed: int = 0) -> str:
    """Build the dataset into output_dir (replacing it only once the new one is complete) and return
    its path. The options are the command-line flags (see main)."""
    settings = {k: v for k, v in locals().items() if k != "output_dir"}  # recorded in the marker file
    check_output_dir(output_dir)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    if source == "generate":
        if size < 2:
            raise ValueError(f"size must be at least 2, got {size}")
        min_path_len = default_min_path_len(size) if min_path_len is None else min_path_len
        if not 1 <= min_path_len < size * size:
            raise ValueError(f"need 1 <= min_path_len < {size * size}, got {min_path_len}")
        if not 0 <= loop_prob <= 1:
            raise ValueError(f"loop_prob must be in [0, 1], got {loop_prob}")
        (train_q, train_a), (test_q, test_a) = generate(size, num_train, num_test, min_path_len, loop_prob, rng)
    elif source in ("hub", "csv"):
        files = csv_files(source, source_repo, input_dir)
        (train_q, train_a), (test_q, test_a) = [read_csv(f) for f in files]
        if train_q.shape[1:] != test_q.shape[1:]:
            raise ValueError(f"{files[0]} and {files[1]} hold mazes of different sizes")
    else:
        raise ValueError(f"unknown source {source!r} (hub, csv or generate)")

    if subsample_size is not None and subsample_size < len(train_q):
        keep = rng.choice(len(train_q), subsample_size, replace=False)
        train_q, train_a = train_q[keep], train_a[keep]
    val_q = val_a = None
    if val_fraction:
        val = choose_val(len(train_q), val_fraction, seed)
        val_q, val_a = train_q[val], train_a[val]
        train_q, train_a = np.delete(train_q, val, axis=0), np.delete(train_a, val, axis=0)

    # Build next to output_dir, then swap it in: a failed build leaves no half-written dataset and
    # keeps the old one.
    with building(output_dir, "prepare_maze.py", **settings) as tmp:
        write_maze_split(tmp, "train", train_q, train_a, aug)
        write_maze_split(tmp, "test", test_q, test_a, False)
        if val_q is not None:
            write_maze_split(tmp, "val", val_q, val_a, False)
        with open(os.path.join(tmp, "identifiers.json"), "w") as f:
            json.dump(["<blank>"], f)
    return output_dir


def choose_val(n: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of round(fraction * n) of n training mazes, for the val split. Drawn from
    a stream of their own (seeded by seed), so that no other draw of the build changes."""
    k = round(fraction * n)
    if not 0 < k < n:
        raise ValueError(f"val_fraction {fraction} of {n} training mazes is {k} mazes: "
                         f"val and train each need at least one")
    return np.sort(np.random.default_rng([seed, 1]).choice(n, k, replace=False))


def main(argv=None):
    s = dict(source="hub", source_repo="sapientinc/maze-30x30-hard-1k", input_dir="",
             output_dir="data/maze-30x30-hard-1k", size=30, num_train=1000, num_test=1000, min_path_len=0,
             loop_prob=0.05, subsample_size=0, aug=False, val_fraction=0.0, seed=0)
    configure(s, argv, doc=__doc__)
    # typed placeholders on the command line (so --min_path_len=x is an error there), None for build
    s.update({k: s[k] or None for k in ("input_dir", "min_path_len", "subsample_size")})
    try:
        out = build(**s)
    except (ValueError, OSError) as e:
        sys.exit(f"prepare_maze.py: error: {e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
