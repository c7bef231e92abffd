"""experiments/quantize.py and experiments/prune.py on the briefly pretrained run: the int8 copy
samples like the float model and takes LoRA adapters over its int8 weights (QLoRA); pruning
writes its curve and plot and the recovery fine-tune keeps the masks."""

import json

import jax
import numpy as np
import pytest

from jaxllm import runs
from jaxllm.compress import prune
from tests.experiments.conftest import run_script
from tests.helpers import train_losses

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses


def test_quantized_run_samples_like_the_float_one_and_takes_qlora(pretrained_run, tmp_path):
  out = tmp_path / "int8"
  done = run_script("quantize.py", f"--workdir={pretrained_run}", f"--out={out}",
                    "--config.max_texts=100", "--config.prompts=32")
  assert done.returncode == 0, done.stderr
  report = json.loads((out / "quantize.json").read_text())
  assert report["bytes"]["saved_fraction"] > 0.7
  assert abs(report["perplexity_change"]) < 0.02, report
  assert report["greedy"]["token_agreement"] >= 0.9, report["greedy"]
  run = runs.load_run(out)
  assert run.model.cfg.quant == "int8"
  assert {str(x.dtype) for x in jax.tree.leaves(run.params)} == {"int8", "float32"}
  # QLoRA: LoRA adapters over the int8 run; load_run merges them into its dequantized weights.
  qlora = tmp_path / "qlora"
  done = run_script("sft.py", "--config=configs/sft/tiny_qlora.py:steps=8,rank=4",
                    f"--workdir={qlora}", f"--config.init.checkpoint={out}",
                    "--config.train.log_every=2", "--config.train.eval_every=8",
                    "--config.train.checkpoint_every=8", "--config.eval.qa_questions=8")
  assert done.returncode == 0, done.stderr
  losses = train_losses(qlora)
  assert losses[8] < losses[2]
  merged = runs.load_run(qlora)
  assert merged.model.cfg.quant == "none"
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(merged.params))


def test_pruning_writes_its_curve_and_the_fine_tune_keeps_the_masks(pretrained_run, tmp_path):
  workdir = tmp_path / "pruned"
  done = run_script("prune.py", "--config=configs/prune/tiny.py:steps=6,structure=2:4",
                    f"--workdir={workdir}", f"--config.init.checkpoint={pretrained_run}",
                    "--config.prune.sweep=0.3,0.8", "--config.prune.eval_documents=40",
                    "--config.train.log_every=3", "--config.train.eval_every=6",
                    "--config.train.checkpoint_every=6", "--config.train.eval_batches=1")
  assert done.returncode == 0, done.stderr
  report = json.loads((workdir / "prune.json").read_text())
  curve = {(p["structure"], round(p["sparsity"], 2)): p["perplexity"] for p in report["one_shot"]}
  assert set(curve) == {("dense", 0.0), ("unstructured", 0.3), ("unstructured", 0.8),
                        ("2:4", 0.5)}
  assert max(curve[("dense", 0.0)], curve[("unstructured", 0.3)]) < curve[("unstructured", 0.8)]
  assert report["pruned"]["targeted"] == report["recovered"]["targeted"] == 0.5
  assert (workdir / "sparsity.png").stat().st_size > 10_000
  final = runs.load_run(workdir).params
  for name, mask in prune.magnitude_masks(runs.load_run(pretrained_run).params,
                                          runs.load_run(workdir).model.cfg, 0.5, "2:4").items():
    kernel = np.asarray(prune.targeted(final, name + "$")[name])
    assert np.all(kernel[~mask] == 0) and np.all(kernel[mask] != 0), name
