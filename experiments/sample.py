"""Sample a completion from a trained run's latest checkpoint; prints the completion only.

  python experiments/sample.py --workdir=/tmp/jaxllm/tiny --prompt="Greta Park works as"
  python experiments/sample.py --workdir=RUN --prompt="What is 3 + 4?" --chat --temperature=0

--chat wraps the prompt in the chat template as a user turn (for SFT runs); otherwise the
prompt is plain text, encoded as the tokenizer's own rule says (BOS first for jaxllm's and
Llama's tokenizers, none for GPT-2's: what transformers' `tokenizer(prompt)` gives).
--temperature=0 is greedy decoding.
"""

from absl import flags

from jaxllm import cli, runs
from jaxllm.data import chat
from jaxllm.errors import UserError
from jaxllm.inference import sampler

FLAGS = flags.FLAGS
cli.define_run_flags()
cli.define_sampling_flags(temperature=1.0, max_new_tokens=128)
flags.DEFINE_string("prompt", None, "Prompt text.")
flags.DEFINE_bool("chat", False, "Render the prompt as a user turn of the chat template.")
flags.mark_flag_as_required("prompt")


def main(argv):
  del argv
  run = runs.load_run(FLAGS.workdir, FLAGS.step)
  tok = run.tokenizer
  if FLAGS.chat:
    ids, _ = chat.render_chat(tok, [{"role": "user", "content": FLAGS.prompt}],
                              add_generation_prompt=True)
    stops = chat.stop_ids(tok)
  else:
    ids = tok.encode_prompt(FLAGS.prompt)  # BOS first where the tokenizer's rule says so
    if not ids:
      raise UserError("--prompt is empty and the tokenizer starts prompts with no BOS token; "
                      "pass a non-empty --prompt.")
    stops = [] if tok.eos_id is None else [tok.eos_id]
  smp = sampler.Sampler(run.model, run.params, tok.pad_id, vocab_limit=tok.vocab_size)
  out = smp.generate([ids], FLAGS.max_new_tokens, temperature=FLAGS.temperature,
                     top_k=FLAGS.top_k, top_p=FLAGS.top_p, stop_tokens=stops, seed=FLAGS.seed)
  completion = out.completions()[0]
  if completion and completion[-1] in stops:
    completion = completion[:-1]
  print(tok.decode(completion))


if __name__ == "__main__":
  cli.run(main)
