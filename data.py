"""
Reading and batching puzzle datasets (the on-disk format of REFERENCE.md §1, shared with the
reference implementation, so datasets built by either codebase work with both).

    DIR/{split}/dataset.json                metadata, see Metadata
    DIR/{split}/{set}__inputs.npy           [N_examples, seq_len] tokens (any integer dtype)
    DIR/{split}/{set}__labels.npy           [N_examples, seq_len]
    DIR/{split}/{set}__puzzle_identifiers.npy   [N_puzzles]
    DIR/{split}/{set}__puzzle_indices.npy   [N_puzzles + 1] first example of each puzzle
    DIR/{split}/{set}__group_indices.npy    [N_groups + 1] first puzzle of each group

A group is an original puzzle plus its augmented copies, a puzzle is one variant (with its own
identifier), an example is one input/label pair. Batches are dicts of int32 tensors:
inputs [B, L], labels [B, L] (ignored positions are -100), puzzle_identifiers [B].
"""
import contextlib
import csv
import itertools
import json
import os
import shutil
from dataclasses import dataclass, fields, replace
from typing import Iterator

import numpy as np
import torch

import checkpoint

from ops import IGNORE_INDEX as IGNORE_LABEL_ID  # -100, the label value the loss skips (defined in ops.py)
CSV_HEADER = ["source", "question", "answer", "rating"]  # the hub's Sudoku and Maze files

FIELDS = ("inputs", "labels", "puzzle_identifiers", "puzzle_indices", "group_indices")
# metadata that must be the same in every dataset directory that is read together
AGREE = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id", "sets",
         "num_puzzle_identifiers")


@dataclass
class Metadata:
    pad_id: int                   # input token of padding rows
    ignore_label_id: int | None   # label token that becomes IGNORE_LABEL_ID in batches (None: no such token)
    blank_identifier_id: int      # puzzle identifier of padding rows
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int   # rows of the puzzle embedding table
    total_groups: int
    mean_puzzle_examples: float
    total_puzzles: int            # counted from the arrays when dataset.json lacks it (URM's, HRM's builders)
    sets: list[str]


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _read_metadata(path: str, split: str) -> Metadata:
    file = os.path.join(path, split, "dataset.json")
    if not os.path.isdir(path):
        raise ValueError(f"dataset directory {path} not found")
    if not os.path.isfile(file):
        raise ValueError(f"{file} not found (no '{split}' split in {path}?)")
    try:
        with open(file) as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object")
    values = {}
    for field in fields(Metadata):
        key = field.name
        if key not in raw:
            if key == "total_puzzles":  # URM's and HRM's builders leave it out (REFERENCE.md §8.6, §9.5)
                continue
            raise ValueError(f"{file}: missing key '{key}'")
        v = raw[key]
        if key == "sets":
            ok = isinstance(v, list) and all(isinstance(s, str) for s in v)
        elif key == "mean_puzzle_examples":
            ok = _is_int(v) or isinstance(v, float)
            v = float(v) if ok else v
        elif key == "ignore_label_id":
            ok = v is None or _is_int(v)
        else:
            ok = _is_int(v)
        if not ok:
            raise ValueError(f"{file}: bad value {v!r} for key '{key}'")
        values[key] = v
    if "total_puzzles" not in values:
        values["total_puzzles"] = count_puzzles(path, split, values["sets"])
    return Metadata(**values)  # unknown keys are ignored


def count_puzzles(path: str, split: str, sets: list[str]) -> int:
    """The puzzles in a split's sets, from the length of each puzzle_identifiers array (its
    header only): the total_puzzles of a dataset.json that lacks it."""
    n = 0
    for set_name in sets:
        file = os.path.join(path, split, f"{set_name}__puzzle_identifiers.npy")
        try:
            n += len(np.load(file, mmap_mode="r"))
        except (OSError, ValueError, TypeError) as e:  # missing, unreadable, or not an array with a length
            raise ValueError(f"{file}: cannot count the puzzles (dataset.json has no total_puzzles): {e}") from None
    return n


