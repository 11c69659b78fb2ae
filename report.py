"""
Write evaluation results (evaluate.py calls write_evaluation; train.py the submission):

  write_evaluation(out, ...)                    everything evaluate.py writes into its out_dir
                                                (listed in its docstring), and the console summary
  write_arc_html(path, tasks, title, summary)   every ARC test task: demonstrations, test inputs,
                                                targets and the two attempts, failures first
  write_trace_html(path, traces, title)         how the answer of a few puzzles changes over the
                                                ACT steps (ARC, Sudoku or Maze tokens)
  plot_curve(rows, png_path, title)             pass@1 and pass@2 against the number of votes

The HTML files are self-contained (inline CSS, no scripts, fonts or images), so they open offline
and can be copied around as one file. Grids are tables whose cells carry one short CSS class for
their colour; closing </td> and </tr> tags are optional in HTML and left out, which keeps the report
of the 400 ARC-AGI-1 evaluation tasks near 8 MB.
"""
import hashlib
import html
import json
import math
import os
import platform
import resource
import subprocess
import time

import torch

import ops

# ARC colours 0-9 (the palette of the ARC testing interface)
PALETTE = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00",
           "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]
BOXES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # Sudoku size -> box (rows, cols), as in prepare_sudoku.py
MAZE_CLASSES = ["p", "m1", "m2", "m3", "m4", "m5"]  # token -> class: pad, then "# SGo"

PAGE_CSS = """
body{font:14px/1.4 sans-serif;margin:1em 2em;color:#222}
h2{font-size:16px;margin:0 0 .4em}
h3{font-size:14px;margin:.6em 0 .2em}
table.sum{border-collapse:collapse;margin:.5em 0}
table.sum td{border:1px solid #ccc;padding:1px 8px}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:14px}
figure{margin:0;padding:3px;border:3px solid transparent}
figcaption{font-size:12px;color:#555;white-space:nowrap}
.ok{border-color:#2ECC40}
.bad{border-color:#FF4136}
.np{width:60px;height:60px;display:flex;align-items:center;justify-content:center;
 border:1px dashed #999;color:#999;font-size:11px;text-align:center}
section{border-top:1px solid #ccc;padding:.8em 0}
a{text-decoration:none}
.pass{color:#1a8a2a}
.fail{color:#d0201a}
td{padding:0}
.z1 td{width:18px;height:18px}
.z2 td{width:12px;height:12px}
.z3 td{width:8px;height:8px}
""" + "".join(f".c{i}{{background:{c}}}\n" for i, c in enumerate(PALETTE))


