"""The action launcher: the child side of OpenWhisk's python ActionLoop protocol.

Started as `python launcher.py ACTION_DIR MAIN`. Activates `virtualenv/` if the action
ships one, imports `__main__.py` (or `main__.py`, `exec`) from ACTION_DIR, acknowledges
with `{"ok": true}` on fd 3, then loops: one JSON line in on stdin (`{"value": args,
"activation_id": ...}`), the non-`value` keys exported as `__OW_<KEY>`, `main(value)`
called, the log sentinel written to stdout and stderr, one JSON line out on fd 3.
An exception in main is `{"error": str(ex)}` (an application error), as in
openwhisk-runtime-python's launcher.py.
This file must stay standard-library only: it runs in the action's process.
"""

import importlib.machinery
import importlib.util
import json
import os
import sys
import traceback

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"


def _load(action_dir, main_name):
    for fname in ("__main__.py", "main__.py", "exec"):
        path = os.path.join(action_dir, fname)
        if os.path.isfile(path):
            break
    else:
        raise ImportError("Missing main/no code to execute.")
    venv = os.path.join(action_dir, "virtualenv")
    if os.path.isdir(venv):
        activate = os.path.join(venv, "bin", "activate_this.py")
        if not os.path.isfile(activate):
            raise ImportError("Invalid virtualenv. Zip file does not include 'activate_this.py'.")
        with open(activate) as fh:
            exec(fh.read(), {"__file__": activate})
    sys.path.insert(0, action_dir)
    spec = importlib.util.spec_from_loader("main__", importlib.machinery.SourceFileLoader("main__", path))
    module = importlib.util.module_from_spec(spec)
    sys.modules["main__"] = module
    spec.loader.exec_module(module)
    fn = getattr(module, main_name, None)
    if not callable(fn):
        raise ImportError(f"the action has no function '{main_name}'")
    return fn


def _end():
    sys.stdout.flush()
    sys.stdout.write(SENTINEL + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stderr.write(SENTINEL + "\n")
    sys.stderr.flush()


def main():
    action_dir, main_name = sys.argv[1], sys.argv[2]
    fd = int(os.environ.pop("__PANFAAS_RESULT_FD", "3"))
    if fd != 3:
        os.dup2(fd, 3)
        os.close(fd)
    out = os.fdopen(3, "w")
    os.chdir(action_dir)
    try:
        fn = _load(action_dir, main_name)
    except BaseException as ex:  # report init failures the way the proxy does (OW_LOG_INIT_ERROR)
        traceback.print_exc()
        _end()
        out.write(json.dumps({"error": f"{type(ex).__name__}: {ex}", "oom": isinstance(ex, MemoryError)}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps({"ok": True}) + "\n")
    out.flush()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0
        args = json.loads(line)
        value = args.pop("value", {})
        for k, v in args.items():
            os.environ["__OW_" + k.upper()] = v if isinstance(v, str) else json.dumps(v)
        try:
            res = fn(value)
            try:
                text = json.dumps(res)
            except (TypeError, ValueError) as ex:
                text = json.dumps({"__launcher_invalid__": f"the result is not JSON ({ex})"})
        except MemoryError:
            res = None
            traceback.print_exc()
            text = json.dumps({"__launcher_oom__": True})
        except BaseException as ex:
            traceback.print_exc()
            text = json.dumps({"error": str(ex)})
        _end()
        out.write(text + "\n")
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