def load_metadata(paths: str | list[str], split: str) -> Metadata:
    """Metadata of one dataset directory, or of several read together (merged like the reference:
    the format must agree, sizes add up, mean_puzzle_examples is weighted by total_puzzles)."""
    paths = [paths] if isinstance(paths, str) else list(paths)
    if not paths:
        raise ValueError("no dataset directory given")
    metas = [_read_metadata(p, split) for p in paths]
    first = metas[0]
    for path, m in zip(paths[1:], metas[1:]):
        for key in AGREE:
            if getattr(m, key) != getattr(first, key):
                raise ValueError(f"datasets {paths[0]} and {path} ({split}) disagree on '{key}': "
                                 f"{getattr(first, key)!r} vs {getattr(m, key)!r}")
    total_puzzles = sum(m.total_puzzles for m in metas)
    mean = sum(m.mean_puzzle_examples * m.total_puzzles for m in metas)
    # Identifiers add up although every directory keeps its own ids (see PuzzleDataset): the
    # reference sizes its embedding table this way, and checkpoints must keep their shapes.
    return replace(first,
                   num_puzzle_identifiers=sum(m.num_puzzle_identifiers for m in metas),
                   total_groups=sum(m.total_groups for m in metas),
                   total_puzzles=total_puzzles,
                   mean_puzzle_examples=mean / total_puzzles if total_puzzles else first.mean_puzzle_examples)


