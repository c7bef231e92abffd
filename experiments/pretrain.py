"""Pretrain a decoder LM with next-token prediction (or a bidirectional one with masked LM).

  python experiments/pretrain.py --config=configs/pretrain/tiny.py --workdir=/tmp/jaxllm/tiny
  python experiments/pretrain.py --config=configs/pretrain/mlm_tiny.py --workdir=/tmp/jaxllm/mlm

Any config field can be overridden: --config.train.num_steps=50 --config.model.num_layers=2.
--config.init.checkpoint=RUN continues pretraining from RUN's params with its model config and
tokenizer (domain adaptation; configs/pretrain/adapt_tiny.py). Running again with the same
--workdir resumes from its newest checkpoint. The stage: jaxllm/recipes/pretrain.py.
"""

from jaxllm.recipes import pretrain

if __name__ == "__main__":
  pretrain.main()
