"""Preference optimisation from an SFT run: DPO, conservative DPO, DPOP, IPO, SimPO or ORPO.

  python experiments/dpo.py --config=configs/dpo/tiny.py --workdir=/tmp/jaxllm/dpo \\
      --config.init.checkpoint=/tmp/jaxllm/sft
  ... --config.preference.loss=ipo  (or dpop, simpo, orpo; --config.preference.label_smoothing=0.1
      with dpo is conservative DPO; --config.lora.rank=8 trains LoRA adapters only)

Running again with the same --workdir resumes from its newest checkpoint. The stage:
jaxllm/recipes/dpo.py.
"""

from jaxllm.recipes import dpo

if __name__ == "__main__":
  dpo.main()
