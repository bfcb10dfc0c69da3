#!/usr/bin/env python3
"""Fault campaign: attacks the built `mantissa` as hostile users and a hostile environment would,
and prints the table of docs/results.md "Faults and bad input". Not part of ctest (minutes of
work); the ctest suite has one deterministic test per failure (tests/exe/test_faults.py).

    /usr/bin/python3 tests/faults/campaign.py build/release/src/mantissa [--seed 1] [--quick]

Each case ends as: clean (a documented status 0/2/3/4/5 and no abort/core/terminate text), crash
(status 1, death by a signal, or abort text), hang (over its time limit), or silent accept (a bad
input taken without an error: a resolved deck that is not valid TOML, or a corrupt file loaded).
"data lost" counts runs whose restart could not reproduce the uninterrupted result."""
import argparse
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib

import h5py
import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("exe")
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--quick", action="store_true", help="fewer cases per area")
args = ap.parse_args()
EXE = os.path.abspath(args.exe)
SRC = os.path.dirname(os.path.abspath(__file__)).rsplit("/tests/faults", 1)[0]
QS = os.path.join(SRC, "inputs", "quickstart.toml")
LAUNCHER = os.path.join(os.path.dirname(EXE), "mantissa-mpiexec")
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
rng = random.Random(args.seed)
N = (lambda full, quick: quick if args.quick else full)
TMP = tempfile.mkdtemp(prefix="mantissa-campaign-")
BAD_TEXT = ("terminate called", "Aborted", "core dumped", "Segmentation fault", "free(): ", "double free")
rows = {}


def tally(area, outcome):
    r = rows.setdefault(area, {"cases": 0, "clean": 0, "crash": 0, "hang": 0, "silent": 0, "lost": 0})
    r["cases"] += 1
    r[outcome] += 1


def run(cmd, timeout=120, env=None, cwd=None):
    try:
        p = subprocess.run(cmd, env=env or ENV, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, start_new_session=True)
        return p.returncode, p.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return None, ""


def judge(rc, out, ok=(0, 2, 3, 4, 5)):
    if rc is None:
        return "hang"
    if rc < 0 or rc not in ok or any(b in out for b in BAD_TEXT):
        return "crash"
    return "clean"


def od(d):
    return ["--set", f'run.output_dir="{d}"']


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def weights(path):
    with h5py.File(path, "r") as f:
        return {k: f["model"][k][()].tobytes() for k in f["model"]}


# ---- decks: mutations of the quickstart deck ------------------------------------------------------
text = open(QS).read()
for i in range(N(200, 40)):
    t = list(text)
    for _ in range(rng.randint(1, 6)):
        k = rng.randrange(len(t))
        op = rng.randrange(4)
        if op == 0:
            del t[k]
        elif op == 1:
            t.insert(k, rng.choice('[]"=\n.#0123456789-e,{}\\\x00\x07 abcz'))
        elif op == 2:
            t[k] = rng.choice('[]"=\n.#0123456789-e,')
        else:
            j = rng.randrange(len(t))
            t.insert(k, "".join(t[j:j + rng.randint(1, 40)]))
    deck = os.path.join(TMP, f"deck{i}.toml")
    with open(deck, "w") as f:
        f.write("".join(t))
    d = os.path.join(TMP, f"fuzz{i}")
    rc, out = run([EXE, "sft", "-i", deck] + od(d) + ["--set", "sft.steps=2", "--set", "sft.eval_problems=4"], 120)
    o = judge(rc, out)
    if o == "clean" and rc == 2 and os.path.exists(d):
        o = "silent"  # an input error must come before any directory
    tally("decks (mutated quickstart, run as sft)", o)

# ---- --set values -----------------------------------------------------------------------------------
keys = ["run.name", "run.output_dir", "model.d_model", "model.n_layer", "model.max_seq", "sft.steps", "sft.batch_size",
        "rollout.temperature", "rollout.top_p", "rollout.top_k", "rl.precisions", "rl.loss", "optimizer.lr",
        "probe.precisions", "task.family", "task.max_digits", "run.seed", "rl.is_cap", "precision.storage"]
values = ['""', '"a\\nb"', '"x\\u0000y"', "1e308", "-1", "0", "nan", "inf", "[]", '["fp16","fp16"]', "[1,2",
          '"../../etc"', "true", "3.5", '"fp7"', "1" * 30, '"\\""', "{a=1}", "'lit'", '"""m"""', "0x10", "1_000"]
