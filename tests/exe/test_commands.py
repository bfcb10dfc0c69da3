"""Every command of the executable run as a user runs it, on fresh run directories: exit status 0,
every documented output present and readable with h5py, no NaN or Inf in any metric, and a
--restart of a finished run that changes nothing. The README's "Using it" commands run as written.
These tests fail if the main job breaks for a newcomer, as the fresh-run crash of issue 12 did."""
import os
import re
import tempfile
import unittest

from exe_util import EXE, LAUNCHER, QUICKSTART, SOURCE, check_h5, main, out_dir, run, snapshot

TINY_SFT = ["--set", "sft.steps=60", "--set", "sft.eval_every=30", "--set", "sft.log_every=20"]


class Commands(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="mantissa-exe-")
        cls.dir = cls.tmp.name
        # One tiny base policy for the stage tests (a fresh `sft`: the command that crashed).
        cls.sft = run(["sft", "-i", QUICKSTART, "--set", out_dir(cls.dir), "--set", 'run.name="sft"'] + TINY_SFT,
                      ranks=2)
        cls.base = os.path.join(cls.dir, "sft", "sft_final.h5")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_sft_fresh(self):
        self.assertEqual(self.sft.status, 0, self.sft)
        d = os.path.join(self.dir, "sft")
        for f in ("deck.toml", "log.txt", "timing.txt"):
            self.assertTrue(os.path.isfile(os.path.join(d, f)), f)
        check_h5(self, os.path.join(d, "metrics.h5"))
        check_h5(self, self.base)
        self.assertIn("sft done", self.sft.output)

    def test_sft_continues_an_init_checkpoint_to_its_total(self):
        # sft.steps is the warm start's total: from a 60-step checkpoint, 80 means 20 more (once it ran 80 more).
        self.assertEqual(self.sft.status, 0, self.sft)
        common = ["sft", "-i", QUICKSTART, "--set", out_dir(self.dir), "--set", f'sft.init_checkpoint="{self.base}"',
                  "--set", "sft.eval_every=30", "--set", "sft.log_every=10"]
        r = run(common + ["--set", 'run.name="sft_more"', "--set", "sft.steps=80"], ranks=1)
        self.assertEqual(r.status, 0, r)
        self.assertIn("continuing from", r.output)
        steps = [int(m) for m in re.findall(r"sft step\s+(\d+)/80", r.output)]
        self.assertEqual(steps, [70, 80], r.output)
        check_h5(self, os.path.join(self.dir, "sft_more", "sft_final.h5"))
        r = run(common + ["--set", 'run.name="sft_none"', "--set", "sft.steps=60"], ranks=1)
        self.assertEqual(r.status, 2, r)
        self.assertIn("sft.steps above 60", r.output)

    def test_curate_rl_probe_study(self):
        self.assertEqual(self.sft.status, 0, self.sft)
        common = ["--set", out_dir(self.dir)]
        r = run(["curate", "-i", QUICKSTART, "--set", 'run.name="curate"', "--set", f'curate.checkpoint="{self.base}"',
                 "--set", "curate.candidates=64", "--set", "curate.samples=8", "--set", "curate.min_pass=0.0",
                 "--set", "curate.max_pass=1.0"] + common, ranks=2)
        self.assertEqual(r.status, 0, r)
        task_set = os.path.join(self.dir, "curate", "task_set.h5")
        check_h5(self, task_set)
        r = run(["rl", "-i", QUICKSTART, "--set", 'run.name="rl"', "--set", f'rl.init_checkpoint="{self.base}"',
                 "--set", f'rl.task_set="{task_set}"', "--set", "rl.steps=4", "--set", "rl.prompts_per_step=4",
                 "--set", "rl.updates_per_step=2"] + common, ranks=2)
        self.assertEqual(r.status, 0, r)
        d = os.path.join(self.dir, "rl")
        check_h5(self, os.path.join(d, "metrics.h5"))
        for p in ("fp16", "bf16"):
            check_h5(self, os.path.join(d, f"rl_{p}_final.h5"))
        self.assertIn("RL summary", r.output)
        r = run(["probe", "-i", QUICKSTART, "--set", 'run.name="probe"', "--set", f'probe.checkpoint="{self.base}"',
                 "--set", "probe.problems=8"] + common, ranks=2)
        self.assertEqual(r.status, 0, r)
        check_h5(self, os.path.join(self.dir, "probe", "probe.h5"), must_be_finite=False)  # -inf log-probs are data
        self.check_probe_replayable(os.path.join(self.dir, "probe", "probe.h5"))
        r = run(["study", "-i", QUICKSTART, "--set", 'run.name="study"', "--set", f'rl.init_checkpoint="{self.base}"',
                 "--set", "rl.steps=3", "--set", "rl.prompts_per_step=4", "--set", "rl.updates_per_step=2",
                 "--set", 'study.precisions=["fp16","bf16+fp8_e4m3"]', "--set", 'study.losses=["pg_seq_is"]'] + common,
                ranks=2)
        self.assertEqual(r.status, 0, r)
        self.check_study(os.path.join(self.dir, "study"), r.output)

    def check_study(self, d, output):
        # A pair name ('+') through the directories, the HDF5 groups, study.h5 and the plot script.
        import h5py
        import numpy as np
        check_h5(self, os.path.join(d, "study.h5"))
        with h5py.File(os.path.join(d, "study.h5"), "r") as f:
            names = [s.decode() for s in f["name"][()]]
            precisions = [s.decode() for s in f["precision"][()]]
            self.assertEqual(names, ["fp16_pg_seq_is_seed1234", "bf16+fp8_e4m3_pg_seq_is_seed1234"])
            self.assertEqual([s.decode() for s in f["status"][()]], ["ran", "ran"])
            for key in ("collapse_step", "collapse_step_fraction", "skipped_updates", "exact_kl_start",
                        "exact_kl_end", "abs_prob_diff_mean", "abs_prob_diff_start", "abs_prob_diff_end"):
                self.assertEqual(f[key].shape, (2,), key)
            self.assertEqual(float(f.attrs["collapse_drop"]), 0.10)
            dp = f["abs_prob_diff_mean"][()]
            self.assertGreater(dp[1], 10 * dp[0], "an FP8 rollout's |pi - mu| is far above fp16's")
            skipped = f["skipped_updates"][()]
        for name, p, k in zip(names, precisions, skipped):
            with h5py.File(os.path.join(d, name, "metrics.h5"), "r") as m:
                self.assertEqual(k, int(np.sum(m[f"rl/{p}/steps/skipped_updates"][()])), name)
            check_h5(self, os.path.join(d, name, f"rl_{p}_final.h5"))
        self.assertIn("bf16+fp8_e4m3_pg_seq_is_seed1234", output)
        try:
            import matplotlib  # noqa: F401  (the study plots only where /usr/bin/python3 has it)
        except ImportError:
            return
        for f in ("study_curves.png", "study_mismatch.png", "study_table.md"):
            self.assertTrue(os.path.isfile(os.path.join(d, f)), f)
        with open(os.path.join(d, "study_table.md")) as f:
            table = f.read()
        self.assertIn("| bf16+fp8_e4m3 pg_seq_is seed 1234 |", table)
        self.assertEqual(len([l for l in table.splitlines() if l.startswith("| ")]), 3, table)  # header + 2 rows

    def check_probe_replayable(self, path):
        # The file alone names every sampled token and its prompt: the per-token arrays line up with the
        # per-sequence lengths, the prompts with their lengths, and every id is a token of the vocabulary.
        import h5py
        import numpy as np
        with h5py.File(path, "r") as f:
            for name, g in f["probe"].items():
                length = g["sequences/length"][()]
                n = int(length.sum())
                for d in ("tokens/token", "tokens/logmu", "tokens/logpi", "tokens/position", "tokens/sequence"):
                    self.assertEqual(g[d].shape, (n,), f"{name}/{d}")
                plen = g["sequences/prompt_length"][()]
                self.assertEqual(g["prompts/token"].shape, (int(plen.sum()),), name)
                self.assertEqual(g["sequences/id"].shape, length.shape, name)
                ids = np.concatenate([g["tokens/token"][()], g["prompts/token"][()]])
                self.assertTrue(((ids >= 0) & (ids < 40)).all(), name)  # the tokenizer's 40 ids (quickstart: vocab = 0)
                # tokens/sequence repeats sequences/id over each response
                self.assertTrue(np.array_equal(g["tokens/sequence"][()], np.repeat(g["sequences/id"][()], length)), name)

    def test_run_quickstart_and_restart_changes_nothing(self):
        # The README's first command, on 2 ranks through the launcher it uses.
        cmd = [LAUNCHER, "-n", "2", EXE, "run", "-i", QUICKSTART, "--set", out_dir(self.dir)]
        r = run(" ".join(f"'{c}'" for c in cmd), shell=True)
        self.assertEqual(r.status, 0, r)
        d = os.path.join(self.dir, "quickstart")
        for f in ("deck.toml", "log.txt", "timing.txt", "rl_curves.png"):
            self.assertTrue(os.path.isfile(os.path.join(d, f)), f)
        for f in ("metrics.h5", "sft_final.h5", "task_set.h5", "rl_fp16_final.h5", "rl_bf16_final.h5"):
            check_h5(self, os.path.join(d, f))
        self.assertIn("RL summary", r.output)
        before = snapshot(d, skip=("log.txt", "timing.txt", "rl_curves.png"))
        r = run(["run", "-i", os.path.join(d, "deck.toml"), "--restart"], ranks=2)
        self.assertEqual(r.status, 0, r)
        self.assertIn("completed before the restart", r.output)
        self.assertEqual(snapshot(d, skip=("log.txt", "timing.txt", "rl_curves.png")), before,
                         "a --restart of a finished run changed its files")


