"""Faults and bad input, each a failure found by issue 12's fault-injection pass: the job must end
with a clear line and a documented status (2 bad input, 3 resumable stop, 4 I/O, 5 diverged), never
an abort, a core dump or a hang, and nothing a restart needs may be lost. Each test names the
failure it guards; each fails on the code before the fix (see the issue)."""
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

import h5py
import numpy as np

from exe_util import EXE, QUICKSTART, check_h5, main, nonfinite_values, out_dir, run, start

SFT = ["--set", "sft.eval_every=0"]


def tiny(name, tmp, *extra):
    return ["-i", QUICKSTART, "--set", out_dir(tmp), "--set", f'run.name="{name}"'] + list(extra)


def sets(*kv):
    out = []
    for x in kv:
        out += ["--set", x]
    return out


class Faults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp_obj = tempfile.TemporaryDirectory(prefix="mantissa-faults-")
        cls.tmp = cls.tmp_obj.name
        r = run(["sft"] + tiny("base", cls.tmp) + sets("sft.steps=40") + SFT)
        assert r.status == 0, r
        cls.base = os.path.join(cls.tmp, "base", "sft_final.h5")

    @classmethod
    def tearDownClass(cls):
        cls.tmp_obj.cleanup()

    def assertClean(self, r, status, *words):
        self.assertEqual(r.status, status, r)
        for w in ("terminate called", "Aborted", "core dumped", "Segmentation"):
            self.assertNotIn(w, r.output, r)
        for w in words:
            self.assertIn(w, r.output, r)

    def rl(self, name, *extra, ranks=1, env=None, timeout=900):
        args = ["rl"] + tiny(name, self.tmp) + sets(f'rl.init_checkpoint="{self.base}"', "rl.prompts_per_step=4",
                                                   "rl.updates_per_step=2", 'rl.precisions=["fp16"]') + list(extra)
        return run(args, ranks=ranks, env=env, timeout=timeout)

    # ---- failure 0: the fresh-run crash (a brand-new series read as if resumed)
    def test_fresh_sft_has_its_eval_series(self):
        with h5py.File(os.path.join(self.tmp, "base", "metrics.h5"), "r") as f:
            self.assertEqual(list(f["sft/step"][()]), list(range(1, 41)))
            self.assertGreaterEqual(len(f["sft_eval/step"]), 2)

    # ---- failure 1 (exe level): a corrupt newest checkpoint is skipped, the previous one used
    def test_byte_flip_in_newest_checkpoint_falls_back(self):
        r = run(["sft"] + tiny("flip", self.tmp) + sets("sft.steps=30", "sft.checkpoint_every=5") + SFT,
                env=dict(os.environ, **{"MANTISSA_STOP_AT_STEP": "20"}, **_mpi_env()))
        self.assertClean(r, 3, "MANTISSA_STOP_AT_STEP")
        ckpt = os.path.join(self.tmp, "flip", "checkpoints", "sft_step000020.h5")
        with open(ckpt, "rb") as f:
            data = bytearray(f.read())
        rng = random.Random(7)
        with h5py.File(ckpt, "r") as f:  # a byte inside the weights' stored data
            d = f["model/embed"].id
            offset = d.get_offset() if d.get_offset() is not None else d.get_chunk_info(0).byte_offset
        data[offset + rng.randrange(64)] ^= 0x5A
        with open(ckpt, "wb") as f:
            f.write(data)
        r = run(["sft", "-i", os.path.join(self.tmp, "flip", "deck.toml"), "--restart"])
        self.assertClean(r, 0, "skipping unusable checkpoint", "sft_step000015.h5")

    # ---- failure 2: overwrite leaves no old file behind
    def test_overwrite_starts_from_nothing(self):
        d = os.path.join(self.tmp, "ow")
        os.makedirs(os.path.join(d, "checkpoints"))
        shutil.copy(self.base, os.path.join(d, "rl_bf16_final.h5"))
        shutil.copy(self.base, os.path.join(d, "checkpoints", "sft_step000999.h5"))
        r = run(["sft"] + tiny("ow", self.tmp) + sets("sft.steps=5", "run.overwrite=true") + SFT)
        self.assertClean(r, 0)
        self.assertFalse(os.path.exists(os.path.join(d, "rl_bf16_final.h5")))
        self.assertFalse(os.path.exists(os.path.join(d, "checkpoints", "sft_step000999.h5")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, ".ow.replaced")))

    # ---- failure 3: kill -9 right after a periodic checkpoint, intervals not aligned
    def test_kill9_after_checkpoint_with_unaligned_intervals_restarts(self):
        name = "k9"
        args = ["sft"] + tiny(name, self.tmp) + sets("sft.steps=400", "sft.checkpoint_every=7", "sft.log_every=50") + SFT
        p = start(args)
        ckdir = os.path.join(self.tmp, name, "checkpoints")
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            if os.path.isdir(ckdir) and any(n.endswith(".h5") and ".tmp." not in n for n in os.listdir(ckdir)):
                break
            time.sleep(0.005)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        self.assertTrue(os.listdir(ckdir), "no checkpoint was written before the kill")
        r = run(["sft", "-i", os.path.join(self.tmp, name, "deck.toml"), "--restart"])
        self.assertClean(r, 0, "resumed from")
        with h5py.File(os.path.join(self.tmp, name, "metrics.h5"), "r") as f:
            steps = f["sft/step"][()]
        self.assertEqual(list(steps), list(range(1, 401)), "the series has gaps or duplicates")

    # ---- failure 4: duplicate precisions; one failing rank
    def test_duplicate_precisions_are_an_input_error_on_2_ranks(self):
        r = self.rl("dup", "--set", 'rl.precisions=["fp16","fp16"]', ranks=2, timeout=120)
        self.assertClean(r, 2, "twice")
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "dup")))

    def test_one_failing_rank_ends_every_rank(self):
        args = ["sft"] + tiny("onefails", self.tmp) + sets("sft.steps=200") + SFT
        cmd = ["mpiexec", "-n", "1", EXE] + args + [":", "-n", "1", "env", "MANTISSA_FAIL_AT_STEP=5", EXE] + args
        t0 = time.time()
        p = subprocess.run(cmd, env=_mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("rank 1: internal error (please report): injected failure after step 5", out)
        self.assertLess(time.time() - t0, 150, "the job hung")

    # ---- failure 5: a full disk (file-size limit) and unwritable locations
    def test_full_disk_is_an_io_error_and_the_run_restarts(self):
        # A 700 KiB tmpfs: the first checkpoint (~1 MB) cannot be written (ENOSPC). Needs root (mount).
        disk = os.path.join(self.tmp, "disk")
        os.makedirs(disk)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", disk],
                          stderr=subprocess.DEVNULL).returncode != 0:
            self.skipTest("cannot mount a small tmpfs here (needs root): full-disk case not run")
        try:
            args = ["sft", "-i", QUICKSTART, "--set", out_dir(disk), "--set", 'run.name="full"'] + sets(
                "sft.steps=30", "sft.checkpoint_every=10") + SFT
            r = run(args)
            self.assertClean(r, 4, "I/O error", "No space left on device")
            # The disk grows (a user frees space): the same run restarts and completes.
            subprocess.run(["mount", "-o", "remount,size=64m", disk], check=True)
            r = run(["sft", "-i", os.path.join(disk, "full", "deck.toml"), "--restart"])
            self.assertClean(r, 0, "sft done")
            check_h5(self, os.path.join(disk, "full", "metrics.h5"))
            check_h5(self, os.path.join(disk, "full", "sft_final.h5"))
        finally:
            subprocess.run(["umount", disk])

    def test_unwritable_output_location(self):
        r = run(["sft", "-i", QUICKSTART, "--set", 'run.output_dir="/proc/mantissa-test"'] + sets("sft.steps=2"))
        self.assertClean(r, 2, "cannot create the output directory")

    def test_damaged_metrics_file_is_moved_aside_on_restart(self):
        name = "dm"
        r = run(["sft"] + tiny(name, self.tmp) + sets("sft.steps=20", "sft.checkpoint_every=5") + SFT,
                env=dict(_mpi_env(), MANTISSA_STOP_AT_STEP="10"))
        self.assertClean(r, 3)
        path = os.path.join(self.tmp, name, "metrics.h5")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 3)
        r = run(["sft", "-i", os.path.join(self.tmp, name, "deck.toml"), "--restart"])
        self.assertClean(r, 0, "moved to")
        self.assertTrue(os.path.exists(path + ".damaged.1"))
        check_h5(self, path)

    # ---- failure 6: SIGTERM / SIGINT to the launcher (what a cancel or ^C does)
    def test_sigterm_to_mpiexec_on_2_ranks_stops_with_status_3_and_resumes(self):
        for sig, name in ((signal.SIGTERM, "term"), (signal.SIGINT, "int")):
            args = ["sft"] + tiny(name, self.tmp) + sets("sft.steps=100000", "sft.log_every=1000") + SFT
            p = start(args, ranks=2, launcher=True)
            log = os.path.join(self.tmp, name, "log.txt")
            deadline = time.time() + 120
            while time.time() < deadline and not (os.path.exists(log) and "sft eval" in _read(log)):
                time.sleep(0.2)
            time.sleep(1.0)
            os.kill(p.pid, sig)
            out = p.communicate(timeout=300)[0].decode(errors="replace")
            self.assertEqual(p.returncode, 3, out)
            self.assertIn("after writing the checkpoint", out)
            r = run(["sft", "-i", os.path.join(self.tmp, name, "deck.toml"), "--restart",
                     "--set", "run.wall_time=1"], ranks=2)  # resumes, then stops again at once (wall time)
            self.assertClean(r, 3, "resumed from", "wall-time")

    # ---- failure 7: aborts that must be input errors (status 2) before any work
    def test_bad_values_are_input_errors(self):
        cases = [
            (["rl"] + tiny("x", self.tmp) + sets(f'rl.init_checkpoint="{self.base}"', "rl.steps=0"), "[rl] steps"),
            (["probe"] + tiny("x", self.tmp) + sets(f'probe.checkpoint="{self.base}"', "probe.precisions=[]"),
             "[probe] precisions"),
            (["rl"] + tiny("x", self.tmp) + sets(f'rl.init_checkpoint="{self.base}"', "rollout.top_p=1e-300"),
             "[rollout] top_p"),
            (["sft", "-i", "/dev/zero"], "not a regular file"),
            (["sft", "-i", self.tmp], "is a directory"),
            (["sft", "-i", QUICKSTART, "--kokkos-threads=abc"], "--kokkos-threads"),
            (["sft"] + tiny("x", self.tmp) + sets('run.name="a\nb"'), "[run] name"),
            (["sft"] + tiny("x", self.tmp) + sets("model.d_model=16384", "model.n_head=128", "model.n_kv_head=128"),
             "GiB"),
        ]
        rl_ckpt_dir = os.path.join(self.tmp, "rlck")
        r = self.rl("rlck", "--set", "rl.steps=1")
        self.assertClean(r, 0)
        cases.append((["rl"] + tiny("y", self.tmp) + sets(
            f'rl.init_checkpoint="{os.path.join(rl_ckpt_dir, "rl_fp16_final.h5")}"'), "not a base policy"))
        for args, word in cases:
            r = run(args)
            self.assertClean(r, 2, word)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "x")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "y")))

    def test_two_jobs_into_one_run_directory(self):
        args = ["sft"] + tiny("two", self.tmp) + sets("sft.steps=100000", "sft.log_every=1000") + SFT
        p = start(args)
        log = os.path.join(self.tmp, "two", "log.txt")
        deadline = time.time() + 120
        while time.time() < deadline and not os.path.exists(log):
            time.sleep(0.1)
        r = run(["sft"] + tiny("two", self.tmp) + sets("run.overwrite=true", "sft.steps=5") + SFT)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        self.assertClean(r, 2, "another mantissa job is running")

    # ---- failure 8: fp16 overflow contained
    def test_sft_divergence_stops_with_status_5_and_finite_metrics(self):
        r = run(["sft"] + tiny("lr1", self.tmp) + sets("sft.steps=200", "optimizer.lr=1.0",
                                                        "optimizer.schedule=\"constant\"") + SFT)
        self.assertClean(r, 5, "diverged")
        self.assertEqual(nonfinite_values(os.path.join(self.tmp, "lr1", "metrics.h5")), [])

    def test_rl_huge_lr_and_greedy_write_finite_metrics(self):
        r = self.rl("rlbig", "--set", "rl.steps=60", "--set", "rl_optimizer.lr=1.0", "--set", 'precision.storage="fp16"')
        self.assertIn(r.status, (0, 5), r)
        self.assertNotIn("tokenizer", r.output)
        self.assertEqual(nonfinite_values(os.path.join(self.tmp, "rlbig", "metrics.h5")), [])
        r = self.rl("greedy", "--set", "rl.steps=3", "--set", "rollout.temperature=0")
        self.assertClean(r, 0)
        self.assertEqual(nonfinite_values(os.path.join(self.tmp, "greedy", "metrics.h5")), [])

    # ---- failure 9: a restart on another rank count says so
    def test_restart_on_other_rank_count_warns(self):
        r = run(["sft"] + tiny("ranks", self.tmp) + sets("sft.steps=20", "sft.checkpoint_every=5") + SFT,
                env=dict(_mpi_env(), MANTISSA_STOP_AT_STEP="10"), ranks=2)
        self.assertClean(r, 3)
        r = run(["sft", "-i", os.path.join(self.tmp, "ranks", "deck.toml"), "--restart"])
        self.assertClean(r, 0, "started on 2 rank(s) and continues on 1")


def _read(path):
    with open(path) as f:
        return f.read()


def _mpi_env():
    from exe_util import ENV
    return dict(ENV)


if __name__ == "__main__":
    main()
