"""Convert between Hugging Face model directories and jaxllm run directories.

  python experiments/convert.py --hf_to_jaxllm HF_DIR RUN_DIR
  python experiments/convert.py --jaxllm_to_hf RUN_DIR HF_DIR [--dtype=bfloat16] [--step=N]

--hf_to_jaxllm imports a Llama 2/3, Mistral, Qwen2/2.5, Qwen3 or GPT-2 checkpoint (config.json,
safetensors, tokenizer.json + tokenizer_config.json) into a run directory: config.json,
checkpoints/0 and the tokenizer with its chat format mapped to ours (chat tokens a base model
lacks are added and the embedding grows; see RUN_DIR/import.json). sample.py, chat.py and
evaluate.py take RUN_DIR as --workdir; sft.py, dpo.py, reward_model.py and rl.py take it as
--config.init.checkpoint (or skip this step: --config.init.hf_path=HF_DIR imports on the fly).

--jaxllm_to_hf writes a run's newest checkpoint (LoRA runs merged into their base) as a directory
that transformers.AutoModelForCausalLM and AutoTokenizer load; the family is the one the model's
architecture matches (--family to choose, e.g. llama for a Mistral without sliding window).
"""

import pathlib

from absl import flags

from jaxllm import cli
from jaxllm.errors import UserError
from jaxllm.interop import hf_config, hf_models

FLAGS = flags.FLAGS
flags.DEFINE_bool("hf_to_jaxllm", False, "Import: SRC is a Hugging Face directory, DST a new run "
                  "directory.")
flags.DEFINE_bool("jaxllm_to_hf", False, "Export: SRC is a run directory, DST the Hugging Face "
                  "directory to write.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "Export: tensor dtype.")
flags.DEFINE_enum("family", None, list(hf_config.FAMILIES), "Export: HF family (default: the one "
                  "the architecture matches).")
flags.DEFINE_integer("step", None, "Export: checkpoint step (default: the latest).")
flags.DEFINE_integer("max_shard_mb", 5000, "Export: safetensors shard size in MB.")


def main(argv):
  paths = argv[1:]
  if FLAGS.hf_to_jaxllm == FLAGS.jaxllm_to_hf or len(paths) != 2:
    raise UserError("usage: convert.py --hf_to_jaxllm HF_DIR RUN_DIR | --jaxllm_to_hf RUN_DIR "
                    f"HF_DIR (exactly one direction and two paths; got {paths}).")
  src, dst = (pathlib.Path(p) for p in paths)
  if FLAGS.hf_to_jaxllm:
    out = hf_models.import_run(src, dst)
    print(f"imported {src} -> {out} ({(out / 'import.json').read_text().strip()})")
  else:
    out = hf_models.export_run(src, dst, step=FLAGS.step, family=FLAGS.family, dtype=FLAGS.dtype,
                               max_shard_bytes=FLAGS.max_shard_mb * 2**20)
    print(f"exported {src} -> {out}")


if __name__ == "__main__":
  cli.run(main)
