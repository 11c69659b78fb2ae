"""
Checkpoints and the folders scripts write into: checkpoints written atomically and read safely;
recognising what a checkpoint is (ours, or a TRM, HRM or URM reference codebase's, from a path or
the Hugging Face hub, with the all_config.yaml beside it), its architecture and its weights for a
model (puzzle-table rows moved by name); and writing ours back in the references' layouts.
train.py and evaluate.py both read checkpoints through this file.

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
from dataclasses import fields

import torch

import data
from configurator import ConfigError, load_config_file
from model import TRMConfig


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
         "evaluation": "the results of evaluate.py", "export": "a checkpoint exported by evaluate.py --export"}


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


# -----------------------------------------------------------------------------
# checkpoints from elsewhere: the Hugging Face hub, the reference's saved config, puzzle tables

def resolve(path: str) -> str:
    """A local file for a checkpoint path: PATH itself, or for hf:OWNER/REPO/FILE that file
    downloaded through huggingface_hub into its cache (and the all_config.yaml beside it in the
    repository, when there is one, so that the architecture can be read from it)."""
    if not path.startswith("hf:"):
        return path
    parts = path[3:].split("/")
    if len(parts) < 3 or not all(parts):
        raise SystemExit(f"error: {path}: expected hf:OWNER/REPO/PATH_IN_REPO")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import hf_hub_download
    try:
        local = hf_hub_download(repo_id=repo, filename=filename)
    except Exception as e:  # offline, no such repository or file, ...
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise SystemExit(f"error: {path}: could not download {filename} from {repo} ({type(e).__name__}: {first})")
    try:
        hf_hub_download(repo_id=repo, filename="/".join(parts[2:-1] + ["all_config.yaml"]))
    except Exception:
        pass  # a repository without the reference's config: the architecture comes from settings
    return local


# the reference codebases' names for this code's settings, in all_config.yaml's arch section
REFERENCE_NAMES = {"num_layers": "L_layers", "loops": "halt_max_steps"}
LOSS_TYPES = {"stablemax_cross_entropy": "stablemax", "softmax_cross_entropy": "softmax"}


def reference_config(ckpt_path: str) -> dict | None:
    """The all_config.yaml that the reference codebases write beside their checkpoints, in this
    code's terms: {'model': architecture settings (arch from the model's class name, the
    reference's other names renamed), 'data_paths': the datasets it trained on}. None when
    there is no such file. Keys that are not settings here stay in 'model' (callers filter)."""
    path = os.path.join(os.path.dirname(os.path.abspath(ckpt_path)), "all_config.yaml")
    if not os.path.isfile(path):
        return None
    import yaml
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
        arch = dict(cfg["arch"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise SystemExit(f"error: {path}: not a readable reference config ({type(e).__name__}: {e})")
    module = str(arch.pop("name", "")).split("@")[0].lower()  # e.g. recursive_reasoning.trm
    kind = "hrm" if "hrm" in module else "urm" if "urm" in module else "trm"
    model = {REFERENCE_NAMES.get(k, k): v for k, v in arch.items() if k not in ("loss", "forward_dtype")}
    loss = (arch.get("loss") or {}).get("loss_type")
    if loss in LOSS_TYPES:
        model["loss_type"] = LOSS_TYPES[loss]
    model["arch"] = kind
    if kind in ("urm", "hrm"):  # their prefix is always ceil(puzzle_emb_ndim / hidden_size)
        model["puzzle_emb_len"] = 0
        model.setdefault("no_ACT_continue", kind == "urm")
    if kind == "urm":
        model["mlp_kind"] = "conv_swiglu"
    # TRM writes a list, data_paths; HRM and URM one path, data_path
    data = cfg.get("data_paths") or ([cfg["data_path"]] if cfg.get("data_path") else [])
    return {"model": model, "data_paths": list(data)}


def remap_table(old: torch.Tensor, old_names: list | None, new_names: list) -> tuple[torch.Tensor, int]:
    """A puzzle-embedding table for a dataset whose identifiers are new_names, from one trained
    on old_names: a name present in both keeps its row, every other row is the mean of the old
    rows. Without old_names every row is that mean (what the reference does). Returns the table
    and the number of rows kept."""
    table = old.mean(0, keepdim=True).expand(len(new_names), old.shape[1]).clone()
    if old_names is None:
        return table, 0
    if len(old_names) != len(old):
        raise ValueError(f"{len(old_names)} identifier names for a puzzle table of {len(old)} rows")
    where = {name: i for i, name in enumerate(old_names)}
    pairs = [(i, where[name]) for i, name in enumerate(new_names) if name in where]
    if pairs:
        new_rows, old_rows = (torch.tensor(x) for x in zip(*pairs))
        table[new_rows] = old[old_rows]
    return table, len(pairs)


# -----------------------------------------------------------------------------
# reading checkpoints: ours or a reference codebase's, what architecture they hold, and their
# weights for a model (train.py --init_from and evaluate.py both start here)

# the architecture settings (TRMConfig's fields less the sizes, which always come from the dataset)
SIZES = ("vocab_size", "seq_len", "num_puzzle_identifiers", "forward_dtype")
ARCH_KEYS = tuple(f.name for f in fields(TRMConfig) if f.name not in SIZES)
REF_PREFIXES = ("_orig_mod.model.inner.", "model.inner.")  # compiled / uncompiled loss-head wrapper
LAYOUT = ("L_level.", "H_level.", "layers.")  # block keys of TRM, HRM (both) and URM


def read_checkpoint(path: str, trust: bool = False) -> tuple[str, dict]:
    """('ours', checkpoint dict) or ('reference', state dict without its prefix); SystemExit
    naming the file when it is neither (or needs full unpickling and trust is off)."""
    obj = load(path, map_location="cpu", trust=trust)
    if isinstance(obj, dict) and "model" in obj and "model_config" in obj:
        return "ours", obj
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):  # URM's training script
        obj = obj["model_state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        for prefix in REF_PREFIXES + ("",):  # compiled, uncompiled, or keys already bare
            if all(k.startswith(prefix) for k in obj) and (prefix or any(k.startswith(LAYOUT) for k in obj)):
                return "reference", {k[len(prefix):]: v for k, v in obj.items()}
        bad = next(k for k in obj if not k.startswith(REF_PREFIXES))
        raise SystemExit(f"error: {path}: a state dict, but key {bad!r} has neither reference prefix "
                         f"({' or '.join(REF_PREFIXES)})")
    what = f"a dict with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise SystemExit(f"error: {path}: not a checkpoint (ours holds 'model' and 'model_config'; the "
                     f"reference's is a state dict of tensors): found {what}")


def load_weights(model: torch.nn.Module, state: dict, path: str):
    """Load a state dict strictly, except that a puzzle table of another size is replaced by the
    mean of its rows (REFERENCE.md §6), with a warning; mismatches are listed in one error."""
    state = dict(state)
    own = model.state_dict()
    table = "puzzle_emb.weights"
    if table in state and table in own and state[table].shape != own[table].shape:
        if state[table].shape[1:] != own[table].shape[1:]:
            raise SystemExit(f"error: {path}: puzzle table width {state[table].shape[1]} != model's {own[table].shape[1]}")
        print(f"warning: {path}: the puzzle table has {state[table].shape[0]} rows and the dataset "
              f"{own[table].shape[0]} identifiers; using the mean of the loaded rows for every one")
        state[table] = state[table].mean(0, keepdim=True).expand_as(own[table]).clone()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"missing {missing}" if missing else "", f"unexpected {unexpected}" if unexpected else "",
                 f"shape (checkpoint vs model) {shapes}" if shapes else ""]
        raise SystemExit(f"error: {path} does not fit the model: " + "; ".join(p for p in parts if p))
    model.load_state_dict(state)


def model_settings(kind: str, ck: dict, settings: dict, path: str) -> dict:
    """The architecture settings of a checkpoint at path. Ours carries them. A reference
    checkpoint's come from the all_config.yaml beside it (the reference writes one), then
    --config, then the settings given, and its arch from its key layout."""
    if kind == "ours":
        return dict(ck["model_config"])
    ref = reference_config(path)
    cfg = {k: v for k, v in (ref["model"] if ref else {}).items() if k in ARCH_KEYS}
    try:
        recipe = load_config_file(settings["config"]) if settings.get("config") else {}
    except ConfigError as e:
        raise SystemExit(f"error: {e}")
    cfg.update({k: v for k, v in recipe.items() if k in ARCH_KEYS})
    cfg.update({k: settings[k] for k in ARCH_KEYS if settings.get(k) is not None and k != "halt_max_steps"})
    if settings.get("arch") is None and not ref:
        cfg["arch"] = ("hrm" if any(k.startswith("H_level.") for k in ck)
                       else "urm" if any(k.startswith("layers.") for k in ck) else "trm")
    return cfg


def trained_identifiers(kind: str, ck: dict, path: str, given: str = "") -> list[str] | None:
    """The names of a checkpoint's puzzle-table rows: from `given` (an identifiers.json), ours
    keeps them (older ones: its dataset's identifiers.json), a reference checkpoint's come from the
    dataset its all_config.yaml names. None when they cannot be found."""
    if given:
        return data.read_identifiers(os.path.dirname(os.path.abspath(given)))
    if kind == "ours":
        return ck.get("identifiers") or data.read_identifiers(ck["config"]["data_dir"].split(",")[0])
    ref = reference_config(path)
    return data.read_identifiers(ref["data_paths"][0]) if ref and ref["data_paths"] else None


def weights_for(kind: str, ck: dict, path: str, names: list | None, use_ema: bool = True, given: str = ""):
    """The state dict to load from a checkpoint into a model for a dataset whose puzzle names
    are `names` (the EMA weights of ours when use_ema): puzzle-table rows follow their names, a
    puzzle the checkpoint never saw gets the mean of its rows. Returns (state, a line saying
    what happened to the table, or None)."""
    state = dict(ck["model"]) if kind == "ours" else dict(ck)
    if kind == "ours" and use_ema and ck.get("ema") is not None:
        state.update(ck["ema"])  # the averaged parameters, by name
    table = state.get("puzzle_emb.weights")
    old = trained_identifiers(kind, ck, path, given)
    if table is None or names is None or (old is None and len(table) == len(names)) or old == names:
        return state, None  # nothing to move (or nothing known to move by: index order, as the reference)
    state["puzzle_emb.weights"], kept = remap_table(table.float(), old, names)
    return state, (f"puzzle table: {kept} of {len(names)} rows by name from the checkpoint's {len(table)}, "
                   f"the others their mean" + ("" if old is not None else " (the names it was trained on are unknown)"))



# the settings that shape the network: a checkpoint to start from fixes them (every other
# architecture setting, halt_max_steps or loss_type say, may be given anew for the new run)
SHAPE_KEYS = ("arch", "hidden_size", "num_heads", "expansion", "L_layers", "H_layers", "H_cycles", "L_cycles",
              "puzzle_emb_ndim", "puzzle_emb_len", "pos_encodings", "mlp_t", "mlp_kind", "conv_dtype")


def start_from(path: str, settings: dict, given, trust: bool = False) -> dict:
    """The checkpoint a new training run starts from (train.py --init_from): {'kind', 'model'
    (its architecture settings), 'ck' (its contents), 'path' (the local file)}. settings are the
    run's, given the names a config file or the command line set. A given setting that would
    change the network's shape is an error; one that changes its behaviour (halt_max_steps,
    loss_type, ...) is used instead of the checkpoint's."""
    local = resolve(path)
    kind, ck = read_checkpoint(local, trust)
    ref = reference_config(local) if kind == "reference" else None
    defaults = {k: getattr(TRMConfig, k) for k in ARCH_KEYS}
    if kind == "ours" or ref is not None:  # the checkpoint says what it is
        arch = {**defaults, **{k: v for k, v in (ck["model_config"] if kind == "ours" else ref["model"]).items()
                               if k in ARCH_KEYS}}
        clash = {k: (settings[k], arch[k]) for k in given if k in SHAPE_KEYS and settings[k] != arch[k]}
        if clash:
            raise SystemExit(f"error: {path} has another architecture than these settings "
                             f"(setting: given, checkpoint's): {clash}; leave them out to use the checkpoint's")
        arch.update({k: settings[k] for k in given if k in ARCH_KEYS})
    else:  # a bare reference state dict: the settings describe it, its keys tell the arch
        arch = {**defaults, **model_settings(kind, ck, {**{k: settings[k] for k in given if k in ARCH_KEYS},
                                                       "config": ""}, local)}
    return {"kind": kind, "model": arch, "ck": ck, "path": local}


