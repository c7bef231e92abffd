"""Convert between Hugging Face model directories and jaxllm run directories.

  python experiments/convert.py --hf_dir=HF_DIR --out=RUN_DIR            # import
  python experiments/convert.py --workdir=RUN_DIR --out=HF_DIR [--dtype=bfloat16] [--step=N]

--hf_dir imports a Llama 2/3, Mistral, Qwen2/2.5, Qwen3 or GPT-2 checkpoint (config.json,
safetensors, tokenizer.json + tokenizer_config.json) into a new run directory: config.json
(config.stage "hf_import"), checkpoints/0 and the tokenizer with its chat format mapped to ours
(chat tokens a base model lacks are added and the embedding grows; see RUN_DIR/import.json).
sample.py, chat.py and evaluate.py take RUN_DIR as --workdir; sft.py, dpo.py, reward_model.py
and rl.py take it as --config.init.checkpoint (or skip this step: --config.init.hf_path=HF_DIR
imports on the fly).

--workdir writes that run's newest checkpoint (LoRA runs merged into their base, int8 runs
dequantized) as a directory that transformers.AutoModelForCausalLM and AutoTokenizer load; the
family is the one the model's architecture matches (--family to choose, e.g. llama for a Mistral
without sliding window). Both directions: jaxllm/runs.py (import_hf, export_hf).
"""

from absl import flags

from jaxllm import cli, runs
from jaxllm.errors import UserError
from jaxllm.interop import hf_config

FLAGS = flags.FLAGS
flags.DEFINE_string("hf_dir", None, "Import: the Hugging Face model directory to read.")
flags.DEFINE_string("workdir", None, "Export: the run directory to read.")
flags.DEFINE_string("out", None, "The new directory: a run (import) or a Hugging Face model "
                    "directory (export).")
flags.DEFINE_integer("step", None, "Export: checkpoint step (default: the newest).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16", "float16"], "Export: tensor dtype.")
flags.DEFINE_enum("family", None, list(hf_config.FAMILIES), "Export: HF family (default: the one "
                  "the architecture matches).")
flags.DEFINE_integer("max_shard_mb", 5000, "Export: safetensors shard size in MB.")
flags.mark_flag_as_required("out")


def main(argv):
  if len(argv) > 1:
    raise UserError(f"convert.py takes no positional arguments (got {argv[1:]}); use "
                    "--hf_dir=HF_DIR --out=RUN_DIR or --workdir=RUN_DIR --out=HF_DIR.")
  if (FLAGS.hf_dir is None) == (FLAGS.workdir is None):
    raise UserError("give exactly one of --hf_dir (import a Hugging Face directory) and "
                    "--workdir (export a run directory).")
  if FLAGS.hf_dir:
    out = runs.import_hf(FLAGS.hf_dir, FLAGS.out)
    print(f"imported {FLAGS.hf_dir} -> {out} ({(out / 'import.json').read_text().strip()})")
  else:
    out = runs.export_hf(FLAGS.workdir, FLAGS.out, step=FLAGS.step, family=FLAGS.family,
                         dtype=FLAGS.dtype, max_shard_bytes=FLAGS.max_shard_mb * 2**20)
    print(f"exported {FLAGS.workdir} -> {out}")


if __name__ == "__main__":
  cli.run(main)
