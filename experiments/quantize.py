"""Quantize a trained run to int8 weights (weight-only, symmetric, one scale per output channel).

  python experiments/quantize.py --workdir=RUN --out=RUN_INT8
  python experiments/quantize.py --workdir=RUN --out=RUN_INT8 --step=600 --config.prompts=0

Writes RUN_INT8 (a run directory every inference script reads) and RUN_INT8/quantize.json:
memory, held-out perplexity of both models and greedy agreement. The stage:
jaxllm/recipes/quantize.py.
"""

from jaxllm.recipes import quantize

if __name__ == "__main__":
  quantize.main()