# -----------------------------------------------------------------------------
# back to the reference codebases: one of our checkpoints in the layout each one's loader reads
# (REFERENCE.md §6, §8.4, §9.4)

# The key prefix of the loss-head-wrapped model, compiled (torch.compile's `_orig_mod.`) or not.
# The compiled form is what all three save and what every one of their loaders accepts in its
# default (compiled) mode; TRM's and URM's loaders resize a puzzle table only under this name.
REFERENCE_PREFIX = {True: "_orig_mod.model.inner.", False: "model.inner."}
REFERENCE_MODELS = {"trm": "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
                    "hrm": "hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",
                    "urm": "urm.urm@URM"}
REFERENCE_LOSS_HEAD = "losses@ACTLossHead"
INIT_BUFFERS = ("H_init", "L_init", "init_hidden")  # created in the forward dtype by the references
# the training settings of their cfg_pretrain.yaml, for any our checkpoint's config lacks
REFERENCE_TRAINING = dict(global_batch_size=768, epochs=100000, eval_interval=10000, lr=1e-4, lr_min_ratio=1.0,
                          lr_warmup_steps=2000, beta1=0.9, beta2=0.95, weight_decay=0.1, puzzle_emb_lr=1e-2,
                          puzzle_emb_weight_decay=0.1, seed=0, ema=False, ema_rate=0.999)