for i in range(N(150, 30)):
    kv = f"{rng.choice(keys)}={rng.choice(values)}"
    rc, out = run([EXE, "--print-config", "-i", QS, "--set", kv], 60)
    o = judge(rc, out, ok=(0, 2))
    if o == "clean" and rc == 0:
        body = out.split("\n", 1)[1] if "\n" in out else ""
        try:
            tomllib.loads(body)
        except Exception:
            o = "silent"
    tally("--set overrides (random key = hostile value)", o)

# ---- command line -----------------------------------------------------------------------------------
words = ["run", "sft", "rl", "probe", "study", "curate", "-i", QS, "--set", "--restart", "--print-config", "--version",
         "--list-keys", "--kokkos-threads=abc", "--kokkos-threads=2", "-i", "/dev/zero", "-i", TMP, "--bogus", "x=1",
         "--help", "--restart=/nonexistent.h5"]
for i in range(N(60, 15)):
    argv = [rng.choice(words) for _ in range(rng.randint(0, 5))]
    d = os.path.join(TMP, f"cli{i}")
    rc, out = run([EXE] + argv + od(d) + ["--set", "sft.steps=2", "--set", "rl.steps=1"], 120)
    tally("command line (random words)", judge(rc, out))

# ---- semantic values: each valid TOML, each wrong for the job ---------------------------------------
base_dir = os.path.join(TMP, "base")
rc, out = run([EXE, "sft", "-i", QS] + od(TMP) + ["--set", 'run.name="base"', "--set", "sft.steps=40"])
assert rc == 0, out
base = os.path.join(base_dir, "sft_final.h5")
semantic = [["rl", "--set", "rl.steps=0"], ["probe", "--set", "probe.precisions=[]"],
            ["rl", "--set", "rollout.top_p=1e-300"], ["rl", "--set", 'rl.precisions=["bf16","bf16"]'],
            ["rl", "--set", "rl.prompts_per_step=100000000"], ["sft", "--set", "model.d_model=20000",
                                                               "--set", "model.n_head=100", "--set", "model.n_kv_head=100"],
            ["rl", "--set", "rollout.temperature=0"], ["sft", "--set", "optimizer.lr=1"],
            ["rl", "--set", f'rl.init_checkpoint="{base_dir}/metrics.h5"'], ["rl", "--set", 'rl.init_checkpoint="/"'],
            ["rl", "--set", 'rl.task_set="/dev/null"'], ["sft", "--set", 'run.name="a\\nb"'],
            ["study", "--set", "study.seeds=[]"], ["study", "--set", "study.ranks_per_group=3"],
            ["sft", "--set", "model.max_seq=4"], ["rl", "--set", "rl.samples_per_prompt=1"]]
for i, s in enumerate(semantic):
    cmd, sets = s[0], s[1:]
    extra = ["--set", f'rl.init_checkpoint="{base}"', "--set", f'probe.checkpoint="{base}"',
             "--set", "rl.steps=2", "--set", "rl.prompts_per_step=4", "--set", "rl.updates_per_step=2",
             "--set", "sft.steps=30"]
    d = os.path.join(TMP, f"sem{i}")
    rc, out = run([EXE, cmd, "-i", QS] + od(d) + extra + sets, 300)
    tally("semantic values (valid TOML, wrong for the job)", judge(rc, out))

# ---- checkpoints: byte flips, values, structure (through --restart and init_checkpoint) -------------
ref = os.path.join(TMP, "ck")
rc, out = run([EXE, "sft", "-i", QS] + od(TMP) + ["--set", 'run.name="ck"', "--set", "sft.steps=20",
                                                   "--set", "sft.checkpoint_every=5"],
              env=dict(ENV, MANTISSA_STOP_AT_STEP="15"))