class PuzzleDataset:
    """One split of one or more dataset directories, cut into batches for this rank.

    iter_train(): one pass of `epochs_per_iter` epochs in a seeded random order (REFERENCE.md §2);
    iter_test(): every example once, in order. Both yield (set_name, batch).
    """

    def __init__(self, paths: str | list[str], split: str, global_batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, epochs_per_iter: int = 1):
        if global_batch_size <= 0 or world_size <= 0 or global_batch_size % world_size:
            raise ValueError(f"global_batch_size {global_batch_size} must be a positive multiple "
                             f"of world_size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        self.split = split
        self.global_batch_size = global_batch_size
        self.local_batch_size = global_batch_size // world_size
        self.rank = rank
        self.seed = seed
        self.epochs_per_iter = epochs_per_iter
        self.metadata = load_metadata(self.paths, split)

        # set name -> arrays. Directory i > 0 has its sets renamed set_name + str(i), as in the
        # reference. Puzzle identifiers are used as stored, not offset per directory, also as in
        # the reference: that keeps reference checkpoints' embedding rows meaningful here.
        self.data = {}
        for set_name in self.metadata.sets:
            for i, path in enumerate(self.paths):
                self.data[set_name + (str(i) if i else "")] = self._load_set(path, set_name)

        # Train iterator position: counter of the latest pass (the reference's iteration
        # counter: +1 per set per call of iter_train), its set, batches yielded in it so far.
        self._pass, self._set, self._batches = 0, 0, 0
        self._resume = False  # True after load_state_dict: the next iter_train finishes that pass
        self.subset = None    # set name -> example indices that iter_test keeps (limit)

    def _load_set(self, path: str, set_name: str) -> dict[str, np.ndarray]:
        files = {name: os.path.join(path, self.split, f"{set_name}__{name}.npy") for name in FIELDS}
        d = {}
        for name, file in files.items():
            if not os.path.isfile(file):
                raise ValueError(f"{file} not found")
            try:
                # inputs and labels can be large: leave them on disk; the indices are small
                d[name] = np.load(file, mmap_mode="r" if name in ("inputs", "labels") else None)
            except (ValueError, OSError) as e:
                raise ValueError(f"{file}: cannot read ({e})") from None
            if not np.issubdtype(d[name].dtype, np.integer):
                raise ValueError(f"{file}: dtype {d[name].dtype} is not an integer type")

        def check(name, ok, msg):
            if not ok:
                raise ValueError(f"{files[name]}: {msg}")

        n, L = len(d["inputs"]), self.metadata.seq_len
        check("inputs", d["inputs"].ndim == 2 and d["inputs"].shape[1] == L,
              f"shape {d['inputs'].shape}, expected [N, seq_len={L}]")
        check("labels", d["labels"].shape == d["inputs"].shape,
              f"shape {d['labels'].shape} differs from inputs {d['inputs'].shape}")
        for name, count, what in (("puzzle_indices", n, "examples"),
                                  ("group_indices", len(d["puzzle_indices"]) - 1, "puzzles")):
            idx = d[name]
            check(name, idx.ndim == 1 and len(idx) >= 1 and idx[0] == 0 and np.all(np.diff(idx) >= 0),
                  "must be a non-decreasing 1-d array starting at 0")
            check(name, idx[-1] == count, f"last value {idx[-1]} != number of {what} {count}")
            if name == "puzzle_indices":
                check("puzzle_identifiers", d["puzzle_identifiers"].shape == (len(idx) - 1,),
                      f"shape {d['puzzle_identifiers'].shape}, expected one identifier for each of "
                      f"the {len(idx) - 1} puzzles")
        return d

    def _collate(self, inputs, labels, ids) -> dict[str, torch.Tensor]:
        """Rows of one rank ([b, L], [b, L], [b], b <= local batch) -> padded int32 tensors."""
        m = self.metadata
        batch = {"inputs": np.array(inputs, dtype=np.int32),  # np.array copies: never write to the mmap
                 "labels": np.array(labels, dtype=np.int32),
                 "puzzle_identifiers": np.array(ids, dtype=np.int32)}
        if m.ignore_label_id is not None:
            batch["labels"][batch["labels"] == m.ignore_label_id] = IGNORE_LABEL_ID
        pad = self.local_batch_size - len(ids)
        if pad > 0:
            fill = {"inputs": m.pad_id, "labels": IGNORE_LABEL_ID, "puzzle_identifiers": m.blank_identifier_id}
            batch = {k: np.concatenate([v, np.full((pad,) + v.shape[1:], fill[k], np.int32)])
                     for k, v in batch.items()}
        return {k: torch.from_numpy(v) for k, v in batch.items()}

    def iter_test(self) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        """Every example once (of the subset, after limit()), in order: (set name, batch) for
        global batches of consecutive examples, this rank's slice of each, padded."""
        G, B = self.global_batch_size, self.local_batch_size
        for name, d in self.data.items():
            examples = self.subset.get(name) if self.subset is not None else None
            n = len(d["inputs"]) if examples is None else len(examples)
            for start in range(0, n, G):
                end = min(start + G, n)
                lo, hi = min(start + self.rank * B, end), min(start + (self.rank + 1) * B, end)
                rows = np.arange(lo, hi) if examples is None else examples[lo:hi]
                # puzzle of example i: the last puzzle starting at or before i
                puzzles = np.searchsorted(d["puzzle_indices"], rows, side="right") - 1
                batch = self._collate(d["inputs"][rows], d["labels"][rows], d["puzzle_identifiers"][puzzles])
                yield name, batch

    def num_examples(self) -> int:
        """Examples iter_test yields (the subset's, after limit())."""
        if self.subset is not None:
            return sum(len(v) for v in self.subset.values())
        return sum(len(d["inputs"]) for d in self.data.values())

    def limit(self, max_examples: int, seed: int = 0) -> int:
        """Keep for iter_test a fixed subset of about max_examples examples: whole groups (an ARC
        task with all its variants; a Sudoku or maze puzzle), drawn in a seeded random order
        across the sets until the next group would exceed the budget (at least one group).
        Returns the number of examples kept."""
        rng = np.random.default_rng(seed)
        self.subset, budget = {}, max_examples
        for name, d in self.data.items():
            groups, puzzles = d["group_indices"], d["puzzle_indices"]
            first, last = puzzles[groups[:-1]], puzzles[groups[1:]]  # example range of each group
            keep = []
            for g in rng.permutation(len(first)):
                size = int(last[g] - first[g])
                if size > budget and (keep or any(len(v) for v in self.subset.values())):
                    break
                keep.append(g)
                budget -= size
            self.subset[name] = (np.concatenate([np.arange(first[g], last[g]) for g in sorted(keep)])
                                 if keep else np.zeros(0, np.int64))
        return self.num_examples()

    def _plan(self, d: dict[str, np.ndarray], counter: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The full global batches of one pass over a set: (example rows [G], their puzzles [G]).
        Reads only the index arrays, so skipping batches (resume) costs no data loading."""
        G = self.global_batch_size
        puzzle_start, group_start = d["puzzle_indices"], d["group_indices"]
        rng = np.random.Generator(np.random.Philox(seed=self.seed + counter))
        num_groups = len(group_start) - 1
        order = np.concatenate([rng.permutation(num_groups) for _ in range(self.epochs_per_iter)])
        pos = 0
        while True:
            rows, puzzles, size = [], [], 0
            while pos < len(order) and size < G:
                g = order[pos]
                pos += 1
                # one random puzzle of the group, then up to the room left of its examples, kept
                # together so that a batch holds a puzzle's demonstrations side by side
                p = rng.integers(group_start[g], group_start[g + 1])
                first, count = puzzle_start[p], int(puzzle_start[p + 1] - puzzle_start[p])
                k = min(count, G - size)
                # the reference draws these with the unseeded global numpy RNG; the pass's own
                # generator keeps the order reproducible (and the resume exact)
                rows.append(first + rng.choice(count, k, replace=False))
                puzzles.append(np.full(k, p))
                size += k
            if size < G:  # the last, incomplete batch is dropped
                return
            yield np.concatenate(rows), np.concatenate(puzzles)

    def iter_train(self) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        """One pass (epochs_per_iter epochs) over each set, as (set name, batch).
        After load_state_dict this finishes the interrupted pass instead, from where it stopped."""
        names = list(self.data)
        lo, hi = self.rank * self.local_batch_size, (self.rank + 1) * self.local_batch_size
        for s in range(self._set if self._resume else 0, len(names)):
            if self._resume:  # same counter, skip what was yielded before the checkpoint
                self._resume = False
            else:
                self._pass += 1
                self._batches = 0
            self._set = s
            d = self.data[names[s]]
            for rows, puzzles in itertools.islice(self._plan(d, self._pass), self._batches, None):
                self._batches += 1
                rows, puzzles = rows[lo:hi], puzzles[lo:hi]
                batch = self._collate(d["inputs"][rows], d["labels"][rows], d["puzzle_identifiers"][puzzles])
                yield names[s], batch

    def state_dict(self) -> dict:
        """Position of the train iterator, counting the batch just yielded as consumed."""
        return {"pass": self._pass, "set": self._set, "batches": self._batches}

    def load_state_dict(self, state: dict):
        if not (0 <= state["set"] < len(self.data)) or state["pass"] < 0 or state["batches"] < 0:
            raise ValueError(f"bad data iterator state {state}")
        self._pass, self._set, self._batches = state["pass"], state["set"], state["batches"]
        self._resume = self._pass > 0  # pass 0: no pass started yet, nothing to finish


# Dihedral transforms of a 2-d grid (REFERENCE.md §5): identity, rot90, rot180, rot270 (numpy's
# counter-clockwise rot90), flip left-right, flip up-down, transpose, anti-transpose.
DIHEDRAL_INVERSE = [0, 3, 2, 1, 4, 5, 6, 7]


def dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    if 0 <= tid < 4:
        return np.rot90(grid, tid)
    if tid == 4:
        return np.fliplr(grid)
    if tid == 5:
        return np.flipud(grid)
    if tid == 6:
        return grid.T
    if tid == 7:
        return np.fliplr(np.rot90(grid))
    raise ValueError(f"dihedral transform id {tid} not in 0..7")


def inverse_dihedral(grid: np.ndarray, tid: int) -> np.ndarray:
    return dihedral(grid, DIHEDRAL_INVERSE[tid])


def read_identifiers(data_dir: str) -> list[str] | None:
    """The puzzle names of a dataset, by identifier (DIR/identifiers.json), or None without it."""
    path = os.path.join(data_dir, "identifiers.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)



# -----------------------------------------------------------------------------
# writing datasets (the prepare_*.py builders)

@contextlib.contextmanager
def building(output_dir: str, by: str, **settings):
    """Build a dataset directory safely: yields a fresh temporary directory next to output_dir,
    which replaces output_dir only when the block finishes. If the block raises (bad input, a full
    disk, Ctrl-C), the temporary directory is removed and an existing output_dir is untouched.
    Only a dataset this project built (its marker file, checkpoint.MARKER, written here with `by`
    and the settings) or an empty folder is ever replaced: anything else is a ValueError before
    the block runs. Builders call check_output_dir first too, so that they fail before working."""
    output_dir = os.path.normpath(output_dir)
    check_output_dir(output_dir)
    tmp, old = f"{output_dir}.tmp-{os.getpid()}", f"{output_dir}.old-{os.getpid()}"
    for leftover in (tmp, old):  # from an earlier run that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        os.makedirs(tmp)
        yield tmp
        checkpoint.mark_folder(tmp, "dataset", by, settings=settings)
        check_output_dir(output_dir)  # still ours (or gone) after the build
        if os.path.exists(output_dir):
            os.rename(output_dir, old)
        os.rename(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.exists(old) and not os.path.exists(output_dir):
            os.rename(old, output_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def check_output_dir(output_dir: str):
    """ValueError unless a builder may replace output_dir (see building)."""
    checkpoint.check_folder(os.path.normpath(output_dir), "dataset", "--output_dir")


def write_split(out_dir: str, split: str, arrays: dict, meta: dict, set_name: str = "all"):
    """Write one split: dataset.json from meta (the Metadata fields) and one .npy per array of
    FIELDS, as the reference lays them out."""
    missing = [k for k in FIELDS if k not in arrays]
    if missing:
        raise ValueError(f"write_split: missing {', '.join(missing)}")
    write_metadata(out_dir, split, meta)
    for name in FIELDS:
        np.save(os.path.join(out_dir, split, f"{set_name}__{name}.npy"), arrays[name])


def write_metadata(out_dir: str, split: str, meta: dict):
    """DIR/split/dataset.json with the Metadata fields, in the reference's order."""
    missing = [f.name for f in fields(Metadata) if f.name not in meta]
    if missing:
        raise ValueError(f"write_metadata: missing {', '.join(missing)}")
    os.makedirs(os.path.join(out_dir, split), exist_ok=True)
    with open(os.path.join(out_dir, split, "dataset.json"), "w") as f:
        json.dump({f.name: meta[f.name] for f in fields(Metadata)}, f)


def read_puzzle_rows(path: str, bad_size=lambda cells: None):
    """The rows of a CSV file in the hub's format (header source,question,answer,rating) as
    (line, question, answer, rating). Checks the header, the column count, and that every
    question and answer has as many characters as the first question, whose length
    bad_size(cells) may reject by returning a reason; a problem raises ValueError naming the file
    and line."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != CSV_HEADER:
            raise ValueError(f"{path}:1: expected header {','.join(CSV_HEADER)}, got {header}")
        cells = None
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if len(row) != 4:
                raise ValueError(f"{where}: expected 4 columns, got {len(row)}")
            _, q, a, rating = row
            if cells is None:  # the first row fixes the grid size
                cells = len(q)
                reason = bad_size(cells)
                if reason:
                    raise ValueError(f"{where}: question of {cells} characters is not {reason}")
            if len(q) != cells or len(a) != cells:
                raise ValueError(f"{where}: question and answer must have {cells} characters, "
                                 f"got {len(q)} and {len(a)}")
            yield reader.line_num, q, a, rating


def csv_files(source: str, source_repo: str, input_dir: str | None) -> list[str]:
    """Paths of train.csv and test.csv: downloaded from the hub dataset source_repo (source 'hub',
    through huggingface_hub's cache) or in input_dir (source 'csv')."""
    if source == "hub":
        from huggingface_hub import hf_hub_download
        return [hf_hub_download(source_repo, f"{s}.csv", repo_type="dataset") for s in ("train", "test")]
    if input_dir is None:
        raise ValueError("source csv needs input_dir")
    return [os.path.join(input_dir, f"{s}.csv") for s in ("train", "test")]