def reference_file_name(arch: str, step: int) -> str:
    """The name the reference codebase of `arch` gives a checkpoint: step_N (TRM, HRM; HRM's
    evaluate.py reads N from it) or step_N.pt (URM)."""
    return f"step_{int(step)}.pt" if arch == "urm" else f"step_{int(step)}"


def _reference_state(ck: dict, use_ema: bool, forward_dtype: torch.dtype, notes: list) -> tuple[dict, bool]:
    """Our weights (EMA overlaid when asked and present) under the bare reference names, each in
    the dtype the reference model holds it in: float32, except the init states (forward dtype)
    and URM's depthwise conv (bfloat16). Returns (state, whether the EMA weights were used)."""
    state = dict(ck["model"])
    ema = ck.get("ema") if use_ema else None
    if ema:
        unknown = sorted(set(ema) - set(state))
        if unknown:
            raise ValueError(f"the checkpoint's EMA names weights its model lacks: {unknown[:5]}")
        state.update(ema)
    out, rounded = {}, []
    for name, t in state.items():
        t = t.detach().cpu()
        if name in INIT_BUFFERS:
            want = forward_dtype
        elif ".mlp.dwconv." in name:
            want = torch.bfloat16
        else:
            want = torch.float32
        if t.dtype != want:
            converted = t.to(want)
            if not torch.equal(converted.to(t.dtype), t):
                rounded.append(name)
            t = converted
        out[name] = t.contiguous().clone()
    trained = ck["model_config"].get("forward_dtype", "float32")
    if any(n in INIT_BUFFERS for n in rounded) and getattr(torch, trained) != forward_dtype:
        # (a model that ran in forward_dtype already used them rounded: H_init.to(dtype) at each reset)
        notes.append(f"the initial states ({', '.join(n for n in rounded if n in INIT_BUFFERS)}) were rounded to "
                     f"{str(forward_dtype).split('.')[-1]}, the dtype the reference keeps them in; the model here "
                     f"ran with forward_dtype {trained} and used them unrounded")
    if any(".mlp.dwconv." in n for n in rounded):
        notes.append("the ConvSwiGLU conv weights were rounded to bfloat16 (URM keeps them in bfloat16; this "
                     "model trained them with conv_dtype='float32'), so URM's outputs differ slightly from ours")
    return out, bool(ema)


