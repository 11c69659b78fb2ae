"""
Build a Sudoku dataset in the format of REFERENCE.md §1 (the reference's format).

Sources:
  --source=hub       sapientinc/sudoku-extreme from the Hugging Face hub (train.csv, test.csv)
  --source=csv       DIR/train.csv and DIR/test.csv in the same format (--input_dir=DIR)
  --source=generate  offline: random uniquely solvable 4x4, 6x6 or 9x9 puzzles (--size)

CSV format: header source,question,answer,rating; question and answer hold one character per cell,
row by row, '.' or '0' for a blank. The grid size follows from the length (16, 36 or 81 cells).

Tokens: digit d (0 = blank) -> d + 1, so vocab n + 2 with 0 as padding; seq_len n * n. Each
original puzzle is a group, and its --num_aug augmented copies (train split only) are further
puzzles of that group; one example per puzzle, every puzzle identifier 0.

With --val_fraction=F a seeded choice of round(F * training puzzles) training puzzles, each with all
its augmented copies, leaves the train split for a val split, written like the test split (the
originals only), to choose checkpoints without the test answers. The other draws are those of the
build without val, so the train split is that build's less the chosen groups.

Options, as --key=value (--help lists each with its value; 0 or '' is unset where that is described):
  --output_dir=DIR         where the dataset goes
  --source_repo=REPO       hub dataset repo (source hub)
  --size=N                 grid size 4, 6 or 9 (source generate)
  --num_train=N, --num_test=N   puzzles to generate
  --min_blanks=N           fewest blank cells of a generated puzzle (unset: half the cells)
  --max_blanks=N           most blank cells (unset: min_blanks); each puzzle draws uniformly between
  --subsample_size=N       keep this many random train puzzles (unset: all)
  --min_difficulty=N       keep CSV rows rated at least this (unset: every row)
  --num_aug=N              augmented copies of each train puzzle
  --val_fraction=F         share of the train puzzles moved to the val split (unset: none)
  --seed=N

Examples:
  python prepare_sudoku.py --subsample_size=1000 --num_aug=1000 --output_dir=data/sudoku-extreme-1k-aug-1000
  python prepare_sudoku.py --subsample_size=1000 --num_aug=1000 --val_fraction=0.1 --output_dir=data/sudoku-extreme-1k-val
                                         # the same 1000 puzzles: 900 (augmented) to train, 100 to val
  python prepare_sudoku.py --source=generate --size=6 --num_train=2000 --num_test=500 --min_blanks=18 --num_aug=9 --output_dir=data/sudoku-mini
"""
import functools
import itertools
import json
import math
import os
import sys

import numpy as np
from tqdm import tqdm

from configurator import configure
from data import building, check_output_dir, csv_files, read_puzzle_rows, write_split

BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # grid size -> box (rows, cols)
# The mini Sudoku that `python train.py` prepares when data/sudoku-mini is missing: 6x6 puzzles
# with half the cells blank, 10x augmented; the same as
#   python prepare_sudoku.py --source=generate --size=6 --num_train=2000 --num_test=500 \
#       --min_blanks=18 --num_aug=9 --seed=0 --output_dir=data/sudoku-mini
MINI = dict(source="generate", size=6, num_train=2000, num_test=500, min_blanks=18, num_aug=9, seed=0)


# -----------------------------------------------------------------------------
# checking grids

