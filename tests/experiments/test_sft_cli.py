"""experiments/sft.py from a pretrained run: chat data, RAG data, LoRA, exact initialisation,
eval by sampled answers; pretrain.py from a checkpoint (domain adaptation)."""

import json
import math

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxllm import runs
from jaxllm.data import world
from jaxllm.eval import qa as qa_lib
from jaxllm.inference.sampler import Sampler
from tests.experiments.conftest import run_script
from tests.helpers import read_metrics
from tests.models.test_lora import trainable_formula

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

FEW_QUESTIONS = "--config.eval.qa_questions=8"


def test_sft_from_a_pretrained_run(pretrained_run, tmp_path):
  workdir = tmp_path / "sft"
  done = run_script("sft.py", "--config=configs/sft/tiny.py:steps=12", f"--workdir={workdir}",
                    f"--config.init.checkpoint={pretrained_run}", "--config.train.log_every=4",
                    "--config.train.eval_every=12", "--config.train.checkpoint_every=12",
                    FEW_QUESTIONS)
  assert done.returncode == 0, done.stderr
  qa = [m for m in read_metrics(workdir) if "eval/qa_accuracy" in m]
  assert len(qa) == 1 and qa[0]["step"] == 12
  # The eval in the loop is the standalone eval of the saved step: the same 8 held-out
  # questions, one accuracy overall and one per kind.
  config = json.loads((workdir / "config.json").read_text())
  records = world.generate(config["data"]["world_seed"])["eval"]["sft"][:8]
  run = runs.load_run(workdir)
  smp = Sampler(run.model, run.params, run.tokenizer.pad_id, vocab_limit=run.tokenizer.vocab_size)
  want = qa_lib.conversation_accuracy(smp, run.tokenizer, records, max_new_tokens=96)
  assert set(want["by_kind"]) == {"arithmetic", "fact"}
  logged = {k: v for k, v in qa[0].items() if k.startswith("eval/qa_")}
  assert logged == {"eval/qa_accuracy": want["accuracy"],
                    **{f"eval/qa_accuracy_{k}": v for k, v in want["by_kind"].items()}}
  tokenizer = (workdir / "tokenizer.json").read_bytes()
  assert tokenizer == (pretrained_run / "tokenizer.json").read_bytes()
  assert config["model"] == json.loads((pretrained_run / "config.json").read_text())["model"]
  losses = [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m]
  assert len(losses) == 3 and losses[-1] < losses[0]
  # The fine-tuned run samples like any other run directory.
  sample = run_script("sample.py", f"--workdir={workdir}", "--prompt=What is 2 + 3?", "--chat",
                      "--temperature=0", "--max_new_tokens=8")
  assert sample.returncode == 0, sample.stderr


def test_rag_sft_writes_its_conversations(pretrained_run, tmp_path):
  workdir = tmp_path / "rag"
  done = run_script("sft.py", "--config=configs/sft/rag_tiny.py:steps=2,other_worlds=1",
                    f"--workdir={workdir}", f"--config.init.checkpoint={pretrained_run}",
                    "--config.train.eval_every=2", "--config.train.checkpoint_every=2",
                    "--config.eval.qa_questions=0")
  assert done.returncode == 0, done.stderr
  records = [json.loads(line) for line in (workdir / "rag_sft.jsonl").read_text().splitlines()]
  with_passages = [r for r in records if r["messages"][0]["content"].startswith("Passages:")]
  assert 0 < len(with_passages) < len(records)


def test_sft_without_init_is_a_clear_error(tmp_path):
  done = run_script("sft.py", "--config=configs/sft/tiny.py", f"--workdir={tmp_path}")
  assert done.returncode == 2
  assert "config.init.checkpoint and config.init.hf_path are empty" in done.stderr


def _saved_params(checkpoint_dir):
  """name -> shape of the params a checkpoint step holds (from its metadata, nothing loaded)."""
  tree = ocp.StandardCheckpointer().metadata(checkpoint_dir / "state").item_metadata
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree["params"])}


