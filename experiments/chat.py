"""Chat with a trained run: chat template, history, tools (calculator; search with RAG).

  python experiments/chat.py --workdir=/tmp/jaxllm/sft
  python experiments/chat.py --workdir=RUN --rag_index=/tmp/world/kb.jsonl < questions.txt

Reads one user message per line. On a terminal it prompts with "> "; otherwise it answers each
input line, ends each reply with a line "---", and exits at end of input. /reset starts a new
conversation, /quit ends, /help lists these. A one-line banner (the run, its step and chat
template) goes to stderr. When the conversation outgrows the model's context its oldest turns
are left out (said on stderr); a message too long on its own is not answered. --rag_index (a
passages .jsonl file, or a directory saved by Bm25Index.save) puts the top passages before each
question and adds a "search" tool; the world's knowledge base is kb.jsonl in a world run's
data/world-seed0/.
"""

import sys

from absl import flags

from jaxllm import cli, runs
from jaxllm.data import chat as chat_lib
from jaxllm.errors import UserError
from jaxllm.inference import assistant, retrieval, sampler, tools

FLAGS = flags.FLAGS
DELIMITER = "---"
COMMANDS = {"/reset": "(a new conversation)", "/quit": "",
            "/help": "/reset starts a new conversation, /quit ends (so does end of input)"}
cli.define_run_flags()
cli.define_sampling_flags(temperature=0.0, max_new_tokens=256)
flags.DEFINE_string("system", "", "System prompt (tools are listed after it).")
flags.DEFINE_string("rag_index", "", "Passages .jsonl or saved BM25 index directory.")
flags.DEFINE_integer("rag_k", 3, "Passages to retrieve per question.")
flags.DEFINE_integer("rag_budget", 384, "Tokens the passages and question may take at most.")
flags.DEFINE_bool("tools", True, "Let the model call tools.")
flags.DEFINE_bool("show_tools", False, "Print tool calls and results.")


def main(argv):
  del argv
  run = runs.load_run(FLAGS.workdir, FLAGS.step)
  tok = run.tokenizer
  smp = sampler.Sampler(run.model, run.params, tok.pad_id, mesh=run.mesh, rules=run.rules,
                        vocab_limit=tok.vocab_size)
  index = retrieval.Bm25Index.load(FLAGS.rag_index) if FLAGS.rag_index else None
  registry = None
  if FLAGS.tools:
    registry = tools.default_registry(retrieval.retrieval_tool(index, FLAGS.rag_k)
                                      if index else None)
  system = FLAGS.system
  if registry is not None and system:
    system += "\nTools:\n" + registry.describe()
  start = [{"role": "system", "content": system}] if system else []
  history = list(start)
  interactive = sys.stdin.isatty()
  print(f"chat with {FLAGS.workdir} (step {run.step}, a {runs.model_kind(run.config)} run, "
        f"{chat_lib.format_name(tok)} template); /help for commands", file=sys.stderr,
        flush=True)
  turn = 0
  while True:
    if interactive:
      print("> ", end="", flush=True)
    line = sys.stdin.readline()
    if not line:
      break
    question = line.rstrip("\n")
    if not question.strip():
      continue
    command = question.strip().lower()
    if command in COMMANDS:
      if command == "/quit":
        break
      if command == "/reset":
        history = list(start)
      print(COMMANDS[command], flush=True)
      continue
    content = question
    if index is not None:
      passages = [p for p, _ in index.retrieve(question, FLAGS.rag_k)]
      content, _ = retrieval.rag_prompt(question, passages, tok, FLAGS.rag_budget)
    try:  # the oldest turns give way to fit the context; a message too long alone is refused
      history, dropped = assistant.fit_history(
          tok, [*history, {"role": "user", "content": content}], FLAGS.max_new_tokens,
          run.model.cfg.max_seq_len)
    except UserError as e:
      print(f"(not answered: {e})", flush=True)
      if not interactive:
        print(DELIMITER, flush=True)
      continue
    if dropped:
      print(f"({dropped} oldest turn(s) left out to fit the model's context of "
            f"{run.model.cfg.max_seq_len} tokens)", file=sys.stderr, flush=True)
    settings = assistant.SamplingSettings(FLAGS.max_new_tokens, FLAGS.temperature, FLAGS.top_k,
                                          FLAGS.top_p, FLAGS.seed + 1000 * turn)
    added = assistant.respond(smp, tok, history, registry, settings)
    history += added
    for message in added[:-1]:
      if FLAGS.show_tools:
        call = message.get("tool_calls")
        print(f"[tool call] {call[0]}" if call else f"[tool] {message['content']}", flush=True)
    print(added[-1]["content"], flush=True)
    if not interactive:
      print(DELIMITER, flush=True)  # where a reply of several lines ends
    turn += 1


if __name__ == "__main__":
  cli.run(main)