def _page(title: str, css: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{PAGE_CSS}{css}</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _size_class(rows: int, cols: int) -> str:
    """Cell size class: small grids get big cells, so a 3x3 and a 30x30 grid are both legible."""
    n = max(rows, cols)
    return "z1" if n <= 10 else "z2" if n <= 20 else "z3"


# -----------------------------------------------------------------------------
# ARC report

ARC_CSS = """
table.g{border-collapse:collapse;background:#000}
table.g td{border:1px solid #555}
"""


def _arc_grid(grid: list[list[int]]) -> str:
    """A grid of colours 0-9 as a table. Colour 0, the usual background, is the table's background
    colour: its cells are a bare <td>, 4 bytes instead of 14 for the commonest cell."""
    rows = len(grid)
    cols = len(grid[0]) if rows else 0
    cells = "".join("<tr>" + "".join("<td>" if v == 0 else f"<td class=c{v}>" for v in row)
                    for row in grid)
    return f"<table class='g {_size_class(rows, cols)}'>{cells}</table>"


def _figure(grid, caption: str, cls: str = "") -> str:
    """A grid (or a 'no prediction' box for None) with a caption that ends in its size."""
    if grid is None:
        content, size = "<div class=np>no prediction</div>", ""
    else:
        content, size = _arc_grid(grid), f" {len(grid)}x{len(grid[0]) if grid else 0}"
    cls = f" class={cls}" if cls else ""
    return f"<figure{cls}>{content}<figcaption>{caption}{size}</figcaption></figure>"


def _ints(grid) -> list[list[int]] | None:
    """Plain ints (evaluate.py may hand over numpy arrays), so grids compare with ==."""
    return None if grid is None else [[int(v) for v in row] for row in grid]


def _arc_test(test: dict) -> str:
    target = _ints(test["target"])
    votes = test.get("votes", [])
    parts = [_figure(_ints(test["input"]), "input"),
             _figure(target, "target") if target is not None else
             "<figure><div class=np>target not given</div><figcaption>target</figcaption></figure>"]
    for i, attempt in enumerate(test["attempts"]):
        attempt = _ints(attempt)
        caption = f"attempt {i + 1}"
        if i < len(votes):
            caption += f", {votes[i]} votes"
        cls = ""
        if attempt is not None and target is not None:
            ok = attempt == target
            caption = ("✓ " if ok else "✗ ") + caption
            cls = "ok" if ok else "bad"
        parts.append(_figure(attempt, caption, cls))
    mark = ("<span class=pass>✓ solved</span>" if test["correct"] else "<span class=fail>✗ not solved</span>"
            if test["correct"] is not None else "no solution given")
    return f"<h3>test {test['index']}: {mark}</h3>\n<div class=row>{''.join(parts)}</div>"


def _arc_section(anchor: str, task: dict) -> str:
    tests = task["tests"]
    demos = "".join(f"<div class=row>{_figure(_ints(x), f'demo {i + 1} in')}"
                    f"{_figure(_ints(y), f'demo {i + 1} out')}</div>"
                    for i, (x, y) in enumerate(task["demos"]))
    if any(t["correct"] is None for t in tests):  # no solution given: attempts only
        head = f"<h2>{html.escape(task['task'])} <small>(no solution given)</small></h2>\n"
    else:
        solved = sum(t["correct"] for t in tests)
        passed = solved == len(tests)
        head = (f"<h2 class={'pass' if passed else 'fail'}>{'✓' if passed else '✗'} {html.escape(task['task'])} "
                f"<small>({solved}/{len(tests)} test inputs solved)</small></h2>\n")
    return (f"<section id={anchor}>{head}"
            f"<h3>demonstrations</h3>\n<div class=row>{demos}</div>\n"
            + "\n".join(_arc_test(t) for t in tests) + "\n</section>")


def _summary_table(summary: dict) -> str:
    def fmt(v):
        return f"{v:.6g}" if isinstance(v, float) else str(v)
    rows = "".join(f"<tr><td>{html.escape(str(k))}<td>{html.escape(fmt(v))}" for k, v in summary.items())
    return f"<table class=sum>{rows}</table>"


def write_arc_html(path: str, tasks: list[dict], title: str, summary: dict) -> None:
    """One page for an ARC evaluation: the summary table, an index of the tasks and one section per
    task, failed tasks (any test input not solved) first, then by name. Format of `tasks`:
    {"task": name, "demos": [[input, output], ...], "tests": [{"index", "input", "target" (None if
    unknown), "attempts" (grids or None), "votes", "correct"}]}, grids as lists of rows of 0-9."""
    unknown = lambda t: any(x["correct"] is None for x in t["tests"])  # no solution given
    tasks = sorted(tasks, key=lambda t: (unknown(t), all(x["correct"] for x in t["tests"]), t["task"]))
    anchors = [f"t{i}" for i in range(len(tasks))]  # by position: task names may hold any character
    index = []
    for anchor, task in zip(anchors, tasks):
        if unknown(task):
            index.append(f"<a href=#{anchor}>{html.escape(task['task'])}</a>")
            continue
        passed = all(x["correct"] for x in task["tests"])
        index.append(f"<a href=#{anchor} class={'pass' if passed else 'fail'}>"
                     f"{'✓' if passed else '✗'}&nbsp;{html.escape(task['task'])}</a>")
    failed = sum(not unknown(t) and not all(x["correct"] for x in t["tests"]) for t in tasks)
    given = sum(unknown(t) for t in tasks)
    body = [_summary_table(summary),
            f"<p>{len(tasks)} tasks, {failed} failed (listed first)"
            + (f", {given} with no solution given (attempts only, listed last)" if given else "") + "</p>",
            "<nav>" + " ".join(index) + "</nav>"]
    body += [_arc_section(anchor, task) for anchor, task in zip(anchors, tasks)]
    _write(path, _page(title, ARC_CSS, body))


# -----------------------------------------------------------------------------
# ACT traces

TRACE_CSS = """
table.t{border-collapse:collapse}
table.t td{border:1px solid #ccc;position:relative;text-align:center}
table.sudoku td{width:22px;height:22px;font-size:14px;border-color:#999}
table.sudoku td.br{border-right:2px solid #000}
table.sudoku td.bb{border-bottom:2px solid #000}
td.gv{background:#e8e8e8;font-weight:bold}
td.p{background:#f4f4f4}
td.e{background:#666}
td.m1{background:#333}
td.m2{background:#fff}
td.m3{background:#2ECC40}
td.m4{background:#FF4136}
td.m5{background:#0074D9}
td.x{box-shadow:inset 0 0 0 1px #fff,inset 0 0 0 3px #e00;color:#e00}
td.d::after{content:"";position:absolute;right:0;top:0;border-style:solid;border-width:0 8px 8px 0;
 border-color:transparent #0074D9 transparent transparent}
.legend{font-size:12px;color:#555}
"""


def _square(tokens) -> list[list[int]]:
    """Flat tokens [n * n] -> n rows of n ints."""
    flat = [int(t) for t in tokens]
    n = math.isqrt(len(flat))
    if n * n != len(flat):
        raise ValueError(f"{len(flat)} tokens are not a square grid")
    return [flat[r * n:(r + 1) * n] for r in range(n)]


def _arc_crop(grids: list[list[list[int]]]) -> tuple[int, int]:
    """Rows and columns of the smallest top-left rectangle holding every non-PAD token of all grids."""
    rows = cols = 0
    for g in grids:
        for r, row in enumerate(g):
            used = [c for c, v in enumerate(row) if v != 0]
            if used:
                rows, cols = max(rows, r + 1), max(cols, used[-1] + 1)
    return rows, cols


def _cell(kind: str, token: int, r: int, c: int, n: int) -> tuple[list[str], str]:
    """CSS classes and text of one cell of a trace grid."""
    if kind == "arc":  # PAD 0, EOS 1, colour c -> c + 2
        return ["p" if token == 0 else "e" if token == 1 else f"c{token - 2}"], ""
    if kind == "maze":
        return [MAZE_CLASSES[token]], ""
    # sudoku: pad 0, digit d -> d + 1 (d = 0 is a blank)
    classes = ["p"] if token == 0 else []
    if n in BOXES:  # thick lines between boxes
        br, bc = BOXES[n]
        if c % bc == bc - 1 and c < n - 1:
            classes.append("br")
        if r % br == br - 1 and r < n - 1:
            classes.append("bb")
    return classes, str(token - 1) if token >= 2 else ""


def _trace_grid(kind: str, grid, shape, given=None, target=None, prev=None) -> str:
    """A grid of tokens cropped to shape (rows, cols). Cells differing from target get class x,
    from prev class d; for Sudoku, cells given in the puzzle (`given` not blank) class gv."""
    rows, cols = shape
    n = len(grid)
    out = []
    for r in range(rows):
        out.append("<tr>")
        for c in range(cols):
            classes, text = _cell(kind, grid[r][c], r, c, n)
            if kind == "sudoku" and given is not None and given[r][c] >= 2:
                classes.append("gv")
            if target is not None and target[r][c] != 0 and grid[r][c] != target[r][c]:
                classes.append("x")
            if prev is not None and grid[r][c] != prev[r][c]:
                classes.append("d")
            out.append(f"<td class='{' '.join(classes)}'>{text}" if classes else f"<td>{text}")
    size = "" if kind == "sudoku" else " " + _size_class(rows, cols)
    return f"<table class='t {kind}{size}'>{''.join(out)}</table>"


def _wrong_cells(step: list[list[int]], target: list[list[int]]) -> int:
    """Cells where step differs from target, over the target's non-PAD positions (the positions
    the loss and the exact-accuracy metric count)."""
    return sum(t != 0 and s != t for srow, trow in zip(step, target) for s, t in zip(srow, trow))


def _sigmoid(x: float) -> float:
    # written both ways so that exp never overflows for large |x|
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def _trace_section(trace: dict) -> str:
    kind = trace["kind"]
    if kind not in ("arc", "sudoku", "maze"):
        raise ValueError(f"unknown trace kind {kind!r}")
    inp = _square(trace["input"])
    target = _square(trace["target"]) if trace.get("target") is not None else None  # solve.py: no answer known
    steps = [_square(s) for s in trace["steps"]]
    shape = _arc_crop([inp, *([target] if target else []), *steps]) if kind == "arc" else (len(inp), len(inp))
    given = inp if kind == "sudoku" else None
    wrong = [_wrong_cells(s, target) for s in steps] if target else None
    halts = trace.get("halts_on_q_at")

    panels = [f"<figure>{_trace_grid(kind, inp, shape, given)}<figcaption>input</figcaption></figure>"]
    if target:
        panels.append(f"<figure>{_trace_grid(kind, target, shape, given)}<figcaption>target</figcaption></figure>")
    for i, (step, q) in enumerate(zip(steps, trace["q_halt"], strict=True)):
        prev = steps[i - 1] if i else None
        if wrong is not None:
            head = f"{wrong[i]} wrong" + (", exact" if wrong[i] == 0 else "")
        else:
            head = f"{sum(a != b for x, y in zip(step, prev) for a, b in zip(x, y))} changed" if prev else "first answer"
        stop = "<br><b>halting by q stops here</b>" if halts == i + 1 else ""
        caption = f"step {i + 1}: {head}<br>q_halt {_sigmoid(q):.3f} (logit {q:+.2f}){stop}"
        panels.append(f"<figure class=step>{_trace_grid(kind, step, shape, given, target, prev)}"
                      f"<figcaption>{caption}</figcaption></figure>")
    line = (f"<p>wrong cells: {' → '.join(map(str, wrong)) if wrong else '(no steps)'}</p>\n" if wrong is not None
            else "")
    crop = f", shown {shape[0]}x{shape[1]} of {len(inp)}x{len(inp)}" if kind == "arc" else ""
    return (f"<section><h2>{html.escape(trace['name'])} <small>({kind}{crop})</small></h2>\n"
            f"{line}<div class=row>{''.join(panels)}</div></section>")


def write_trace_html(path: str, traces: list[dict], title: str) -> None:
    """One page showing the prediction after every ACT step for each trace:
    {"kind": "arc" | "sudoku" | "maze", "name", "input", "target", "steps": [tokens per step],
    "q_halt": [logit per step]}, tokens flat (n * n) in the dataset's token space; "target" may be
    None (no answer known: solve.py), and "halts_on_q_at" names the step where halting by q stops."""
    legend = ("<p class=legend>Red outline: cell differs from the target (PAD positions of the "
              "target are not counted). Blue corner: cell changed since the previous step. "
              "q_halt: sigmoid of the halting logit.</p>")
    _write(path, _page(title, TRACE_CSS, [legend] + [_trace_section(t) for t in traces]))


# -----------------------------------------------------------------------------
# accuracy against votes

def plot_curve(rows: list[dict], png_path: str, title: str) -> None:
    """pass@1 and pass@2 (with std error bars) against the number of votes on a log2 axis; PNG.
    rows: [{"votes", "pass@1", "pass@1_std", "pass@2", "pass@2_std"}], accuracies in 0..1."""
    # A bare Figure renders with Agg and never registers with pyplot: no backend switch for the
    # caller, no figure left open, and importing report.py does not import matplotlib.
    from matplotlib.figure import Figure

    rows = sorted(rows, key=lambda r: r["votes"])
    votes = [r["votes"] for r in rows]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for k in ("pass@1", "pass@2"):
        ax.errorbar(votes, [r[k] for r in rows], yerr=[r[f"{k}_std"] for r in rows],
                    marker="o", capsize=3, label=k)
    ax.set_xscale("log", base=2)
    ax.set_xticks(votes, [str(v) for v in votes])  # the measured counts, not 2^k
    ax.minorticks_off()
    ax.set_xlabel("votes (augmented predictions per puzzle)")
    ax.set_ylabel("accuracy")
    # from 0, and not flat when every value is 0; capped at 1 (accuracies)
    top = max(r[k] + r[f"{k}_std"] for r in rows for k in ("pass@1", "pass@2"))
    ax.set_ylim(0, min(1.0, max(0.05, 1.1 * top)))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


# -----------------------------------------------------------------------------
# evaluate.py's outputs

def write_json(path: str, obj, indent=None) -> None:
    """JSON written to a temporary name, then renamed over path."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
    os.replace(tmp, path)


def write_csv(path: str, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w") as f:
        f.write(",".join(columns) + "\n")
        f.writelines(",".join(f"{r[c]:.6f}" if isinstance(r[c], float) else str(r[c]) for c in columns) + "\n"
                     for r in rows)


def write_evaluation(out: str, s: dict, res: dict, arc, data_kind: str, kind: str, data_dir: str,
                     model_config: dict, rt, wall: float, note: str = "") -> dict:
    """Print the summary and write evaluate.py's files into out (s: its settings; res:
    evaluate_split's result, with 'compute' for halting=q; arc: the ARCEvaluator or None; note:
    said on every line, e.g. that a subset was evaluated). Returns report.json's content."""
    sets, steps = res["sets"], res["steps"]
    no_solutions = arc is not None and set(arc.tasks) <= arc.unsolved
    if no_solutions:  # token and exact accuracy against placeholder answers would read as a result
        print(f"this split has no solutions (built from a challenges file without them): no score{note}")
        sets, steps = {}, []
    for set_name, m in sets.items():
        print(f"[{set_name}] " + " ".join(f"{k} {v:.4f}" for k, v in m.items() if k != "count")
              + f" ({int(m['count'])} examples){note}")
    if steps:
        print("after each ACT step: exact " + " ".join(f"{r['exact_accuracy']:.4f}" for r in steps) + note)
        write_csv(os.path.join(out, "steps.csv"), steps, ["step", "accuracy", "exact_accuracy"])
    report = {"metrics": sets, "steps": steps, "halting": s["halting"], "no_solutions": no_solutions}
    if note:
        report["subset"] = note.strip(" []")
    if arc is not None:
        report["arc"] = write_arc_results(out, s, arc, note)
    if res.get("compute") and not no_solutions:
        report["compute"] = write_compute(out, res["compute"], f"{s['ckpt']}: accuracy against test-time compute{note}", note)
    if res["trace"]:
        traces = [{"kind": data_kind, "name": f"{t['set']} example {i}", **t} for i, t in enumerate(res["trace"])]
        write_json(os.path.join(out, "trace.json"), traces)
        write_trace_html(os.path.join(out, "trace.html"), traces, f"ACT steps of {s['ckpt']}")
    n = sum(m["count"] for m in res["sets"].values())
    report["provenance"] = provenance(s, kind, data_dir, model_config, rt, wall, n)
    write_json(os.path.join(out, "report.json"), report, indent=1)
    print(f"{n:.0f} examples in {wall:.1f}s ({n / max(wall, 1e-9):.1f}/s); wrote {out}{note}")
    return report


