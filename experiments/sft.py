"""Supervised fine-tuning on conversations: next-token loss on the assistant's tokens only.

  python experiments/sft.py --config=configs/sft/tiny.py --workdir=/tmp/jaxllm/sft \\
      --config.init.checkpoint=/tmp/jaxllm/tiny
  python experiments/sft.py --config=configs/sft/tiny_lora.py --workdir=/tmp/jaxllm/sft_lora \\
      --config.init.checkpoint=/tmp/jaxllm/tiny                      # LoRA adapters only

Running again with the same --workdir resumes from its newest checkpoint. The stage:
jaxllm/recipes/sft.py.
"""

from jaxllm.recipes import sft

if __name__ == "__main__":
  sft.main()
