"""
nanoGPT-style configuration: a script's settings are its module globals; the command line
overrides them, in order, with config files and --key=value pairs:

    python train.py config/sudoku.py --batch_size=32 --compile=False
    python train.py --help        # the script's docstring and every setting's current value

A config file is plain Python run in a fresh namespace; every name it sets (not starting with
an underscore) must be an existing setting. A --key=value is parsed as a Python literal when it
is one (32, 1e-4, True, [1, 2]) and kept as a string otherwise; a string setting keeps the text
as typed, and a list or tuple setting also takes comma-separated items (--subsets=a,b; an empty
value is an empty list), each read like the default's first item (as text if the default is
empty). Either way an unknown key, or a value whose type differs from the default's, is an error
naming the key (an int is accepted where a float is expected; a setting whose default is None
takes anything).

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


def _from_text(text, default):
    """The value that the text of a --key=value means for a setting whose default is `default`."""
    if isinstance(default, str):
        return text  # e.g. --out_dir=123 stays a path
    if isinstance(default, (list, tuple)) and not text.startswith(("[", "(")):
        item = default[0] if default else ""  # what each item is read as
        return type(default)(_from_text(t.strip(), item) for t in text.split(",") if t.strip())
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string, e.g. --init_from=resume


def load_config_file(path) -> dict:
    """The settings a config file sets: the names it defines, but for modules and names starting
    with an underscore. ConfigError if it is missing or fails to run."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    namespace = {}
    try:
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), namespace)
    except Exception as e:
        raise ConfigError(f"{path}: {type(e).__name__}: {e}") from e
    return {k: v for k, v in namespace.items() if not k.startswith("_") and type(v).__name__ != "module"}


def parse(settings, argv):
    """Apply config files and --key=value pairs in argv to a copy of `settings`; return the
    dict of changed keys. Raises ConfigError naming the file or key on bad input."""
    changed = {}
    for arg in argv:
        if not arg.startswith("--"):
            for key, value in load_config_file(arg).items():
                changed[key] = _check(settings, key, value, arg)
        else:
            key, eq, text = arg[2:].partition("=")
            if not eq:
                hint = f" (a switch is --{key}=True)" if isinstance(settings.get(key), bool) else ""
                raise ConfigError(f"expected --key=value, got {arg!r}{hint}")
            changed[key] = _check(settings, key, _from_text(text, settings.get(key)), f"--{key}")
    return changed


def configure(g, argv=None, doc=None):
    """Override the settings in the globals dict g (every plain int/float/bool/str/list/None
    global defined so far) from sys.argv; exit with a one-line message on bad input. With --help
    or -h, print doc (default: the __main__ module's docstring) and the settings as the other
    arguments leave them, and exit."""
    argv = sys.argv[1:] if argv is None else argv
    settings = {k: v for k, v in g.items() if not k.startswith("_")
                and (v is None or isinstance(v, (int, float, bool, str, list, tuple)))}
    wants_help = any(a in ("-h", "--help") for a in argv)
    try:
        changed = parse(settings, [a for a in argv if a not in ("-h", "--help")])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
    if wants_help:
        doc = sys.modules["__main__"].__doc__ if doc is None else doc
        print((doc or "").strip() + "\n\nsettings (config files and --key=value override them):")
        for k, v in {**settings, **changed}.items():
            print(f"  {k} = {v!r}")
        raise SystemExit(0)
    for k, v in changed.items():
        if k in settings and settings[k] != v:
            print(f"config: {k} = {v!r}")
    g.update(changed)
    return changed
