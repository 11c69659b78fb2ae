"""
nanoGPT-style configuration: a script's settings are its module globals; the command line
overrides them, in order, with config files and --key=value pairs:

    python train.py config/sudoku.py --batch_size=32 --compile=False

A config file is plain Python run in a fresh namespace; every name it sets (not starting with
an underscore) must be an existing setting. A --key=value is parsed as a Python literal when it
is one (32, 1e-4, True, [1, 2]) and kept as a string otherwise. Either way an unknown key, or a
value whose type differs from the default's, is an error naming the key (an int is accepted
where a float is expected; a setting whose default is None takes anything).

Usage inside a script, after the defaults:
    from configurator import configure
    configure(globals())
"""
import ast
import os
import sys


class ConfigError(ValueError):
    pass


def _check(settings, key, value, source):
    if key not in settings:
        raise ConfigError(f"{source}: unknown setting {key!r}")
    default = settings[key]
    if default is None or value is None:
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(default):
        raise ConfigError(f"{source}: setting {key!r} expects {type(default).__name__} "
                          f"(default {default!r}), got {type(value).__name__} {value!r}")
    return value


def parse(settings, argv):
    """Apply config files and --key=value pairs in argv to a copy of `settings`; return the
    dict of changed keys. Raises ConfigError naming the file or key on bad input."""
    changed = {}
    for arg in argv:
        if not arg.startswith("--"):
            if not os.path.isfile(arg):
                raise ConfigError(f"config file not found: {arg}")
            namespace = {"__file__": os.path.abspath(arg)}  # lets a config exec() a sibling
            with open(arg) as f:
                code = compile(f.read(), arg, "exec")
            exec(code, namespace)
            for key, value in namespace.items():
                if key.startswith("_") or type(value).__name__ == "module":
                    continue
                changed[key] = _check(settings, key, value, arg)
        else:
            key, eq, text = arg[2:].partition("=")
            if not eq:
                raise ConfigError(f"expected --key=value, got {arg!r}")
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare string, e.g. --init_from=resume
            if isinstance(settings.get(key), str) and not isinstance(value, str):
                value = text  # a string setting keeps the text as typed, e.g. --out_dir=123
            changed[key] = _check(settings, key, value, f"--{key}")
    return changed


def configure(g, argv=None):
    """Override the settings in the globals dict g (every plain int/float/bool/str/list/None
    global defined so far) from sys.argv; exit with a one-line message on bad input."""
    argv = sys.argv[1:] if argv is None else argv
    settings = {k: v for k, v in g.items() if not k.startswith("_")
                and (v is None or isinstance(v, (int, float, bool, str, list, tuple)))}
    try:
        changed = parse(settings, argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    for k, v in changed.items():
        if k in settings and settings[k] != v:
            print(f"config: {k} = {v!r}")
    g.update(changed)
    return changed