class ReadmeCommands(unittest.TestCase):
    def test_using_it_runs_as_written(self):
        """Every command line of README's "Using it" section, verbatim, from a copy of the repository
        root's layout (build/, inputs/, src/ linked), so its runs/ stay out of the checkout."""
        with open(os.path.join(SOURCE, "README.md")) as f:
            text = f.read()
        section = text.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
        lines = [l[4:] for l in section.splitlines() if l.startswith("    ") and l.strip()]
        self.assertGreater(len(lines), 5, "README's Using it section has no commands")
        # The README names build/release; here that is the build under test (<build dir>/src/mantissa), so
        # an OpenMP or CUDA build dir runs the commands with its own executable.
        build_dir = os.path.dirname(os.path.dirname(EXE))
        with tempfile.TemporaryDirectory(prefix="mantissa-readme-") as tmp:
            os.makedirs(os.path.join(tmp, "build"))
            os.symlink(build_dir, os.path.join(tmp, "build", "release"))
            for name in ("inputs", "src"):
                os.symlink(os.path.join(SOURCE, name), os.path.join(tmp, name))
            for line in lines:
                r = run(line, cwd=tmp, shell=True)
                self.assertEqual(r.status, 0, f"README command failed: {line}\n{r}")
            for f in ("runs/sft_small/sft_final.h5", "runs/probe/probe.h5", "runs/quickstart/metrics.h5",
                      "runs/rl_losses/metrics.h5"):
                check_h5(self, os.path.join(tmp, f), must_be_finite=not f.endswith("probe.h5"))


if __name__ == "__main__":
    main()
