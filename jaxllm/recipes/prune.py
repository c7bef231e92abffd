"""Magnitude pruning of a trained run (global unstructured or 2:4), then a recovery fine-tune
with the pruning masks kept.

  python experiments/prune.py --config=configs/prune/tiny.py --workdir=/tmp/jaxllm/pruned \\
      --config.init.checkpoint=/tmp/jaxllm/tiny

1. One-shot curve: held-out perplexity of the init run's params pruned at every sparsity of
   config.prune.sweep (and 2:4), without fine-tuning.
2. The params pruned at config.prune.sparsity (config.prune.structure) are fine-tuned for
   config.train.num_steps on the pretraining data by the training loop; the zeros stay zero
   (config.optimizer.keep_zeros). With config.prune.recover=False the pruned params are written
   as they are.
3. WORKDIR/prune.json (the curve, the pruned and recovered perplexities, the sparsity the final
   params really have) and WORKDIR/sparsity.png (perplexity against sparsity).
WORKDIR is a run directory of stage "prune" whose lineage is the init run's (jaxllm/runs.py).
"""

import functools
import json

import jax
import ml_collections
from jax.experimental import multihost_utils

from jaxllm import cli, rundir, runs, storage
from jaxllm import config as config_lib
from jaxllm.compress import prune
from jaxllm.data import batching, inputs
from jaxllm.errors import ConfigError
from jaxllm.eval import compression, perplexity
from jaxllm.models import Transformer
from jaxllm.objectives import lm
from jaxllm.parallel import mesh as mesh_lib
from jaxllm.train import loop


def default_config(size: str = "tiny") -> ml_collections.ConfigDict:
  """Pruning (config.prune) and the recovery fine-tune on the pretraining text (the base
  fields); the masks are kept by the optimizer (config.optimizer.keep_zeros)."""
  c = config_lib.base_config(size, "prune")
  c.prune = ml_collections.ConfigDict()
  c.prune.sparsity = 0.5  # fraction of the targeted weights removed (2:4: always 0.5)
  c.prune.structure = "unstructured"  # unstructured (global magnitude) | 2:4
  c.prune.targets = prune.DEFAULT_TARGETS  # regex over param paths
  c.prune.recover = True  # fine-tune config.train.num_steps on the pretraining data
  c.prune.sweep = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"  # one-shot sparsities measured first
  c.prune.eval_texts = ""  # globs of held-out files; "": the world's held-out documents
  c.prune.eval_documents = 300
  c.optimizer.keep_zeros = c.prune.get_ref("targets")
  c.train.eval_at_start = True  # the pruned model before recovery
  return c


def validate_fields(config: ml_collections.ConfigDict) -> None:
  """The pruning fields, before anything is loaded."""
  p = config.prune
  if p.structure not in prune.STRUCTURES:
    raise ConfigError(f"config.prune.structure={p.structure!r} is not one of {prune.STRUCTURES}.")
  if not 0.0 < p.sparsity < 1.0:
    raise ConfigError(f"config.prune.sparsity={p.sparsity} must be in (0, 1).")
  if p.structure == "2:4" and p.sparsity != 0.5:
    raise ConfigError(f"config.prune.structure='2:4' removes exactly half of the weights; set "
                      f"config.prune.sparsity=0.5 (it is {p.sparsity}).")
  if p.targets != config.optimizer.keep_zeros:
    raise ConfigError("config.optimizer.keep_zeros must equal config.prune.targets, or the "
                      "fine-tune would regrow pruned weights; override config.prune.targets only.")


def validate(config: ml_collections.ConfigDict):
  """Every field of a pruning run; returns the model config."""
  validate_fields(config)
  return config_lib.validate(config)


@rundir.claims_workdir
def run(config, workdir, hooks=()):
  """Prunes the init run, fine-tunes with the masks kept, and writes the report and plot."""
  mesh_lib.maybe_initialize_distributed(config.distributed)
  runs.require_init(config, "the trained run to prune")
  validate_fields(config)
  init = runs.start_from(config, workdir)
  p = config.prune
  model_cfg = validate(config)
  model = Transformer(model_cfg)
  tokenizer = init.tokenizer
  texts = compression.held_out_texts(config, p.eval_texts, p.eval_documents)
  seq_len = config.data.seq_len
  sweep = [float(s) for s in str(p.sweep).split(",") if s.strip()]
  points = compression.one_shot_curve(model, init.params, model_cfg, tokenizer, texts, seq_len,
                                      sweep, p.targets)
  masks = prune.magnitude_masks(init.params, model_cfg, p.sparsity, p.structure, p.targets)
  pruned = prune.apply_masks(init.params, masks)
  ppl = lambda params: perplexity.evaluate_perplexity(model, params, tokenizer, texts,
                                                      seq_len=seq_len)["perplexity"]
  report = {"init": {"checkpoint": config.init.checkpoint, "step": config.init.step},
            "structure": p.structure, "targets": p.targets, "one_shot": points,
            "pruned": {**prune.sparsity_of(pruned, p.targets), "perplexity": ppl(pruned)}}
  recovered = []
  if p.recover:
    train_sources, weights = inputs.open_sources(config.data, "text", "train", workdir)
    train_iter, eval_batches = inputs.train_and_eval(
        config, workdir, "text", batching.text_example(tokenizer), train_sources, weights)
    loss_fn = functools.partial(lm.lm_loss, z_loss=config.train.z_loss,
                                chunk=config.train.loss_chunk)
    try:
      state = loop.train(config, workdir, model, loss_fn, train_iter, eval_batches,
                         init_params=pruned, hooks=hooks)
    finally:
      train_iter.close()
    final = multihost_utils.process_allgather(state["params"], tiled=True)  # every process
    report["recovered"] = {**prune.sparsity_of(final, p.targets), "perplexity": ppl(final),
                           "steps": config.train.num_steps}
    recovered.append({"structure": p.structure, "steps": config.train.num_steps,
                      "sparsity": report["recovered"]["targeted"],
                      "perplexity": report["recovered"]["perplexity"]})
  else:
    with config.unlocked():
      config.compressed = {"method": f"magnitude pruning, {p.structure}",
                           "source": config.init.checkpoint, "step": config.init.step}
    runs.save_run(workdir, config, pruned, tokenizer, 0)
  if jax.process_index() == 0:
    out = storage.path(workdir)
    rundir.write_text(out / "prune.json", json.dumps(report, indent=1) + "\n")
    compression.plot_sparsity(points, recovered, out / "sparsity.png",
                          f"magnitude pruning of {config.init.checkpoint}")
    _summary(report)
  return report


def _summary(report: dict) -> None:
  for point in report["one_shot"]:
    if "perplexity" in point:
      print(f"one-shot {point['structure']:>12} sparsity {point['sparsity']:.2f}: "
            f"perplexity {point['perplexity']:.3f}")
  for key in ("pruned", "recovered"):
    if key in report:
      r = report[key]
      print(f"{key}: {r['targeted']:.2%} of {r['targeted_weights']:,} targeted weights zero, "
            f"held-out perplexity {r['perplexity']:.3f}")


def main():
  """python -m jaxllm.recipes.prune --config=FILE --workdir=DIR (experiments/prune.py)."""
  cli.run_stage(run, "Config file (see configs/prune/).")


if __name__ == "__main__":
  main()