def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """[N, n, n] digit grids -> [N] bool: every row, column and box holds 1..n exactly once."""
    N, n = grids.shape[0], grids.shape[1]
    br, bc = BOXES[n]
    boxes = grids.reshape(N, n // br, br, n // bc, bc).transpose(0, 1, 3, 2, 4).reshape(N, n, n)
    want = np.arange(1, n + 1)
    return np.all([(np.sort(g, axis=2) == want).all(axis=(1, 2))
                   for g in (grids, grids.transpose(0, 2, 1), boxes)], axis=0)


def validate_solution(grid) -> bool:
    """True if grid ([n, n] or flat [n*n], n in 4, 6, 9) is a solved Sudoku."""
    grid = np.asarray(grid)
    n = math.isqrt(grid.size)
    return n in BOXES and n * n == grid.size and bool(valid_solutions(grid.reshape(1, n, n))[0])


# -----------------------------------------------------------------------------
# reading CSV files

def read_csv(path: str, min_difficulty: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Questions and answers of a CSV file as uint8 digit grids [N, n, n] (0 = blank).
    Any malformed row raises ValueError naming the file and line."""
    chars, lines = bytearray(), []  # question + answer of every row kept, and its line

    def bad_size(cells):
        n = math.isqrt(cells)
        return None if n in BOXES and n * n == cells else "a 4x4, 6x6 or 9x9 grid"

    for line, q, a, rating in read_puzzle_rows(path, bad_size):
        if min_difficulty is not None:
            try:
                if int(rating) < min_difficulty:
                    continue
            except ValueError:
                raise ValueError(f"{path}:{line}: rating {rating!r} is not an integer") from None
        chars += (q + a).encode("ascii", "replace")  # one byte per character: non-ASCII -> '?'
        lines.append(line)
    cells = len(chars) // (2 * len(lines)) if lines else 0
    if not lines:
        raise ValueError(f"{path}: no puzzles" + (" at this difficulty" if min_difficulty is not None else ""))

    # check all rows at once: [N, 2 * cells] characters
    n = math.isqrt(cells)
    chars = np.frombuffer(chars, np.uint8).reshape(len(lines), 2 * cells)
    q, a = chars[:, :cells].copy(), chars[:, cells:] - ord("0")
    q[q == ord(".")] = ord("0")
    q -= ord("0")  # not a digit -> some value above 9
    problems = (
        ((q > n).any(1), f"question must hold digits 1-{n} and '.' or '0' for blanks"),
        (((a < 1) | (a > n)).any(1), f"answer must hold digits 1-{n}"),
        (((q != 0) & (q != a)).any(1), "answer disagrees with a clue of the question"),
    )
    for bad, msg in problems:
        if bad.any():
            raise ValueError(f"{path}:{lines[int(np.argmax(bad))]}: {msg}")
    q, a = q.reshape(-1, n, n), a.reshape(-1, n, n)
    bad = ~valid_solutions(a)
    if bad.any():
        raise ValueError(f"{path}:{lines[int(np.argmax(bad))]}: answer is not a valid Sudoku solution")
    return q, a


# -----------------------------------------------------------------------------
# solving and generating

@functools.cache
def _peers(n: int) -> list[tuple[int, int, int]]:
    """(row, column, box) of each cell of an n x n grid, row by row."""
    br, bc = BOXES[n]
    return [(i // n, i % n, (i // n) // br * (n // bc) + (i % n) // bc) for i in range(n * n)]


def solve(grid: list[int], n: int, limit: int = 2, rng=None) -> tuple[int, list[int] | None]:
    """Count the solutions of a flat grid (0 = blank), stopping at `limit`; also return the first
    solution found (None if none). Depth-first, always on the blank cell with fewest candidates;
    digits are bits of per-row/column/box masks. rng tries the candidates in random order."""
    g = [int(v) for v in grid]
    where = _peers(n)
    rows, cols, boxes = [0] * n, [0] * n, [0] * n
    for i, v in enumerate(g):
        if v:
            r, c, b = where[i]
            bit = 1 << v
            if (rows[r] | cols[c] | boxes[b]) & bit:
                return 0, None  # the clues already clash
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
    blanks = [i for i, v in enumerate(g) if v == 0]
    every = ((1 << n) - 1) << 1  # bits 1..n
    first = None

    def search() -> int:
        nonlocal first
        best, best_mask, best_count = -1, 0, n + 1
        for i in blanks:
            if g[i] == 0:
                r, c, b = where[i]
                mask = every & ~(rows[r] | cols[c] | boxes[b])
                count = mask.bit_count()
                if count < best_count:
                    best, best_mask, best_count = i, mask, count
                    if count <= 1:
                        break
        if best < 0:  # no blank left: a solution
            if first is None:
                first = list(g)
            return 1
        digits = [d for d in range(1, n + 1) if best_mask >> d & 1]
        if rng is not None:
            rng.shuffle(digits)
        r, c, b = where[best]
        found = 0
        for d in digits:
            bit = 1 << d
            g[best] = d
            rows[r] |= bit
            cols[c] |= bit
            boxes[b] |= bit
            found += search()
            g[best] = 0
            rows[r] ^= bit
            cols[c] ^= bit
            boxes[b] ^= bit
            if found >= limit:
                break
        return found

    return search(), first


@functools.cache
def _neighbours(n: int) -> list[list[int]]:
    """The cells sharing a row, column or box with each cell."""
    where = _peers(n)
    return [[j for j in range(n * n) if j != i and any(a == b for a, b in zip(where[i], where[j]))]
            for i in range(n * n)]


def make_puzzle(n: int, blanks: int, rng, tries: int = 100) -> tuple[list[int], list[int]]:
    """A random puzzle with exactly `blanks` blank cells and a unique solution: (question, solution),
    flat. A random full grid, then cells blanked in random order whenever the solution stays unique;
    a new grid when that stops short of the target."""
    neighbours = _neighbours(n)
    every = ((1 << n) - 1) << 1
    for _ in range(tries):
        _, full = solve([0] * (n * n), n, limit=1, rng=rng)
        q, removed = list(full), 0
        for i in rng.permutation(n * n):
            v, q[i] = q[i], 0
            # quick case: the other clues still force this cell's digit, so nothing changes
            seen = 0
            for j in neighbours[i]:
                seen |= 1 << q[j]
            if (every & ~seen).bit_count() == 1 or solve(q, n, limit=2)[0] == 1:
                removed += 1
                if removed == blanks:
                    return q, full
            else:
                q[i] = v
    raise ValueError(f"could not blank {blanks} cells of a {n}x{n} Sudoku with a unique solution "
                     f"in {tries} tries; ask for fewer blanks")


def _symmetries(n: int) -> np.ndarray:
    """Every cell permutation made of the Sudoku augmentations (bands, rows in a band, stacks,
    columns in a stack, transpose when boxes are square) as [M, n*n] source cells, the identity
    first; only the identity when there are too many (9x9: 3.4 million)."""
    br, bc = BOXES[n]

    def line_orders(size, blocks):  # all orders of n lines moving blocks of `size` lines, and lines within
        return [[b * size + k for b, within in zip(block_order, inner) for k in within]
                for block_order in itertools.permutations(range(blocks))
                for inner in itertools.product(list(itertools.permutations(range(size))), repeat=blocks)]

    row_orders, col_orders = line_orders(br, n // br), line_orders(bc, n // bc)
    flips = (False, True) if br == bc else (False,)
    if len(row_orders) * len(col_orders) * len(flips) > 10_000:
        return np.arange(n * n)[None]
    return np.array([[(c * n + r) if t else (r * n + c) for r in rows for c in cols]
                     for t in flips for rows in row_orders for cols in col_orders])


def relabelled(q: np.ndarray, maps: np.ndarray) -> list[bytes]:
    """A flat puzzle q [n*n] under each cell permutation of maps [M, n*n] (see _symmetries), its
    digits renamed in order of first appearance: two puzzles are augmentations of each other
    exactly when one's identity entry is among the other's entries."""
    n, M = math.isqrt(q.size), len(maps)
    x = q[maps]  # [M, n*n]
    m = np.arange(M)[:, None]
    # first position of each digit in each permuted grid: assigned back to front, the earliest wins
    first = np.full((M, n + 1), n * n)
    first[m, x[:, ::-1]] = np.arange(n * n)[::-1]
    first[:, 0] = -1  # the blank keeps the smallest name
    # new names from 1 (not 0: numpy's byte strings below would drop trailing zero bytes)
    rename = (np.argsort(np.argsort(first, axis=1, kind="stable"), axis=1) + 1).astype(np.uint8)
    y = np.ascontiguousarray(rename[m, x])  # [M, n*n]
    return y.view(f"S{n * n}").ravel().tolist()


def generate(n: int, num_train: int, num_test: int, min_blanks: int, max_blanks: int, rng):
    """Train and test puzzles ([N, n, n] uint8 questions and solutions), each with a unique
    solution and a number of blanks drawn uniformly from [min_blanks, max_blanks]. Questions are
    distinct within a split, and no test puzzle is a train puzzle or any augmentation of one (for
    9x9, whose cell permutations are too many to list, only digit renamings are excluded)."""
    maps = _symmetries(n)
    splits, train_keys = [], set()
    for split, count in (("train", num_train), ("test", num_test)):
        seen, q_all, a_all = set(), [], []
        tries = 0
        with tqdm(total=count, desc=f"generating {split} {n}x{n}") as bar:
            while len(q_all) < count:
                tries += 1
                if tries > 10 * count + 1000:
                    raise ValueError(f"found only {len(q_all)} distinct {n}x{n} {split} puzzles with "
                                     f"{min_blanks}-{max_blanks} blanks in {tries - 1} tries; ask for fewer")
                q, a = make_puzzle(n, int(rng.integers(min_blanks, max_blanks + 1)), rng)
                q = np.array(q, np.uint8)
                if q.tobytes() in seen:
                    continue
                if split == "train":
                    train_keys.add(relabelled(q, maps[:1])[0])  # maps[0] is the identity
                elif any(k in train_keys for k in relabelled(q, maps)):
                    continue
                seen.add(q.tobytes())
                q_all.append(q)
                a_all.append(np.array(a, np.uint8))
                bar.update()
        shape = (count, n, n)
        splits.append((np.array(q_all, np.uint8).reshape(shape), np.array(a_all, np.uint8).reshape(shape)))
    return splits


# -----------------------------------------------------------------------------
# augmentation

def augment(q: np.ndarray, a: np.ndarray, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """`count` random Sudoku-preserving variants of one puzzle q and its solution a ([n, n]):
    digits permuted, bands and the rows inside each band permuted, likewise stacks and columns,
    and a transpose with probability 1/2 when boxes are square. Returns two [count, n, n]."""
    n = q.shape[0]
    br, bc = BOXES[n]

    def line_order(per_block, blocks):  # [count, n]: new line i <- old line order[i]
        order = rng.permuted(np.tile(np.arange(blocks), (count, 1)), axis=1)
        within = rng.permuted(np.tile(np.arange(per_block), (count, blocks, 1)), axis=2)
        return (order[:, :, None] * per_block + within).reshape(count, n)

    digit_map = np.zeros((count, n + 1), np.uint8)  # 0 (blank) stays 0
    digit_map[:, 1:] = rng.permuted(np.tile(np.arange(1, n + 1, dtype=np.uint8), (count, 1)), axis=1)
    flip = rng.random(count) < 0.5 if br == bc else np.zeros(count, bool)
    rows, cols = line_order(br, n // br), line_order(bc, n // bc)
    r, c = rows[:, :, None], cols[:, None, :]  # new cell (i, j) <- old (rows[i], cols[j]) of the
    src = np.where(flip[:, None, None], c * n + r, r * n + c).reshape(count, n * n)  # (transposed) grid

    def apply(x):
        moved = x.reshape(-1)[src]  # [count, n*n]
        return np.take_along_axis(digit_map, moved.astype(np.int64), axis=1).reshape(count, n, n)

    return apply(q), apply(a)


# -----------------------------------------------------------------------------
# writing

def write_sudoku_split(out_dir: str, split: str, q: np.ndarray, a: np.ndarray, num_aug: int, rng,
                       drop: np.ndarray | None = None):
    """One split in the REFERENCE.md §1 layout: each puzzle a group of itself and num_aug variants.
    drop: puzzles left out once every puzzle is augmented (so that the others' draws do not change)."""
    N, n = q.shape[0], q.shape[1]
    per_group = 1 + num_aug
    inputs = np.zeros((N, per_group, n, n), np.uint8)
    labels = np.zeros((N, per_group, n, n), np.uint8)
    inputs[:, 0], labels[:, 0] = q, a
    if num_aug:
        for i in tqdm(range(N), desc=f"augmenting {split}"):
            inputs[i, 1:], labels[i, 1:] = augment(q[i], a[i], num_aug, rng)
    if drop is not None:
        inputs, labels = np.delete(inputs, drop, axis=0), np.delete(labels, drop, axis=0)
        N = len(inputs)
    total = N * per_group  # puzzles = examples: one example per puzzle
    arrays = {
        "inputs": inputs.reshape(total, n * n) + 1,  # token = digit + 1; 0 is padding
        "labels": labels.reshape(total, n * n) + 1,
        "puzzle_identifiers": np.zeros(total, np.int32),
        "puzzle_indices": np.arange(total + 1, dtype=np.int32),
        "group_indices": np.arange(0, total + 1, per_group, dtype=np.int32),
    }
    meta = {
        "pad_id": 0,
        "ignore_label_id": 0,
        "blank_identifier_id": 0,
        "vocab_size": n + 2,  # padding, blank, digits 1..n
        "seq_len": n * n,
        "num_puzzle_identifiers": 1,
        "total_groups": N,
        "mean_puzzle_examples": 1.0,
        "total_puzzles": total,  # the reference writes the number of groups here; nothing reads it for Sudoku
        "sets": ["all"],
    }
    write_split(out_dir, split, arrays, meta)


def build(output_dir: str, source: str = "generate", input_dir: str | None = None,
          source_repo: str = "sapientinc/sudoku-extreme", size: int = 9, num_train: int = 1000,
          num_test: int = 100, min_blanks: int | None = None, max_blanks: int | None = None,
          subsample_size: int | None = None, min_difficulty: int | None = None, num_aug: int = 0,
          val_fraction: float = 0.0, seed: int = 0) -> str:
    """Build the dataset into output_dir (replacing it only once the new one is complete) and return
    its path. The options are the command-line flags (see main)."""
    settings = {k: v for k, v in locals().items() if k != "output_dir"}  # recorded in the marker file
    check_output_dir(output_dir)
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    if source == "generate":
        if size not in BOXES:
            raise ValueError(f"size must be one of {sorted(BOXES)}, got {size}")
        if min_difficulty is not None:
            raise ValueError("min_difficulty needs rated puzzles (source hub or csv)")
        lo = size * size // 2 if min_blanks is None else min_blanks
        hi = lo if max_blanks is None else max_blanks
        if not 1 <= lo <= hi <= size * size:
            raise ValueError(f"need 1 <= min_blanks <= max_blanks <= {size * size}, got {lo}, {hi}")
        (train_q, train_a), (test_q, test_a) = generate(size, num_train, num_test, lo, hi, rng)
    elif source in ("hub", "csv"):
        files = csv_files(source, source_repo, input_dir)
        (train_q, train_a), (test_q, test_a) = [read_csv(f, min_difficulty) for f in files]
        if train_q.shape[1:] != test_q.shape[1:]:
            raise ValueError(f"{files[0]} and {files[1]} hold grids of different sizes")
    else:
        raise ValueError(f"unknown source {source!r} (hub, csv or generate)")

    if subsample_size is not None and subsample_size < len(train_q):
        keep = rng.choice(len(train_q), subsample_size, replace=False)
        train_q, train_a = train_q[keep], train_a[keep]
    val = choose_val(len(train_q), val_fraction, seed) if val_fraction else None

    # Build next to output_dir, then swap it in: a failed build leaves no half-written dataset and
    # keeps the old one.
    with building(output_dir, "prepare_sudoku.py", **settings) as tmp:
        write_sudoku_split(tmp, "train", train_q, train_a, num_aug, rng, drop=val)
        write_sudoku_split(tmp, "test", test_q, test_a, 0, rng)
        if val is not None:
            write_sudoku_split(tmp, "val", train_q[val], train_a[val], 0, rng)
        with open(os.path.join(tmp, "identifiers.json"), "w") as f:
            json.dump(["<blank>"], f)
    return output_dir


def choose_val(n: int, fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of round(fraction * n) of n training puzzles, for the val split. Drawn
    from a stream of their own (seeded by seed), so that no other draw of the build changes."""
    k = round(fraction * n)
    if not 0 < k < n:
        raise ValueError(f"val_fraction {fraction} of {n} training puzzles is {k} puzzles: "
                         f"val and train each need at least one")
    return np.sort(np.random.default_rng([seed, 1]).choice(n, k, replace=False))


def main(argv=None):
    s = dict(source="hub", source_repo="sapientinc/sudoku-extreme", input_dir="",
             output_dir="data/sudoku-extreme-full", size=9, num_train=1000, num_test=100, min_blanks=0,
             max_blanks=0, subsample_size=0, min_difficulty=0, num_aug=0, val_fraction=0.0, seed=0)
    configure(s, argv, doc=__doc__)
    # typed placeholders on the command line (so --min_blanks=x is an error there), None for build
    unset = ("input_dir", "min_blanks", "max_blanks", "subsample_size", "min_difficulty")
    s.update({k: s[k] or None for k in unset})
    try:
        out = build(**s)
    except (ValueError, OSError) as e:
        sys.exit(f"prepare_sudoku.py: error: {e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