def test_lora_sft_saves_only_adapters_and_samples_merged(pretrained_run, tmp_path):
  workdir = tmp_path / "lora"
  done = run_script("sft.py", "--config=configs/sft/tiny_lora.py:steps=12,rank=4",
                    f"--workdir={workdir}", f"--config.init.checkpoint={pretrained_run}",
                    "--config.train.log_every=4", "--config.train.eval_every=12",
                    "--config.train.checkpoint_every=12", FEW_QUESTIONS)
  assert done.returncode == 0, done.stderr
  assert "trainable parameters" in done.stdout
  saved = _saved_params(workdir / "checkpoints" / "12")
  assert saved and all(name.endswith(("['a']", "['b']")) for name in saved)
  trainable = trainable_formula(runs.load_run(pretrained_run).model.cfg, 4)
  assert sum(math.prod(s) for s in saved.values()) == trainable
  assert f"{trainable:,} trainable parameters" in done.stdout
  losses = [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m]
  assert losses[-1] < losses[0]
  # load_run merges the adapters into the init run's params: only adapted kernels change.
  base, tuned = runs.load_run(pretrained_run), runs.load_run(workdir)
  changed = {jax.tree_util.keystr(p) for p, a in jax.tree_util.tree_leaves_with_path(base.params)
             if not np.array_equal(a, _at(tuned.params, p))}
  assert changed and all("kernel" in name and ("attn" in name or "mlp" in name)
                         for name in changed)
  sample = run_script("sample.py", f"--workdir={workdir}", "--prompt=What is 2 + 3?", "--chat",
                      "--temperature=0", "--max_new_tokens=8")
  assert sample.returncode == 0, sample.stderr


def _at(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def test_init_from_a_checkpoint_restores_it_exactly(pretrained_run, tmp_path):
  # With a learning rate of 0, one AdamW step changes nothing: the saved params must be the
  # pretrained ones bit for bit.
  workdir = tmp_path / "zero_lr"
  done = run_script("sft.py", "--config=configs/sft/tiny.py:steps=1", f"--workdir={workdir}",
                    f"--config.init.checkpoint={pretrained_run}", "--config.optimizer.lr=0.0",
                    "--config.eval.qa_questions=0")
  assert done.returncode == 0, done.stderr
  base, tuned = runs.load_run(pretrained_run), runs.load_run(workdir)
  assert json.loads((workdir / "config.json").read_text())["init"]["step"] == base.step
  for a, b in zip(jax.tree.leaves(base.params), jax.tree.leaves(tuned.params)):
    np.testing.assert_array_equal(a, b)


def test_domain_adaptation_continues_pretraining_on_another_corpus(pretrained_run, tmp_path):
  workdir = tmp_path / "adapt"
  done = run_script("pretrain.py", "--config=configs/pretrain/adapt_tiny.py:steps=10",
                    f"--workdir={workdir}", f"--config.init.checkpoint={pretrained_run}",
                    "--config.train.log_every=1", "--config.train.eval_every=10",
                    "--config.train.eval_at_start=true", "--config.train.checkpoint_every=10")
  assert done.returncode == 0, done.stderr
  assert (workdir / "tokenizer.json").read_bytes() == (pretrained_run /
                                                       "tokenizer.json").read_bytes()
  config = json.loads((workdir / "config.json").read_text())
  assert config["data"]["world_seed"] == 1 and config["init"]["checkpoint"] == str(pretrained_run)
  losses = [m["train/loss"] for m in read_metrics(workdir) if "train/loss" in m]
  # It starts from what the pretrained run knows (a fresh model starts near log(vocab) = 6.9)
  # and keeps learning the new world's text (the held-out loss, on the same batches, falls).
  evals = [m["eval/loss"] for m in read_metrics(workdir) if "eval/loss" in m]
  assert losses[0] < 5.0 and len(evals) == 2 and evals[1] < evals[0]
  pretrained_last = [m["train/loss"] for m in read_metrics(pretrained_run)
                     if "train/loss" in m][-1]
  assert abs(losses[0] - pretrained_last) < 0.5
