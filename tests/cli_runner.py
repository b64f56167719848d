"""`genstudio ARGS` run inside the test process: what a subprocess would return (exit code, stdout,
stderr) without paying an interpreter + torch start-up per call. A few tests still run the real
entry point in a subprocess (tests/test_mesh.py, tests/test_recipes.py)."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys


def run_genstudio(*args, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    from genstudio import cli
    argv = ["genstudio", *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    code = 0
    try:
        os.environ.update({k: v for k, v in (env or {}).items() if v is not None})
        for k in [k for k, v in (env or {}).items() if v in (None, "")]:
            os.environ.pop(k, None)
        sys.argv = argv
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())
