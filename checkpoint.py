"""
Files on disk: checkpoints written atomically and read safely, and the output folders each
script may write into.

A training checkpoint (train.py, out_dir/ckpt.pt) is one dict: model, ema, optimizers, step,
passes_done, data (the train iterator's position), carry (the ACT carry), rng, config,
model_config, metrics. Saving writes a temporary file beside the target, flushes it to disk and
renames it over the target, so a run killed at any moment leaves the previous complete
checkpoint in place.
"""
import json
import os
import pickle
import re
import time

import torch


def save(obj, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path, map_location="cpu", trust=False):
    """The object in a checkpoint file. It is unpickled with weights_only=True: tensors and plain
    containers only, so a file from anywhere cannot run code while it loads. A file that needs
    more stops the program naming the file; trust=True (train.py's and evaluate.py's
    --trust_checkpoint=True) loads it with full unpickling, for a file whose origin you trust."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as e:
        if not trust and "weights_only" in str(e):
            named = re.search(r"GLOBAL (\S+)", str(e))
            raise SystemExit(f"error: {path} needs more than tensors and plain containers to load"
                             f"{f' (it names {named.group(1)})' if named else ''}, so unpickling it could run code; "
                             f"only for a file you trust: --trust_checkpoint=True")
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: {e})")
    except Exception as e:  # truncated or not a torch file
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: {e})")


# -----------------------------------------------------------------------------
# output folders: every script writes only into a folder that is new, empty, or its own

MARKER = "trm_output.json"  # written into every folder a script of this project fills
KINDS = {"dataset": "a dataset built by prepare_*.py", "run": "a training run of train.py",
         "evaluation": "the results of evaluate.py"}


def folder_kind(path: str):
    """What path holds: '' when it is absent or empty, the kind its marker names, else None (a
    file, or a folder with other things in it)."""
    if not os.path.lexists(path):
        return ""
    if not os.path.isdir(path):
        return None
    try:
        with open(os.path.join(path, MARKER)) as f:
            kind = json.load(f).get("kind")
        return kind if kind in KINDS else None
    except (OSError, ValueError, AttributeError):
        return "" if not os.listdir(path) else None


def check_folder(path: str, kind: str, setting: str) -> None:
    """Raise ValueError, naming path, unless path is new, empty, or holds this project's `kind`."""
    found = folder_kind(path)
    if found in ("", kind):
        return
    what = (f"is not a folder" if not os.path.isdir(path) else
            f"holds other files and no {MARKER}, so this project did not write it" if found is None else
            f"holds {KINDS[found]}, not {KINDS[kind]}")
    raise ValueError(f"{path} {what}; nothing in it was changed. Choose another {setting}, or move its "
                     f"contents away yourself")


def mark_folder(path: str, kind: str, by: str, **info) -> None:
    """Write path/MARKER: the folder holds `kind`, written by script `by` (info: what it was made
    with). Written to a temporary name and renamed."""
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, f"{MARKER}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump({"kind": kind, "by": by, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}, f, indent=1)
    os.replace(tmp, os.path.join(path, MARKER))
