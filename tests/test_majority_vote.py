# ARCEvaluator's maj@K, URM's "majority vote" (REFERENCE.md §8.5): K votes drawn with replacement
# in proportion to sigmoid(q_halt), the most confident one drawn is the answer. Hand-made votes
# whose outcome is certain, and random votes against the exact expectation and against a
# transcription of the definition as URM runs it (numpy's legacy generator, log-sigmoid weights).
import json

import numpy as np
import pytest
import torch

from evaluate import ARCEvaluator

RIGHT, WRONG, OTHER = [[1, 2]], [[3]], [[4, 4]]
CANDIDATES = [RIGHT, WRONG, OTHER]


def canvas(grid):
    out = np.zeros((30, 30), np.int64)
    g = np.array(grid)
    out[:g.shape[0], :g.shape[1]] = g + 2
    return out.ravel()


def evaluator(tmp_path, inputs_per_task, **kw):
    """Tasks t0, t1, ...: task i has inputs_per_task[i] test inputs [[j]], each answered RIGHT.
    Every task's votes come from its one puzzle name, 'ti'."""
    tasks = {f"t{i}": {"train": [], "test": [{"input": [[j]], "output": RIGHT} for j in range(n)]}
             for i, n in enumerate(inputs_per_task)}
    with open(tmp_path / "identifiers.json", "w") as f:
        json.dump(["<blank>"] + list(tasks), f)
    with open(tmp_path / "test_puzzles.json", "w") as f:
        json.dump(tasks, f)
    return ARCEvaluator(str(tmp_path), **kw)


def vote(ev, task, j, votes):
    """votes: [(predicted grid, q_halt logit)] for test input j of task ('t0', ...)."""
    if not votes:
        return
    pid = ev.names.index(task)
    ev.update(torch.tensor(np.array([canvas([[j]])] * len(votes))), torch.full((len(votes),), pid),
              torch.tensor(np.array([canvas(g) for g, _ in votes])), torch.tensor([float(q) for _, q in votes]))


KS = (1, 10, 10000)


def test_one_candidate(tmp_path):
    ev = evaluator(tmp_path, [1, 1], maj_ks=KS)
    vote(ev, "t0", 0, [(RIGHT, q) for q in (-3, 0, 4)])
    vote(ev, "t1", 0, [(WRONG, q) for q in (-3, 0, 4)])
    m = ev.result()["metrics"]
    assert [m[f"maj@{k}"] for k in KS] == [0.5] * 3


def test_the_q_mass_decides_not_the_count(tmp_path):
    """sigmoid(-1000) is 0: such votes are never drawn, however many there are."""
    ev = evaluator(tmp_path, [1, 1], maj_ks=KS, pass_ks=(1,))
    vote(ev, "t0", 0, [(RIGHT, 2.0)] + [(WRONG, -1000.0)] * 20)   # a lone right vote holds all the mass
    vote(ev, "t1", 0, [(WRONG, -5.0)] + [(RIGHT, -1000.0)] * 20)  # the majority is right but weightless
    m = ev.result()["metrics"]
    assert m["pass@1"] == 0.5  # by votes: t1 right, t0 wrong
    assert ev.majority(KS) == {"t0": pytest.approx([1.0] * 3), "t1": pytest.approx([0.0] * 3)}


def test_k_beyond_the_votes_and_the_best_drawn(tmp_path):
    """Three votes, K up to 10000 (draws repeat): the most confident vote is drawn almost surely
    and wins, although two of three votes are wrong; with K = 1 it wins 1 time in 2.1."""
    ev = evaluator(tmp_path, [1], maj_ks=KS)
    vote(ev, "t0", 0, [(WRONG, 0.0), (RIGHT, 3.0), (WRONG, 0.0)])
    assert ev.majority((10000,))["t0"][0] == 1.0
    s = 1 / (1 + np.exp(-3.0))
    runs = np.mean([ev.majority((1,), seed)["t0"][0] for seed in range(400)])
    assert runs == pytest.approx(s / (s + 1.0), abs=0.08)


def test_draws_repeat(tmp_path):
    """With replacement: of two votes, K = 2 draws, the less confident (right) one wins only when
    drawn twice, chance (0.5 / (0.5 + s))^2 for s = sigmoid(4); without replacement, never."""
    ev = evaluator(tmp_path, [1], maj_ks=(2,))
    vote(ev, "t0", 0, [(RIGHT, 0.0), (WRONG, 4.0)])
    s = 1 / (1 + np.exp(-4.0))
    runs = np.mean([ev.majority((2,), seed)["t0"][0] for seed in range(400)])
    assert runs == pytest.approx((0.5 / (0.5 + s)) ** 2, abs=0.05) and runs > 0


def test_no_votes_and_task_scoring(tmp_path):
    ev = evaluator(tmp_path, [2, 1], maj_ks=(10,))
    vote(ev, "t0", 0, [(RIGHT, 1.0)])  # t0's second input and t1 have no votes: 0
    assert ev.result()["metrics"]["maj@10"] == pytest.approx((0.5 + 0) / 2)
    ev.scoring = "all_or_nothing"
    assert ev.result()["metrics"]["maj@10"] == 0.0
    assert evaluator(tmp_path, [1], maj_ks=(10,)).result()["metrics"]["maj@10"] == 0.0
    with pytest.raises(ValueError, match="maj_ks"):
        evaluator(tmp_path, [1], maj_ks=(0,))


