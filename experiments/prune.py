"""Magnitude-prune a trained run (global unstructured or 2:4), then fine-tune it to recover with
the pruning masks kept.

  python experiments/prune.py --config=configs/prune/tiny.py --workdir=/tmp/jaxllm/pruned \\
      --config.init.checkpoint=/tmp/jaxllm/tiny
  python experiments/prune.py --config=configs/prune/tiny.py:structure=2:4 --workdir=DIR \\
      --config.init.checkpoint=RUN

Running again with the same --workdir resumes the fine-tune from its newest checkpoint. The
stage: jaxllm/recipes/prune.py.
"""

from jaxllm.recipes import prune

if __name__ == "__main__":
  prune.main()
