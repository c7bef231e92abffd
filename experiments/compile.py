"""Compile a stage's train step (and the sampler) for a TPU slice from this machine: does the
config fit, how much memory per chip, and what MFU could it reach at best (needs libtpu:
pip install -e '.[tpu]').

  python experiments/compile.py --config=configs/pretrain/llama_1b.py --topology=v5e:2x4
  python experiments/compile.py --config=configs/sft/hf_lora.py:batch=8 \\
      --model=configs/pretrain/llama3_8b.py --topology=v5e:2x4 --out=lora8b_v5e8.json

Exit status 2, with advice, when the step does not fit. The tool: jaxllm/workflow/compile.py.
"""

from jaxllm.workflow import compile as compile_lib

if __name__ == "__main__":
  compile_lib.main()
