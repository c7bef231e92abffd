"""What compression cost: held-out perplexity and greedy agreement of a model against its
compressed copy, the one-shot sparsity curve and its plot, and the texts they are measured on."""

from typing import Any

import numpy as np

from jaxllm import storage
from jaxllm.compress import prune
from jaxllm.data import inputs, readers, world
from jaxllm.errors import ConfigError
from jaxllm.eval import perplexity
from jaxllm.inference import generate
from jaxllm.inference.sampler import Sampler


def held_out_texts(run_config, globs: str = "", limit: int = 0) -> list[str]:
  """Documents of comma-separated globs of .txt/.jsonl(.gz)/.html files, or, for "", the
  held-out pretraining documents of the run's world (the texts the lm eval suite scores)."""
  if globs:
    texts = readers.read_texts(globs)
  else:
    data = run_config.data
    texts = world.generate(data.world_seed, sizes=inputs.world_sizes(data))["eval"]["pretrain"]
  return texts[:limit or None]


def greedy_agreement(model_a, params_a, model_b, params_b, tokenizer, texts: list[str],
                     prompt_tokens: int = 16, new_tokens: int = 32,
                     batch_size: int = 64) -> dict[str, float]:
  """Greedy continuations of the texts' first `prompt_tokens` tokens by both models:
  the fraction of positions with the same token, and of continuations equal throughout."""
  prompts = [tokenizer.encode_prompt(t)[:prompt_tokens] for t in texts]
  outs = [generate.generate(Sampler(model, params, tokenizer.pad_id,
                                    vocab_limit=tokenizer.vocab_size),
                            prompts, new_tokens, batch_size=batch_size)
          for model, params in ((model_a, params_a), (model_b, params_b))]
  same = [np.mean([x == y for x, y in zip(a, b)]) if a else 1.0 for a, b in zip(*outs)]
  exact = [a == b for a, b in zip(*outs)]
  return {"token_agreement": float(np.mean(same)), "sequence_agreement": float(np.mean(exact)),
          "prompts": len(prompts)}


def perplexities(models: dict[str, tuple[Any, Any]], tokenizer, texts: list[str],
                 seq_len: int) -> dict[str, dict[str, float]]:
  """{name: perplexity, bits per byte, tokens} of each (model, params) on the same texts."""
  out = {}
  for name, (model, params) in models.items():
    r = perplexity.evaluate_perplexity(model, params, tokenizer, texts, seq_len=seq_len)
    out[name] = {k: r[k] for k in ("perplexity", "bits_per_byte", "tokens")}
  return out


def one_shot_curve(model, params, cfg, tokenizer, texts: list[str], seq_len: int,
                   sparsities: list[float], targets: str) -> list[dict]:
  """Held-out perplexity after magnitude pruning without fine-tuning: dense, every unstructured
  sparsity, and 2:4 (where the kernels allow it)."""
  points = []
  cases = [("dense", 0.0)] + [("unstructured", s) for s in sparsities] + [("2:4", 0.5)]
  for structure, sparsity in cases:
    pruned = params
    if structure != "dense":
      try:
        pruned = prune.apply_masks(params, prune.magnitude_masks(params, cfg, sparsity,
                                                                 structure, targets))
      except ConfigError as e:  # e.g. a kernel whose inputs are not a multiple of 4
        points.append({"structure": structure, "sparsity": sparsity, "skipped": str(e)})
        continue
    r = perplexity.evaluate_perplexity(model, pruned, tokenizer, texts, seq_len=seq_len)
    points.append({"structure": structure, "sparsity": prune.sparsity_of(pruned, targets)
                   ["targeted"], "perplexity": r["perplexity"]})
  return points


def plot_sparsity(points: list[dict], recovered: list[dict], path, title: str = "",
                  dense_tuned: float | None = None) -> None:
  """Held-out perplexity (log scale) against the sparsity of the pruned kernels: the one-shot
  curve, the 2:4 point, the models after recovery fine-tuning, and (`dense_tuned`) the dense
  model after the same fine-tune, as a line."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  curve = [p for p in points if p["structure"] in ("dense", "unstructured") and "perplexity" in p]
  ax.plot([p["sparsity"] for p in curve], [p["perplexity"] for p in curve], "o-",
          label="unstructured, one-shot")
  for p in points:
    if p["structure"] == "2:4" and "perplexity" in p:
      ax.plot([p["sparsity"]], [p["perplexity"]], "s", color="C1", label="2:4, one-shot")
  labels = set()
  for p in recovered:
    label = f"{p['structure']}, after {p['steps']} recovery steps"
    ax.plot([p["sparsity"]], [p["perplexity"]], "*", markersize=12,
            color="C2" if p["structure"] == "unstructured" else "C3",
            label=None if label in labels else label)
    labels.add(label)
  if dense_tuned is not None:
    ax.axhline(dense_tuned, color="gray", linestyle="--", linewidth=1,
               label="dense, after the same fine-tune")
  ax.set_yscale("log")
  ax.set_xlabel("sparsity of the pruned kernels")
  ax.set_ylabel("held-out perplexity")
  ax.set_title(title or "magnitude pruning", fontsize=9)
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=7)
  fig.tight_layout()
  storage.save_figure(fig, path)
  plt.close(fig)