def write_ablation(out: str, side: dict, note: str = "") -> dict:
    """evaluate.py --puzzle_ids=all: each mode's figures side by side, printed and in
    puzzle_ids.csv; returns them for report.json's 'puzzle_ids'."""
    cols = [c for c in next(iter(side.values())) if not c.endswith("ci95")]
    print(f"puzzle identity ablation{note} (each test example evaluated with another puzzle-embedding row):")
    width = {c: max(len(c), 8) + 2 for c in cols}
    print("  " + f"{'puzzle_ids':<12}" + "".join(f"{c:>{width[c]}}" for c in cols))
    for mode, row in side.items():
        cells = "".join(f"{row[c]:>{width[c]}.4f}" for c in cols)
        ci = "".join(f"  {k[:-5]} [{row[k][0]:.4f}, {row[k][1]:.4f}]" for k in ("pass@1_ci95", "pass@2_ci95") if k in row)
        print(f"  {mode:<12}{cells}{ci}")
    rows = [{"puzzle_ids": mode, **{c: row[c] for c in cols},
             **{f"{k}_{end}": row[k][i] for k in ("pass@1_ci95", "pass@2_ci95") if k in row
                for i, end in enumerate(("low", "high"))}} for mode, row in side.items()]
    write_csv(os.path.join(out, "puzzle_ids.csv"), rows, list(rows[0]))
    return side


