"""Sample a completion from a trained run's latest checkpoint; prints the completion only.

  python experiments/sample.py --workdir=/tmp/jaxllm/tiny --prompt="Greta Park works as"
  python experiments/sample.py --workdir=RUN --prompt="What is 3 + 4?" --chat --temperature=0

A chat run (SFT, DPO, RL: the run says which) gets the prompt as a user turn of the chat
template and stops at the end of the assistant's turn; a base run (or --nochat) takes it as
plain text, encoded as the tokenizer's own rule says (BOS first for jaxllm's and Llama's
tokenizers, none for GPT-2's: what transformers' `tokenizer(prompt)` gives), and stops at EOS.
Special tokens are not printed unless --raw. A prompt that does not fit the model's context with
--max_new_tokens after it is refused (--truncate keeps its last tokens). --temperature=0 is
greedy decoding. The same in Python: `jaxllm.load_run(RUN).generate([PROMPT])`.
"""

from absl import flags

from jaxllm import cli, runs

FLAGS = flags.FLAGS
cli.define_run_flags()
cli.define_sampling_flags(temperature=1.0, max_new_tokens=128)
flags.DEFINE_string("prompt", None, "Prompt text.")
flags.DEFINE_bool("chat", None, "Render the prompt as a user turn of the chat template (default: "
                  "yes for chat runs, SFT, DPO and RL; --nochat for plain text).")
flags.DEFINE_bool("raw", False, "Print special tokens (chat markers, EOS) as they were sampled.")
flags.DEFINE_bool("truncate", False, "Keep the last tokens of a prompt too long for the model's "
                  "context (default: refuse it).")
flags.mark_flag_as_required("prompt")


def main(argv):
  del argv
  run = runs.load_run(FLAGS.workdir, FLAGS.step)
  (text,) = run.generate([FLAGS.prompt], FLAGS.max_new_tokens, chat=FLAGS.chat,
                         temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                         seed=FLAGS.seed, raw=FLAGS.raw, truncate=FLAGS.truncate)
  print(text)


if __name__ == "__main__":
  cli.run(main)