def random_votes(ev, rng, inputs_per_task):
    """Random votes, {(task, j): [(candidate index, logit)]} (candidate 0 is right): 2 to 10 votes
    with logits from a few values, mostly wrong, and one or two more confident ones (logit 4,
    right with chance 0.6, so that they may tie): the answer depends strongly on K."""
    all_votes = {}
    for i, n in enumerate(inputs_per_task):
        for j in range(n):
            votes = [(int(rng.choice(3, p=[0.2, 0.4, 0.4])), float(rng.choice([-3.0, -1.0, 0.0, 1.0])))
                     for _ in range(rng.integers(2, 11))]
            votes += [(0 if rng.random() < 0.6 else int(rng.integers(1, 3)), 4.0) for _ in range(rng.integers(1, 3))]
            votes = [votes[v] for v in rng.permutation(len(votes))]
            vote(ev, f"t{i}", j, [(CANDIDATES[c], q) for c, q in votes])
            all_votes[(f"t{i}", j)] = votes
    return all_votes


def chance_right(votes, k):
    """Exact P(maj@k is right) for votes [(candidate, logit)], candidate 0 right. The best drawn
    vote lies at confidence level l (highest first) with chance (1 - above)^k - (1 - above - at)^k,
    the weights summed over the votes above l and at l; votes at one level weigh the same, so
    each of them is equally likely to be the first drawn."""
    logit = np.array([q for _, q in votes])
    w = torch.tensor(logit).double().sigmoid().numpy()  # as the evaluator computes it
    w = w / w.sum()
    p = 0.0
    for level in sorted(set(w), reverse=True):
        above, at = w[w > level].sum(), w[w == level].sum()
        reach = (1 - above) ** k - max(1 - above - at, 0.0) ** k
        p += reach * np.mean([c == 0 for (c, _), wi in zip(votes, w) if wi == level])
    return p


def urm_maj(votes, k, gen):
    """URM's procedure on one test input: weights from log-sigmoid, normalised after subtracting
    the largest; k draws with replacement from numpy's legacy generator; the drawn vote with the
    largest log-sigmoid, the first drawn of equal ones. Returns whether it is right."""
    logp = -np.logaddexp(0.0, -np.array([q for _, q in votes], np.float64))
    prob = np.exp(logp - logp.max())
    prob /= prob.sum()
    drawn = gen.choice(len(votes), size=k, replace=True, p=prob)
    return votes[drawn[np.argmax(logp[drawn])]][0] == 0


@pytest.mark.parametrize("scoring", ["per_input", "all_or_nothing"])
def test_matches_the_definition_on_random_votes(tmp_path, scoring):
    """Over seeds, the mean of maj@K and of URM's procedure are within 4 standard errors of the
    exact expectation (the standard error from the exact chances too)."""
    inputs_per_task = [1, 2, 1, 3, 1, 2, 1, 1, 2, 1, 1, 1]
    ks = (1, 3, 10, 100)
    ev = evaluator(tmp_path, inputs_per_task, maj_ks=ks, scoring=scoring)
    votes = random_votes(ev, np.random.default_rng(1), inputs_per_task)
    seeds, tasks = 200, range(len(inputs_per_task))
    combine = np.mean if scoring == "per_input" else np.all
    for k in ks:
        chance = [[chance_right(votes[(f"t{i}", j)], k) for j in range(n)] for i, n in enumerate(inputs_per_task)]
        if scoring == "per_input":  # a task: the mean of independent draws per input
            mean = [np.mean(c) for c in chance]
            var = [np.sum(np.multiply(c, 1 - np.array(c))) / len(c) ** 2 for c in chance]
        else:  # a task: 1 when all its inputs are right
            mean = [np.prod(c) for c in chance]
            var = [m * (1 - m) for m in mean]
        exact, tol = np.mean(mean), 4 * np.sqrt(np.sum(var) / len(mean) ** 2 / seeds)
        ours = np.mean([np.mean([s[0] for s in ev.majority((k,), seed).values()]) for seed in range(seeds)])
        legacy = np.random.RandomState(k)
        urm = np.mean([[combine([urm_maj(votes[(f"t{i}", j)], k, legacy) for j in range(n)])
                        for i, n in zip(tasks, inputs_per_task)] for _ in range(seeds)])
        assert abs(ours - exact) < tol and abs(urm - exact) < tol, (k, ours, urm, exact, tol)
        if k == 1:
            at_1 = exact
    assert exact - at_1 > 0.1  # K matters for these votes: the most confident vote wins more often


def test_reproducible_and_pass_at_k_unchanged(tmp_path):
    inputs_per_task = [2, 1, 1]
    plain = evaluator(tmp_path, inputs_per_task)
    ev = evaluator(tmp_path, inputs_per_task, maj_ks=(10, 100))
    alone = evaluator(tmp_path, inputs_per_task, maj_ks=(100,))
    for e in (plain, ev, alone):
        random_votes(e, np.random.default_rng(2), inputs_per_task)
    a, b = ev.result(curve_repeats=2, bootstrap=20, seed=5), ev.result(curve_repeats=2, bootstrap=20, seed=5)
    assert a == b
    # one stream per K: maj@100 does not depend on the other Ks asked for
    assert alone.result(seed=5)["metrics"]["maj@100"] == a["metrics"]["maj@100"]
    # without maj_ks nothing changes; with it, only the maj@K entries are added
    p = plain.result(curve_repeats=2, bootstrap=20, seed=5)
    assert {k: v for k, v in a["metrics"].items() if not k.startswith("maj@")} == p["metrics"]
    assert list(a["metrics"])[:len(plain.pass_ks) + 2] == [f"pass@{k}" for k in plain.pass_ks] + ["maj@10", "maj@100"]
    assert {k: v for k, v in a.items() if k != "metrics"} == {k: v for k, v in p.items() if k != "metrics"}
    assert not any(k.startswith("maj@") for k in p["metrics"])
