"""Check the portable wheels `make wheels` built: for each wheel in a directory, its tags, what
`auditwheel show` says, and a run of examples/hello.py in a fresh virtualenv of the matching
Python (installed from the wheel alone, no network, no source tree on sys.path).

    python tests/wheels/check.py target/wheels-dist [--python 3.11=/path/to/python ...]

Exits non-zero when a wheel is missing for an interpreter, has an unexpected tag, does not
install, or does not run. musllinux wheels are checked for their tags and by auditwheel only:
this glibc machine cannot run them.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELLO = os.path.join(ROOT, "examples", "hello.py")


def wheel_tags(path):
    """The Tag: lines of the wheel's WHEEL file, and the file name's own tag triple."""
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/WHEEL"))
        text = z.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def auditwheel_show(path):
    try:
        p = subprocess.run([sys.executable, "-m", "auditwheel", "show", path],
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        return f"auditwheel not run: {e}"
    out = " ".join((p.stdout + p.stderr).split())
    return out if p.returncode == 0 else f"auditwheel failed ({p.returncode}): {out}"


def run_in_fresh_venv(python, wheel):
    with tempfile.TemporaryDirectory(prefix="ferroloop-wheel-") as tmp:
        venv = os.path.join(tmp, "venv")
        subprocess.run([python, "-m", "venv", venv], check=True, timeout=120)
        vpy = os.path.join(venv, "bin", "python")
        subprocess.run([vpy, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--no-index", "--no-deps", wheel], check=True, timeout=300)
        # Run from the temporary directory, so that the source tree's python/ is not importable.
        p = subprocess.run([vpy, "-I", HELLO], capture_output=True, text=True, timeout=120, cwd=tmp)
        v = subprocess.run([vpy, "-I", "-m", "ferroloop", "--version"], capture_output=True,
                           text=True, timeout=60, cwd=tmp)
        where = subprocess.run([vpy, "-I", "-c", "import ferroloop._native as n; print(n.__file__)"],
                               capture_output=True, text=True, timeout=60, cwd=tmp)
        return p, v.stdout.strip() or v.stderr.strip(), where.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dist")
    ap.add_argument("--python", action="append", default=[], metavar="X.Y=PATH",
                    help="interpreter to test the cpXY wheel with")
    args = ap.parse_args()
    pythons = dict(p.split("=", 1) for p in args.python)
    wheels = sorted(f for f in os.listdir(args.dist) if f.endswith(".whl"))
    failures = 0
    print(f"{len(wheels)} wheel(s) in {args.dist}")
    for w in wheels:
        path = os.path.join(args.dist, w)
        tags = wheel_tags(path)
        print(f"\n{w}  ({os.path.getsize(path) // 1024} KiB)\n  tags: {', '.join(tags)}")
        print(f"  auditwheel show: {auditwheel_show(path)}")
        musl = any("musllinux" in t for t in tags)
        if not all("manylinux_2_28" in t or "musllinux_1_2" in t for t in tags):
            print("  FAIL: expected a manylinux_2_28 or musllinux_1_2 platform tag")
            failures += 1
        if musl:
            print("  (musllinux: not run on this glibc machine)")
            continue
        ver = w.split("-")[2]  # cp311
        key = f"{ver[2]}.{ver[3:]}"
        python = pythons.get(key)
        if python is None:
            print(f"  FAIL: no interpreter given for Python {key} (--python {key}=PATH)")
            failures += 1
            continue
        try:
            p, version, native = run_in_fresh_venv(python, path)
        except subprocess.SubprocessError as e:
            print(f"  FAIL: could not install into a fresh virtualenv: {e}")
            failures += 1
            continue
        print(f"  fresh virtualenv ({python}): {version}; native module {native}")
        for line in (p.stdout + p.stderr).strip().splitlines():
            print(f"    | {line}")
        if p.returncode != 0:
            print(f"  FAIL: examples/hello.py exited with {p.returncode}")
            failures += 1
    expected = sorted(pythons)
    built = sorted({f"{w.split('-')[2][2]}.{w.split('-')[2][3:]}" for w in wheels})
    for key in expected:
        if key not in built:
            print(f"FAIL: no wheel for Python {key}")
            failures += 1
    print(f"\n{len(wheels)} wheel(s) checked, {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
