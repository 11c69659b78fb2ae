"""
Checkpoint files: written atomically, read with errors that name the file.

A training checkpoint (train.py, out_dir/ckpt.pt) is one dict: model, ema, optimizers, step,
passes_done, data (the train iterator's position), carry (the ACT carry), rng, config,
model_config, metrics. Saving writes a temporary file beside the target, flushes it to disk and
renames it over the target, so a run killed at any moment leaves the previous complete
checkpoint in place.
"""
import os

import torch

from model import Carry


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


def load(path, map_location="cpu"):
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or not a torch file
        raise SystemExit(f"error: {path} is not a readable checkpoint ({type(e).__name__}: {e})")


def carry_to_state(carry):
    """The ACT carry as a dict of CPU tensors (None before the first step)."""
    if carry is None:
        return None
    return {"z_H": carry.z_H.cpu(), "z_L": carry.z_L.cpu(), "steps": carry.steps.cpu(),
            "halted": carry.halted.cpu(),
            "current_data": {k: v.cpu() for k, v in carry.current_data.items()}}


def carry_from_state(state, device):
    return Carry(z_H=state["z_H"].to(device), z_L=state["z_L"].to(device),
                 steps=state["steps"].to(device), halted=state["halted"].to(device),
                 current_data={k: v.to(device) for k, v in state["current_data"].items()})


def carry_cat(states):
    """The carries of all ranks (carry_to_state dicts, in rank order) as one for the global batch."""
    if any(st is None for st in states):
        return None
    cat = lambda xs: torch.cat(xs, 0)
    return {"z_H": cat([st["z_H"] for st in states]), "z_L": cat([st["z_L"] for st in states]),
            "steps": cat([st["steps"] for st in states]), "halted": cat([st["halted"] for st in states]),
            "current_data": {k: cat([st["current_data"][k] for st in states]) for k in states[0]["current_data"]}}


def carry_rows(state, lo, hi):
    """Rows [lo, hi) of a saved carry: one rank's part of the global batch."""
    return {"z_H": state["z_H"][lo:hi], "z_L": state["z_L"][lo:hi], "steps": state["steps"][lo:hi],
            "halted": state["halted"][lo:hi],
            "current_data": {k: v[lo:hi] for k, v in state["current_data"].items()}}
