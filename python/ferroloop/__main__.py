"""python -m ferroloop [options] (script.py | -m module | -c code) [args...]

Runs an unmodified program with ferroloop as its event loop. Two routes:

- the event-loop policy (the default on 3.11-3.13): set before the program starts, so its
  ``asyncio.run()``, ``asyncio.new_event_loop()`` and ``asyncio.get_event_loop()`` create
  ferroloop loops;
- ``--no-policy`` (the only route on 3.14+, which deprecates the policy system): the loop
  factory that ``asyncio.run()``/``asyncio.Runner`` and ``asyncio.new_event_loop()`` call is
  ferroloop's; no policy is touched.
"""

import os
import runpy
import sys

USAGE = (
    "usage: python -m ferroloop [--debug] [--no-policy] [--watchdog SECONDS] [--ps] "
    "(script.py | -m module | -c code) [args...]\n"
    "       python -m ferroloop ps [--json] PID    (the tasks of a process started with --ps)\n"
    "       python -m ferroloop --version"
)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "ps":  # the subcommand (a script named ps: python -m ferroloop ./ps)
        from ferroloop import _ps

        return _ps.main(argv[1:])
    debug = False
    no_policy = False
    while argv and argv[0].startswith("-") and argv[0] not in ("-m", "-c"):
        opt = argv.pop(0)
        if opt == "--debug":
            debug = True
        elif opt == "--no-policy":
            no_policy = True
        elif opt == "--watchdog" or opt.startswith("--watchdog="):
            # Production mode for every loop the program creates (FERROLOOP_WATCHDOG).
            value = opt.partition("=")[2] if "=" in opt else (argv.pop(0) if argv else "")
            try:
                from ferroloop._production import parse_threshold

                parse_threshold(value)
            except ValueError:
                print(f"ferroloop: --watchdog needs a number of seconds > 0, not {value!r}",
                      file=sys.stderr)
                return 2
            os.environ["FERROLOOP_WATCHDOG"] = value
        elif opt == "--ps":
            os.environ["FERROLOOP_PS"] = "1"  # answer `python -m ferroloop ps PID`
        elif opt in ("-h", "--help"):
            print(USAGE)
            return 0
        elif opt in ("-V", "--version"):
            print(_version())
            return 0
        else:
            print(f"ferroloop: unknown option {opt}\n{USAGE}", file=sys.stderr)
            return 2
    if not argv or (argv[0] in ("-m", "-c") and len(argv) < 2):
        print(USAGE, file=sys.stderr)
        return 2
    # What Python itself says for a script or module that is not there, before anything runs.
    if argv[0] == "-m":
        missing = _missing_module(argv[1])
        if missing:
            print(f"{sys.executable}: {missing}", file=sys.stderr)
            return 1
    elif argv[0] != "-c" and not os.path.exists(argv[0]):
        path = os.path.abspath(argv[0])
        print(
            f"{sys.executable}: can't open file {path!r}: [Errno 2] No such file or directory",
            file=sys.stderr,
        )
        return 2

    import ferroloop
    from ferroloop import _compat

    if debug:
        # Debug mode for every loop the program creates, coroutine origins tracked from the
        # start (not only while a loop runs), and never-awaited coroutines recorded for the
        # summary printed at exit.
        from ferroloop import _diagnostics

        os.environ["PYTHONASYNCIODEBUG"] = "1"
        _diagnostics.install_process_hooks()
    if no_policy or _compat.POLICY_DEPRECATED:
        ferroloop.install_loop_factory()
    else:
        ferroloop.install()
    if debug:
        import atexit

        # At exit rather than in a `finally`: the interpreter prints an uncaught exception's
        # traceback before it runs atexit handlers, so the summary stays the last thing printed.
        atexit.register(_print_summary)
    if argv[0] == "-m":
        module = argv[1]
        sys.argv = [module] + _server_args(module, argv[2:])
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif argv[0] == "-c":
        code = argv[1]
        sys.argv = ["-c"] + argv[2:]
        sys.path[0] = ""
        import types

        main_module = types.ModuleType("__main__")  # a fresh namespace, as python -c has
        sys.modules["__main__"] = main_module
        exec(compile(code, "<string>", "exec"), main_module.__dict__)
    else:
        script = argv[0]
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0


def _option_value(args, *names):
    """The value of the last ``--name value``/``--name=value`` (or ``-x value``) among args, or
    None; stops at ``--``."""
    value = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for name in names:
            if arg == name and i + 1 < len(args):
                value = args[i + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                value = arg[len(name) + 1:]
    return value


def _server_args(module, args):
    """``-m`` for servers that would not run on ferroloop even with its policy set: the
    arguments that make them, or a note on stderr saying what to pass."""
    if module == "uvicorn":
        # uvicorn creates its loop itself, from its --loop setting ("auto": uvloop when
        # installed, else asyncio's SelectorEventLoop), not through the policy. "none" asks the
        # policy, so it runs on ferroloop too.
        loop = _option_value(args, "--loop")
        if loop is None:
            return ["--loop", "ferroloop:new_event_loop"] + args
        if not loop.startswith("ferroloop") and loop != "none":
            _note(f"uvicorn --loop {loop} creates its own event loop, not ferroloop's: leave "
                  "--loop out, or pass --loop ferroloop:new_event_loop")
    elif module == "hypercorn":
        # hypercorn serves from worker processes it spawns (1 by default): fresh interpreters
        # that never see ferroloop. --workers 0 serves from this process.
        workers = _option_value(args, "-w", "--workers")
        config = _option_value(args, "-c", "--config")
        klass = _option_value(args, "-k", "--worker-class")
        if klass not in (None, "asyncio"):
            _note(f"hypercorn's {klass} worker class does not run on ferroloop: pass "
                  "--worker-class asyncio")
        elif workers is None and config is None and "--reload" not in args:
            return ["--workers", "0"] + args
        elif workers != "0":
            _note("hypercorn runs the app in worker processes it spawns, which start without "
                  "ferroloop: pass --workers 0 (serve from this process), or call "
                  "ferroloop.install() in the module that defines the app")
    return args


def _note(text):
    print(f"ferroloop: {text}", file=sys.stderr)


def _version():
    import platform

    import ferroloop

    return (
        f"ferroloop {ferroloop.__version__} "
        f"({platform.python_implementation()} {platform.python_version()})"
    )


def _missing_module(name):
    """Python's message when ``-m name`` cannot be found, or None when it can."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except ImportError as exc:  # a parent package that is not there
        return f"Error while finding module specification for {name!r} ({exc!r})"
    except ValueError:
        spec = None
    return None if spec is not None else f"No module named {name}"


def _print_summary():
    import gc

    from ferroloop import _diagnostics

    gc.collect()  # report coroutines and tasks that only a cycle still held
    sys.stderr.write(_diagnostics.SUMMARY.format() + "\n")


if __name__ == "__main__":
    sys.exit(main())