def write_compute(out: str, rows: list[dict], title: str, note: str = "") -> list[dict]:
    """The test-time compute table (evaluate.py --halting=q): printed, compute.csv, and
    compute.png (exact accuracy, and pass@2 on ARC, against the mean ACT steps)."""
    cols = ["halting", "mean_steps", "exact_accuracy", "accuracy"] + \
        [c for c in ("pass@1", "pass@2") if c in rows[0]] + ["examples_per_s"]
    print(f"test-time compute{note}:\n  " + "  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  " + "  ".join(f"{r[c]:>14.4f}" if isinstance(r[c], float) else f"{r[c]:>14}" for c in cols))
    write_csv(os.path.join(out, "compute.csv"), rows, cols)
    from matplotlib.figure import Figure  # as plot_curve: Agg, no pyplot state
    fixed = [r for r in rows if r["halting"] != "q"]
    q = [r for r in rows if r["halting"] == "q"]
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for metric, colour in (("exact_accuracy", "tab:blue"), ("pass@2", "tab:orange")):
        if metric in rows[0]:
            ax.plot([r["mean_steps"] for r in fixed], [r[metric] for r in fixed], "o-", color=colour,
                    label=f"{metric}, fixed depth")
            ax.plot([r["mean_steps"] for r in q], [r[metric] for r in q], "*", color=colour, markersize=14,
                    label=f"{metric}, halting by q")
    ax.set_xlabel("mean ACT steps per example")
    ax.set_ylabel("accuracy")
    values = [r[m] for r in rows for m in ("exact_accuracy", "pass@2") if m in r]
    low, high = min(values), max(values)  # zoom on the data: near-equal accuracies stay readable
    pad = max(0.02, (high - low) * 0.15)
    ax.set_ylim(max(0.0, low - pad) - 0.003, min(1.0, high + pad) + 0.003)
    ax.set_xlim(0, max(r["mean_steps"] for r in rows) + 0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "compute.png"), dpi=110)
    return rows


