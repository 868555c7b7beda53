"""python -m ferroloop [-m module | script.py] [args...]

Runs an unmodified program with ferroloop as its event loop: the event-loop policy is set before
the program starts, so its ``asyncio.run()``, ``asyncio.new_event_loop()`` and
``asyncio.get_event_loop()`` create ferroloop loops.
"""

import os
import runpy
import sys

USAGE = "usage: python -m ferroloop [--debug] (script.py | -m module) [args...]"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0].startswith("-") and argv[0] != "-m":
        opt = argv.pop(0)
        if opt == "--debug":
            debug = True
        elif opt in ("-h", "--help"):
            print(USAGE)
            return 0
        else:
            print(f"ferroloop: unknown option {opt}\n{USAGE}", file=sys.stderr)
            return 2
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        print(USAGE, file=sys.stderr)
        return 2
    import ferroloop

    if debug:
        # Debug mode for every loop the program creates, coroutine origins tracked from the
        # start (not only while a loop runs), and never-awaited coroutines recorded for the
        # summary printed at exit.
        from ferroloop import _diagnostics

        os.environ["PYTHONASYNCIODEBUG"] = "1"
        _diagnostics.install_process_hooks()
    ferroloop.install()
    if debug:
        import atexit

        # At exit rather than in a `finally`: the interpreter prints an uncaught exception's
        # traceback before it runs atexit handlers, so the summary stays the last thing printed.
        atexit.register(_print_summary)
    if argv[0] == "-m":
        module = argv[1]
        sys.argv = [module] + argv[2:]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(script))
        runpy.run_path(script, run_name="__main__")
    return 0


def _print_summary():
    import gc

    from ferroloop import _diagnostics

    gc.collect()  # report coroutines and tasks that only a cycle still held
    sys.stderr.write(_diagnostics.SUMMARY.format() + "\n")


if __name__ == "__main__":
    sys.exit(main())
