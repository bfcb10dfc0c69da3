"""Helpers for the executable-level tests: run `mantissa` as a user does, read its outputs with h5py."""
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import h5py
import numpy as np

EXE = os.environ.get("MANTISSA_EXE", "")
SOURCE = os.environ.get("MANTISSA_SOURCE_DIR", "")
LAUNCHER = os.path.join(os.path.dirname(EXE), "mantissa-mpiexec")
QUICKSTART = os.path.join(SOURCE, "inputs", "quickstart.toml")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


class Result:
    def __init__(self, status, output, seconds):
        self.status, self.output, self.seconds = status, output, seconds

    def __repr__(self):
        return f"status {self.status} after {self.seconds:.1f} s; output ends:\n{self.output[-3000:]}"


def run(args, cwd=None, env=None, timeout=900, ranks=1, shell=False):
    """Runs mantissa (through mpiexec when ranks > 1) or, with shell=True, a command line as written."""
    if shell:
        cmd = args
    else:
        cmd = (["mpiexec", "-n", str(ranks)] if ranks > 1 else []) + [EXE] + list(args)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=cwd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout, shell=shell, executable="/bin/bash" if shell else None)
    return Result(p.returncode, p.stdout.decode(errors="replace"), time.time() - t0)


def start(args, ranks=1, launcher=False, env=None):
    """Starts mantissa in the background; returns the Popen (its own session, so signals reach only it)."""
    if launcher:
        cmd = [LAUNCHER, "-n", str(ranks), EXE] + list(args)
    else:
        cmd = (["mpiexec", "-n", str(ranks)] if ranks > 1 else []) + [EXE] + list(args)
    return subprocess.Popen(cmd, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def out_dir(tmp):
    return f'run.output_dir="{tmp}"'


def nonfinite_values(path):
    """Names of the float datasets of an HDF5 file that hold NaN or Inf (with counts)."""
    bad = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.size > 0:
            a = obj[()]
            n = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            if n:
                bad.append(f"{name} ({n})")
    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return bad


def check_h5(test, path, must_be_finite=True):
    test.assertTrue(os.path.isfile(path), f"{path} is missing")
    with h5py.File(path, "r") as f:  # opens (raises on a damaged file)
        test.assertGreater(len(list(f.keys())), 0, f"{path} is empty")
    if must_be_finite:
        test.assertEqual(nonfinite_values(path), [], f"{path} holds NaN/Inf")


def snapshot(directory, skip=("log.txt", "timing.txt")):
    """sha256 of every file below directory, except the logs a restart appends to."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name in skip:
                continue
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, directory)] = hashlib.sha256(f.read()).hexdigest()
    return out


def main():
    if not EXE or not os.path.exists(EXE):
        print("MANTISSA_EXE must name the built mantissa executable", file=sys.stderr)
        sys.exit(2)
    r = unittest.main(exit=False, verbosity=2).result
    failed = len(r.failures) + len(r.errors)
    print(f"{r.testsRun - failed - len(r.skipped)} passed, {failed} failed, {len(r.skipped)} skipped")
    sys.exit(1 if failed or r.testsRun == 0 else 0)
