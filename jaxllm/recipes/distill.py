"""Knowledge distillation: a fresh (smaller) student trained on a frozen teacher run's logits and
on the text.

  python experiments/distill.py --config=configs/distill/tiny.py --workdir=/tmp/jaxllm/distill \\
      --config.teacher.checkpoint=/tmp/jaxllm/tiny

The loss mixes the forward KL to the teacher at temperature config.distill.temperature (times
T^2) with the data's cross-entropy (jaxllm/objectives/distill.py). The student is config.model
(vocab_size 0: the teacher's); it reads the pretraining text of config.data with the teacher's
tokenizer (copied into WORKDIR). The teacher's params are frozen (jaxllm/models/frozen.py):
placed on the mesh, no optimizer state, not checkpointed. eval/perplexity is the student's plain
perplexity; eval/kl its KL to the teacher and eval/teacher_nll the teacher's own loss.
"""

import functools

import jax
import ml_collections

from jaxllm import cli, rundir, runs, storage
from jaxllm import config as config_lib
from jaxllm.data import batching, chat, inputs
from jaxllm.errors import ConfigError, UserError
from jaxllm.models import Transformer
from jaxllm.objectives import distill
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.parallel import sharding as sharding_lib
from jaxllm.train import loop


def default_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Knowledge distillation (experiments/distill.py, jaxllm/objectives/distill.py): a fresh
  student (config.model) trained on a frozen teacher run's logits and on the pretraining text,
  with the teacher's tokenizer."""
  c = config_lib.base_config(size, "distill")
  c.model.vocab_size = 0  # 0: the teacher's (student and teacher must share the vocabulary)
  c.teacher = ml_collections.ConfigDict()
  c.teacher.checkpoint = ""  # the teacher: a run directory (pretraining or SFT)
  c.teacher.step = -1  # its checkpoint step; -1: the latest (the run records the step it used)
  c.distill = ml_collections.ConfigDict()
  # loss = kd_weight * T^2 * KL(teacher^T || student^T) + (1 - kd_weight) * CE(data);
  # kd_weight = 0 trains the same student on the data alone (the baseline). T 1 and 0.9 were
  # the best measured on the world; T 2 ended worse than the data alone (docs/benchmarks.md).
  c.distill.temperature = 1.0
  c.distill.kd_weight = 0.9
  return c


def validate_fields(config: ml_collections.ConfigDict) -> None:
  """The distillation stage's own fields, before anything is loaded."""
  if not config.teacher.checkpoint:
    raise ConfigError("config.teacher.checkpoint is empty; set it to the teacher's run "
                      "directory (--config.teacher.checkpoint=RUN_DIR, e.g. a pretraining run).")
  distill.check_weights(config.distill.temperature, config.distill.kd_weight)
  if config.init.checkpoint or config.init.get("hf_path"):
    raise ConfigError("config.init.checkpoint / config.init.hf_path are set, but a distilled "
                      "student starts from fresh params; the run to learn from is "
                      "config.teacher.checkpoint. Clear config.init.")
  if config.data.tokenizer:
    raise ConfigError(f"config.data.tokenizer={config.data.tokenizer!r}: the student uses its "
                      "teacher's tokenizer (config.teacher.checkpoint's tokenizer.json, copied "
                      "into the workdir); leave config.data.tokenizer empty.")


def validate(config: ml_collections.ConfigDict):
  """Every field of a distillation run; returns the student's model config."""
  validate_fields(config)
  return config_lib.validate(config)


def load_teacher(config) -> runs.Run:
  """config.teacher's run (a language model), its step recorded in config.teacher.step."""
  t = config.teacher
  if not (storage.path(t.checkpoint) / "config.json").is_file():
    raise UserError(f"config.teacher.checkpoint={t.checkpoint!r} is not a run directory (it has "
                    "no config.json); give the teacher's run directory, e.g. the --workdir of "
                    "experiments/pretrain.py.")
  # Read onto the student's mesh, where the loop keeps the frozen teacher.
  teacher = runs.load_run(t.checkpoint, None if t.step < 0 else t.step,
                          mesh=mesh_lib.make_mesh(config.mesh),
                          rules=sharding_lib.rules_from_config(config.mesh.rules))
  if runs.is_reward_model(teacher.config):
    raise UserError(f"config.teacher.checkpoint={t.checkpoint!r} is a reward-model run; the "
                    "teacher must be a language model (a pretraining or SFT run).")
  t.step = teacher.step
  return teacher


@rundir.claims_workdir
def run(config, workdir, hooks=()):
  """Loads the teacher, builds the student and the text data, and runs the training loop."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  validate_fields(config)
  teacher = load_teacher(config)
  tokenizer = teacher.tokenizer
  if jax.process_index() == 0:
    chat.save_pretrained(tokenizer, workdir)
  if config.model.vocab_size == 0:
    config.model.vocab_size = teacher.model.cfg.vocab_size
  inputs.check_vocab(config, tokenizer.vocab_size)
  model_cfg = validate(config)
  model = distill.with_teacher(Transformer(model_cfg), teacher.model)
  if config.data.path:  # one text file as a token stream
    train_iter, eval_batches = inputs.stream_train_and_eval(config, tokenizer)
  else:
    train_iter, eval_batches = inputs.train_and_eval(config, workdir, "text",
                                                     batching.text_example(tokenizer))
  loss_fn = functools.partial(distill.distill_loss, temperature=config.distill.temperature,
                              kd_weight=config.distill.kd_weight, z_loss=config.train.z_loss,
                              chunk=config.train.loss_chunk)
  try:
    return loop.train(config, workdir, model, loss_fn, train_iter, eval_batches, hooks=hooks,
                      frozen_params=teacher.params)
  finally:
    train_iter.close()


def main():
  """python -m jaxllm.recipes.distill --config=FILE --workdir=DIR (experiments/distill.py)."""
  cli.run_stage(run, "Config file (see configs/distill/).")


if __name__ == "__main__":
  main()