def write_arc_results(out: str, s: dict, arc, note: str = "") -> dict:
    """submission.json, predictions.jsonl, the vote curve and report.html of an ARC evaluation;
    returns its metrics for report.json."""
    r = arc.result(curve_repeats=s["curve_repeats"], bootstrap=s["bootstrap"], seed=s["seed"])
    m = r["metrics"]
    if not m:
        print(f"ARC: no solutions given for the {len(r['unsolved'])} test tasks: nothing to score; "
              f"the attempts are in submission.json{note}")
    else:
        print("ARC " + " ".join(f"{k} {v:.4f}" for k, v in m.items() if not k.endswith("ci95"))
              + "".join(f"  {k} [{v[0]:.4f}, {v[1]:.4f}]" for k, v in m.items() if k.endswith("ci95"))
              + (f" (over the {len(arc.tasks) - len(r['unsolved'])} tasks with solutions; {len(r['unsolved'])} "
                 f"without are not scored)" if r["unsolved"] else "") + note)
    write_json(os.path.join(out, "submission.json"), r["submission"])
    with open(os.path.join(out, "predictions.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in r["rows"])
    if r.get("curve"):
        write_csv(os.path.join(out, "votes_curve.csv"), r["curve"], ["votes", "pass@1", "pass@1_std", "pass@2", "pass@2_std"])
        plot_curve(r["curve"], os.path.join(out, "votes_curve.png"), f"{os.path.basename(s['ckpt'])}: pass@K vs votes")
    if s["html"]:
        summary = ({k: (f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in m.items()}
                   or {"score": "none: no solutions given (attempts only)"})
        write_arc_html(os.path.join(out, "report.html"), arc.html_tasks(r), f"ARC evaluation of {s['ckpt']}", summary)
    return {"variants": s["variants"], "scoring": s["scoring"], "rule": SCORING_RULES[s["scoring"]], **m,
            "curve": r.get("curve", []), "unsolved": r["unsolved"]}


# what each ARC number in report.json means (REFERENCE.md §5)
SCORING_RULES = {
    "per_input": "pass@K: a test input counts as solved when its label is among the K most voted answers; a task "
                 "scores the fraction of its test inputs solved; the mean over tasks. pass@2 is the ARC Prize rule "
                 "(two attempts per test input). maj@K: URM's sampled majority vote, scored the same way",
    "all_or_nothing": "pass@K: a task scores 1 only when every one of its test inputs has its label among the K "
                      "most voted answers (HRM's notebook); the mean over tasks. Not the ARC Prize rule, which "
                      "credits each test input of a task separately",
}


def provenance(s: dict, kind: str, data_dir: str, model_config: dict, rt, wall: float, n_examples: float) -> dict:
    """What produced an evaluation: checkpoint and dataset fingerprints, code, versions, device."""
    dev = rt.device
    peak = (torch.cuda.max_memory_allocated(dev) / 2**20 if rt.device_type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {
        "checkpoint": os.path.abspath(s["ckpt"]), "checkpoint_kind": kind, "checkpoint_sha256": sha256_file(s["ckpt"]),
        "data": data_dir, "dataset_fingerprint": dataset_fingerprint(data_dir.split(",")[0]), "git_commit": git_commit(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "device": (torch.cuda.get_device_name(dev) if rt.device_type == "cuda"
                   else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "dtype": rt.dtype, "op_paths": ops.op_paths(rt.device_type), "model_config": model_config, "settings": {k: v for k, v in s.items() if v is not None},
        "wall_s": round(wall, 3), "examples_per_s": round(n_examples / max(wall, 1e-9), 2),
        "peak_memory_mb": round(peak, 1), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def dataset_fingerprint(path: str) -> str:
    """sha256 over the test split's files and the identifier lists, by name."""
    h = hashlib.sha256()
    names = [os.path.join("test", f) for f in sorted(os.listdir(os.path.join(path, "test")))]
    names += [f for f in ("identifiers.json", "test_puzzles.json") if os.path.exists(os.path.join(path, f))]
    for n in names:
        h.update(n.encode() + b"\0" + sha256_file(os.path.join(path, n)).encode())
    return h.hexdigest()


def git_commit() -> str:
    """The commit of this code, '-dirty' when tracked files differ from it; 'unknown' outside git."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