assert rc == 3, out
ck = os.path.join(ref, "checkpoints", "sft_step000015.h5")
pristine = open(ck, "rb").read()
for i in range(N(60, 12)):
    data = bytearray(pristine)
    for _ in range(rng.randint(1, 16)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    bad = os.path.join(TMP, f"flip{i}.h5")
    with open(bad, "wb") as f:
        f.write(data)
    d = os.path.join(TMP, f"flipr{i}")
    rc, out = run([EXE, "rl", "-i", QS] + od(d) + ["--set", f'rl.init_checkpoint="{bad}"', "--set", "rl.steps=1",
                                                   "--set", "rl.prompts_per_step=4", "--set", "rl.updates_per_step=2"])
    o = judge(rc, out)
    if o == "clean" and rc == 0 and bytes(data) != pristine:
        o = "silent"
    tally("checkpoints: 1-16 flipped bits, as [rl] init_checkpoint", o)
for i in range(N(20, 6)):  # --restart with the newest checkpoint damaged: falls back, same result as uninterrupted
    run_dir = os.path.join(TMP, f"rs{i}")
    shutil.copytree(ref, run_dir)
    with open(os.path.join(run_dir, "deck.toml")) as f:
        deck = re.sub(r'^name(\s*)= "ck"', f'name\\1= "rs{i}"', f.read(), count=1, flags=re.M)
    assert f'"rs{i}"' in deck
    with open(os.path.join(run_dir, "deck.toml"), "w") as f:
        f.write(deck)
    p = os.path.join(run_dir, "checkpoints", "sft_step000015.h5")
    data = bytearray(pristine)
    data[rng.randrange(len(data))] ^= 0xFF
    with open(p, "wb") as f:
        f.write(data)
    rc, out = run([EXE, "sft", "-i", os.path.join(run_dir, "deck.toml"), "--restart"])
    o = judge(rc, out)
    if o == "clean" and "step000015" in out.split("resumed from")[-1][:200] and "skipping" not in out:
        o = "silent"
    tally("checkpoints: newest damaged, --restart", o)

# ---- kill -9 at random instants, then --restart: equal to the uninterrupted run -----------------------
sft_args = ["--set", "sft.steps=60", "--set", "sft.checkpoint_every=7", "--set", "sft.log_every=25",
            "--set", "sft.eval_every=20"]
rc, out = run([EXE, "sft", "-i", QS] + od(TMP) + ["--set", 'run.name="whole"'] + sft_args)
assert rc == 0, out
whole = weights(os.path.join(TMP, "whole", "sft_final.h5"))
with h5py.File(os.path.join(TMP, "whole", "metrics.h5"), "r") as f:
    whole_loss = f["sft/loss"][()]
for i in range(N(20, 5)):
    name = f"k{i}"
    p = subprocess.Popen([EXE, "sft", "-i", QS] + od(TMP) + ["--set", f'run.name="{name}"'] + sft_args, env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(rng.uniform(0.3, 4.0))
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    deck = os.path.join(TMP, name, "deck.toml")
    if not os.path.exists(deck):
        rc, out = run([EXE, "sft", "-i", QS] + od(TMP) + ["--set", f'run.name="{name}"'] + sft_args)
    else:
        rc, out = run([EXE, "sft", "-i", deck, "--restart"])
    o = judge(rc, out, ok=(0,))
    if o == "clean":
        final = os.path.join(TMP, name, "sft_final.h5")
        with h5py.File(os.path.join(TMP, name, "metrics.h5"), "r") as f:
            loss = f["sft/loss"][()]
        if weights(final) != whole or not np.array_equal(loss, whole_loss):
            o = "lost"
    tally("kill -9 at a random instant, then --restart", o)

# ---- signals to the launcher (2 ranks) and to one rank -----------------------------------------------
for i, sig in enumerate([signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP] * N(2, 1)):
    name = f"sig{i}"
    p = subprocess.Popen([LAUNCHER, "-n", "2", EXE, "sft", "-i", QS] + od(TMP) +
                         ["--set", f'run.name="{name}"', "--set", "sft.steps=100000", "--set", "sft.eval_every=0"],
                         env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    time.sleep(rng.uniform(3, 6))
    os.kill(p.pid, sig)
    try:
        out = p.communicate(timeout=120)[0].decode(errors="replace")
        rc = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        rc, out = None, ""
    o = judge(rc, out, ok=(3,))
    if o == "clean":
        rc2, out2 = run(["mpiexec", "-n", "2", EXE, "sft", "-i", os.path.join(TMP, name, "deck.toml"), "--restart",
                         "--set", "run.wall_time=1"])
        o = "clean" if rc2 == 3 and "resumed from" in out2 else "lost"
    tally("signals to mantissa-mpiexec (2 ranks): TERM, INT, USR1, HUP", o)

# ---- environment: full disk, unwritable, two jobs, missing/truncated metrics ------------------------
env_cases = 0
disk = os.path.join(TMP, "disk")
os.makedirs(disk)
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=900k", "tmpfs", disk]).returncode == 0:
    for size in ("300k", "600k", "900k", "1500k"):
        subprocess.run(["mount", "-o", f"remount,size={size}", disk])
        shutil.rmtree(os.path.join(disk, "full"), ignore_errors=True)
        rc, out = run([EXE, "sft", "-i", QS] + od(disk) + ["--set", 'run.name="full"', "--set", "sft.steps=30",
                                                            "--set", "sft.checkpoint_every=10"])
        o = judge(rc, out, ok=(0, 4))
        if o == "clean":
            subprocess.run(["mount", "-o", "remount,size=64m", disk])
            rc2, out2 = run([EXE, "sft", "-i", os.path.join(disk, "full", "deck.toml"), "--restart"]) \
                if os.path.exists(os.path.join(disk, "full", "deck.toml")) else (0, "")
            o = "clean" if rc2 == 0 else "lost"
        tally("environment: full disk (tmpfs 300k-1.5M), then restart", o)
    subprocess.run(["umount", disk])
for d in ("/proc/mantissa", "/dev/null/x", "/sys/mantissa"):
    rc, out = run([EXE, "sft", "-i", QS] + od(d) + ["--set", "sft.steps=2"])
    tally("environment: unwritable output location", judge(rc, out, ok=(2, 4)))
for i in range(N(10, 3)):  # two jobs into one run directory
    name = f"two{i}"
    p = subprocess.Popen([EXE, "sft", "-i", QS] + od(TMP) + ["--set", f'run.name="{name}"', "--set", "sft.steps=100000"],
                         env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(rng.uniform(0.0, 1.5))
    rc, out = run([EXE, "sft", "-i", QS] + od(TMP) + ["--set", f'run.name="{name}"', "--set", "sft.steps=3",
                                                       "--set", "run.overwrite=true"])
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    o = judge(rc, out, ok=(0, 2))
    if o == "clean" and rc == 0 and p.returncode == -signal.SIGKILL:
        o = "silent"  # both jobs ran in the one directory
    tally("environment: two jobs started into one run directory", o)
for i, damage in enumerate(["remove", "truncate", "garbage"]):
    name = f"mx{i}"
    rc, out = run([EXE, "sft", "-i", QS] + od(TMP) + ["--set", f'run.name="{name}"', "--set", "sft.steps=20",
                                                       "--set", "sft.checkpoint_every=5"],
                  env=dict(ENV, MANTISSA_STOP_AT_STEP="10"))
    m = os.path.join(TMP, name, "metrics.h5")
    if damage == "remove":
        os.remove(m)
    elif damage == "truncate":
        os.truncate(m, os.path.getsize(m) // 2)
    else:
        with open(m, "r+b") as f:
            f.seek(os.path.getsize(m) // 2)
            f.write(os.urandom(4096))
    rc, out = run([EXE, "sft", "-i", os.path.join(TMP, name, "deck.toml"), "--restart"])
    tally("environment: metrics.h5 removed / truncated / overwritten, then restart", judge(rc, out, ok=(0,)))

# ---- numerics ----------------------------------------------------------------------------------------
num = [["sft", "--set", "optimizer.lr=1", "--set", "sft.steps=200"],
       ["rl", "--set", "rl_optimizer.lr=1", "--set", "rl.steps=60"],
       ["rl", "--set", "rollout.temperature=0", "--set", "rl.steps=3"],
       ["rl", "--set", "rollout.temperature=100", "--set", "rl.steps=3"],
       ["rl", "--set", "rollout.top_k=1", "--set", "rl.steps=3"],
       ["rl", "--set", "rollout.top_p=1e-6", "--set", "rl.steps=3"]]
for i, s in enumerate(num):
    d = os.path.join(TMP, f"num{i}")
    rc, out = run([EXE, s[0], "-i", QS] + od(d) + ["--set", f'rl.init_checkpoint="{base}"', "--set",
                                                   "rl.prompts_per_step=4", "--set", "rl.updates_per_step=2",
                                                   "--set", 'rl.precisions=["fp16"]'] + s[1:], 600)
    o = judge(rc, out, ok=(0, 5))
    m = os.path.join(d, "quickstart", "metrics.h5")
    if o == "clean" and os.path.exists(m):
        with h5py.File(m, "r") as f:
            bad = []
            f.visititems(lambda n, x: bad.append(n) if isinstance(x, h5py.Dataset) and x.dtype.kind == "f"
                         and not np.all(np.isfinite(x[()])) else None)
        if bad:
            o = "silent"
    tally("numerics: fp16 overflow (lr 1), greedy, extreme sampling", o)

# ---- table -------------------------------------------------------------------------------------------
print(f"\nfault campaign, seed {args.seed}{' (quick)' if args.quick else ''}: {EXE}\n")
print("| area | cases | clean errors/stops | crashes | hangs | silent accepts | data lost |")
print("|---|---|---|---|---|---|---|")
tot = {k: 0 for k in ("cases", "clean", "crash", "hang", "silent", "lost")}
for area, r in rows.items():
    print(f"| {area} | {r['cases']} | {r['clean']} | {r['crash']} | {r['hang']} | {r['silent']} | {r['lost']} |")
    for k in tot:
        tot[k] += r[k]
print(f"| **all** | {tot['cases']} | {tot['clean']} | {tot['crash']} | {tot['hang']} | {tot['silent']} | {tot['lost']} |")
shutil.rmtree(TMP, ignore_errors=True)
sys.exit(0 if tot["crash"] + tot["hang"] + tot["silent"] + tot["lost"] == 0 else 1)