def _yaml_number(x):
    """An integral float as an int (the references' own yaml writes expansion: 4), else as is."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def reference_yaml(ck: dict, forward_dtype: str = "bfloat16") -> tuple[dict, list]:
    """The all_config.yaml contents (the reference's PretrainConfig, as its yaml.dump of
    model_dump() writes it) for our checkpoint `ck`: the arch section under the reference's names
    and the training settings of our config that map onto its fields. Returns (dict, notes on
    what the reference cannot do the same way)."""
    m, c = ck["model_config"], {**REFERENCE_TRAINING, **(ck.get("config") or {})}
    kind = m["arch"]
    notes = []
    loss_type = {v: k for k, v in LOSS_TYPES.items()}[m.get("loss_type", "stablemax")]
    arch = {"name": REFERENCE_MODELS[kind], "loss": {"name": REFERENCE_LOSS_HEAD, "loss_type": loss_type},
            "hidden_size": m["hidden_size"], "num_heads": m["num_heads"], "expansion": _yaml_number(m["expansion"]),
            "H_cycles": m["H_cycles"], "L_cycles": m["L_cycles"], "puzzle_emb_ndim": m["puzzle_emb_ndim"],
            "pos_encodings": m["pos_encodings"], "forward_dtype": forward_dtype,
            "rms_norm_eps": m.get("rms_norm_eps", 1e-5), "rope_theta": m.get("rope_theta", 10000.0)}
    if kind == "urm":  # URM's names; exploration (0.1) and the one-position prefix are fixed in its code
        arch.update(num_layers=m["L_layers"], loops=m["halt_max_steps"])
    else:
        arch.update(H_layers=m["H_layers"], L_layers=m["L_layers"], halt_max_steps=m["halt_max_steps"],
                    halt_exploration_prob=m["halt_exploration_prob"])
    if kind == "trm":
        arch.update(mlp_t=m["mlp_t"], puzzle_emb_len=m["puzzle_emb_len"], no_ACT_continue=m["no_ACT_continue"])

    data = [p for p in str(c.get("data_dir") or "").split(",") if p]
    test = [p for p in str(c.get("test_data_dir") or "").split(",") if p]
    evaluators = [{"name": "arc@ARC"}] if data and os.path.isfile(os.path.join(data[0], "test_puzzles.json")) else []
    cfg = {"arch": arch, **{k: c[k] for k in ("global_batch_size", "epochs", "eval_interval", "lr", "lr_min_ratio",
                                               "lr_warmup_steps", "beta1", "beta2", "weight_decay", "puzzle_emb_lr",
                                               "puzzle_emb_weight_decay", "seed")},
           "project_name": None, "run_name": None, "checkpoint_path": None, "checkpoint_every_eval": True,
           "eval_save_outputs": []}
    if kind == "trm":
        cfg.update(data_paths=data, data_paths_test=test, evaluators=evaluators, load_checkpoint=None,
                   min_eval_interval=0, ema=bool(c["ema"]), ema_rate=c["ema_rate"],
                   freeze_weights=bool(c.get("freeze_weights", False)))
    else:  # HRM and URM read one dataset, data_path, and have no separate test datasets
        cfg["data_path"] = data[0] if data else ""
        if len(data) > 1 or test:
            notes.append(f"{kind.upper()} reads a single dataset (data_path): all_config.yaml names only "
                         f"{cfg['data_path']!r} of data_dir={c.get('data_dir')!r} test_data_dir={c.get('test_data_dir')!r}")
    if kind == "urm":
        cfg.update(evaluators=evaluators, target_q_update_every=4, grad_accum_steps=1, load_checkpoint=None,
                   load_strict=True, load_optimizer_state=True, loop_deltas=[], ema=bool(c["ema"]),
                   ema_rate=c["ema_rate"], use_muon=c.get("optimizer") == "muon")

    if kind == "trm" and loss_type == "softmax_cross_entropy":
        notes.append("TRM's loss head calls its loss with valid_mask=, which softmax_cross_entropy does not "
                     "accept: the reference fails on its first forward until that is fixed")
    if kind == "trm" and not m["no_ACT_continue"]:
        notes.append("TRM's reference fails in training with no_ACT_continue=False (it unpacks five values "
                     "from its inner model's three); evaluation is unaffected")
    if kind == "urm" and m["halt_exploration_prob"] != 0.1:
        notes.append(f"URM fixes halting exploration at 0.1 (this model trained with {m['halt_exploration_prob']})")
    if kind == "urm" and not isinstance(arch["expansion"], int):
        notes.append("URM's evaluate_trained_model.py reads expansion as an integer; pass it by hand")
    if kind in ("urm", "hrm") and forward_dtype not in ("bfloat16", "float16"):
        notes.append(f"{kind.upper()}'s attention is flash-attn, which needs bfloat16 or float16, not {forward_dtype}")
    return cfg, notes


def export_reference(ck: dict, path: str, use_ema: bool = True, forward_dtype: str = "bfloat16",
                     compiled: bool = True) -> dict:
    """Write our checkpoint `ck` (train.py's dict: model, ema, model_config, config, ...) as the
    reference codebase of its arch saves its own, so that that codebase's loader accepts it:

      trm, hrm  `path`: a bare state dict (torch.save), as their save_train_state writes
      urm       `path`: {'step', 'model_state_dict', 'rng_state'} as URM's save_train_state writes,
                without optimizer_states (its loader then starts fresh optimisers; ours do not
                map onto its)
      all       all_config.yaml beside `path`: its PretrainConfig (HRM's evaluate.py and URM's
                evaluate_trained_model.py read it; so does reference_config() here)

    Keys carry the prefix of the compiled loss-head model, `_orig_mod.model.inner.` (compiled=False:
    `model.inner.`, for a reference run with DISABLE_COMPILE). Weights are the EMA ones when `ck`
    has them and use_ema (the references save their EMA copy), in the reference's dtypes: float32,
    except H_init / L_init / init_hidden in `forward_dtype` (the references create them in their
    forward dtype, bfloat16 by default; their loaders assign the saved tensors, dtype included)
    and URM's conv in bfloat16. Both files are written to a temporary name and renamed.

    Returns {'arch', 'checkpoint', 'config' (the yaml's path), 'ema' (EMA weights used), 'keys',
    'notes' (what the reference will do differently)}. ValueError for a model no reference
    loader can take: no puzzle embedding (each of them reads the puzzle table while loading or
    building its optimisers), or TRM with URM's ConvSwiGLU."""
    if not (isinstance(ck, dict) and "model" in ck and "model_config" in ck):
        raise ValueError("not one of our checkpoints (a dict with 'model' and 'model_config')")
    m = ck["model_config"]
    kind = m.get("arch", "trm")
    if kind not in REFERENCE_MODELS:
        raise ValueError(f"unknown arch {kind!r}")
    if not m.get("puzzle_emb_ndim"):
        raise ValueError("the model has no puzzle embedding (puzzle_emb_ndim=0); every reference loader reads "
                         "the puzzle table (TRM's load_checkpoint, HRM's and URM's optimiser setup) and fails "
                         "without one")
    if kind == "trm" and m.get("mlp_kind", "swiglu") != "swiglu":
        raise ValueError(f"TRM's reference blocks have a plain SwiGLU, not mlp_kind={m['mlp_kind']!r}")
    if forward_dtype not in ("bfloat16", "float16", "float32"):
        raise ValueError(f"forward_dtype must be 'bfloat16', 'float16' or 'float32', got {forward_dtype!r}")

    cfg, notes = reference_yaml(ck, forward_dtype)
    state, used_ema = _reference_state(ck, use_ema, getattr(torch, forward_dtype), notes)
    prefix = REFERENCE_PREFIX[bool(compiled)]
    state = {prefix + k: v for k, v in state.items()}
    if kind == "urm":
        obj = {"step": int(ck.get("step") or 0), "model_state_dict": state}
        rng = ((ck.get("rng") or {}).get("torch") or [None])[0]
        if isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8:
            obj["rng_state"] = rng.cpu().clone()  # URM's loader restores the CPU generator from it
    else:
        obj = state

    import yaml
    yaml_path = os.path.join(os.path.dirname(os.path.abspath(path)), "all_config.yaml")
    save(obj, path)
    tmp = f"{yaml_path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=True)  # sorted, as the references' yaml.dump writes it
        os.replace(tmp, yaml_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"arch": kind, "checkpoint": path, "config": yaml_path, "ema": used_ema, "keys": len(state),
            "notes": notes}
