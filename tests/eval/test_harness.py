"""The lm-evaluation-harness backend: request by request equal to lm-eval's own `hf` backend on
the same run exported to transformers (a multiple-choice task, a generation task with stop
strings, a perplexity task), rolling log-likelihoods equal to jaxllm's perplexity, the chat
template equal to transformers', and the command writing into the run."""

import glob
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import lm_eval
import numpy as np
import pytest
import transformers
from lm_eval.tasks import TaskManager

from jaxllm import config as config_lib
from jaxllm import runs, storage
from jaxllm.data import chat
from jaxllm.data.tokenizer import train_tokenizer
from jaxllm.errors import UserError
from jaxllm.eval import harness, perplexity
from jaxllm.models import params as params_lib
from jaxllm.models.config import ModelConfig
from jaxllm.models.transformer import Transformer
from tests.helpers import ROOT

TEXTS = ["The baker opened the shop at dawn, and the town came for bread and fish.",
         "Question: what is two and two?\nAnswer: four.\n\nQuestion: and three and one?",
         "Greta Park works as a pilot; she flew to Perth in 2024 and back in May.",
         "Once upon a time the people of the river town sold boats every week."] * 6

MC = [{"question": "The baker opened the", "choices": [" shop", " river", " blue", " seven"],
       "label": 0},
      {"question": "Greta Park works as a", "choices": [" pilot", " baker", " town"], "label": 0},
      {"question": "Question: what is two and two?\nAnswer:", "choices": [" four", " three"],
       "label": 0},
      {"question": "Once upon a", "choices": [" time", " week", " boat", " May"], "label": 0}]
GEN = [{"prompt": p, "answer": "x"} for p in
       ("Once upon a time", "The people of", "Question: what is two and two?\nAnswer:",
        "Greta", "She flew to", "bread and")]
PPL = [{"text": TEXTS[0]}, {"text": " ".join(TEXTS[:4])}]


def _task(name, rows, directory, body):
  data = directory / f"{name}.jsonl"
  data.write_text("".join(json.dumps(r) + "\n" for r in rows))
  (directory / f"{name}.yaml").write_text(
      f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
      f"test_split: test\n{body}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A run with varied output (random weights, larger than the init's), its transformers
  export, and a folder of three local tasks."""
  os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
  root = tmp_path_factory.mktemp("harness")
  tokenizer = train_tokenizer(TEXTS, vocab_size=400)
  config = config_lib.base_config("tiny", "pretrain")
  config.model.vocab_size = tokenizer.vocab_size
  config.model.max_seq_len = 64
  model = Transformer(ModelConfig.from_dict(config.model))
  params = params_lib.unbox(params_lib.init_params_fn(model, 8)(jax.random.key(3)))
  params = jax.tree.map(lambda x: x * 4.0, params)  # a peaked, varied next-token distribution
  runs.save_run(root / "run", config, params, tokenizer, 7)
  runs.export_hf(root / "run", root / "hf", dtype="float32")
  tasks = root / "tasks"
  tasks.mkdir()
  greedy = runs.load_run(root / "run").generate(["Once upon a"], max_new_tokens=1, chat=False)[0]
  mc = [*MC, {"question": "Once upon a", "choices": [greedy, " week"], "label": 1}]
  _task("tiny_mc", mc, tasks, 'output_type: multiple_choice\ndoc_to_text: "{{question}}"\n'
        'doc_to_choice: "{{choices}}"\ndoc_to_target: "{{label}}"\ntarget_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n")
  _task("tiny_gen", GEN, tasks, 'output_type: generate_until\ndoc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{answer}}"\ngeneration_kwargs:\n  until: ["o ", "\\n", "."]\n'
        "  max_gen_toks: 20\n  do_sample: false\nmetric_list:\n  - metric: exact_match\n")
  _task("tiny_ppl", PPL, tasks, 'output_type: loglikelihood_rolling\ndoc_to_text: ""\n'
        'doc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n'
        "  - metric: byte_perplexity\n  - metric: bits_per_byte\n")
  return root


def _evaluate(model, tasks, root, **kwargs):
  out = lm_eval.simple_evaluate(model=model, tasks=tasks, log_samples=True,
                                task_manager=TaskManager(include_path=str(root / "tasks")),
                                **kwargs)
  return out["results"], {task: sorted(rows, key=lambda r: r["doc_id"])
                          for task, rows in out["samples"].items()}


def _responses(samples, task):
  """Each request's raw answer: a (log-prob, greedy) pair, a log-likelihood or a string."""
  return [resp[0] for row in samples[task] for resp in row["resps"]]


@pytest.mark.slow
def test_jaxllm_agrees_with_lm_evals_hf_backend_request_by_request(setup):
  ours, ours_rows = _evaluate(harness.JaxllmLM(run=str(setup / "run"), batch_size=4),
                              ["tiny_mc", "tiny_gen", "tiny_ppl"], setup)
  hf_args = {"pretrained": str(setup / "hf"), "dtype": "float32"}
  theirs, theirs_rows = _evaluate("hf", ["tiny_mc", "tiny_gen"], setup, model_args=hf_args,
                                  device="cpu", batch_size=4)
  # lm-eval's hf backend puts a second BOS before a rolling window when the tokenizer adds one
  # itself; without it, it scores the text as jaxllm does (after one BOS)
  ppl, ppl_rows = _evaluate("hf", ["tiny_ppl"], setup, device="cpu", batch_size=4,
                            model_args={**hf_args, "add_bos_token": False})
  theirs.update(ppl)
  theirs_rows.update(ppl_rows)

  pairs = list(zip(_responses(ours_rows, "tiny_mc"), _responses(theirs_rows, "tiny_mc")))
  assert len(pairs) == sum(len(d["choices"]) for d in MC) + 2
  for (logp, greedy), (hf_logp, hf_greedy) in pairs:
    assert abs(float(logp) - float(hf_logp)) <= 1e-4 and greedy == hf_greedy
  assert pairs[-2][0][1] in (True, "True")  # the model's own greedy continuation
  for ll, hf_ll in zip(_responses(ours_rows, "tiny_ppl"), _responses(theirs_rows, "tiny_ppl")):
    assert abs(float(ll) - float(hf_ll)) <= 1e-4
  generated = _responses(ours_rows, "tiny_gen")
  assert generated == _responses(theirs_rows, "tiny_gen")
  assert all(generated) and len(set(generated)) > 2, generated  # varied, none empty
  for task in ("tiny_mc", "tiny_gen", "tiny_ppl"):
    for metric, value in theirs[task].items():
      if isinstance(value, float):
        assert ours[task][metric] == pytest.approx(value, rel=1e-5, abs=1e-6), (task, metric)


def test_rolling_log_likelihood_is_jaxllms_perplexity(setup):
  run = runs.load_run(setup / "run")
  lm = harness.JaxllmLM(run=str(setup / "run"), batch_size=4, max_length=16)
  texts, total = [], lambda t: len(run.tokenizer.encode(t))
  for text in [TEXTS[0], " ".join(TEXTS[:2]), " ".join(TEXTS[:4])]:
    words = text.split(" ")  # cut to a whole number of 16-token windows: the windows then agree
    while total(" ".join(words)) % 16:
      words.pop()
    texts.append(" ".join(words))
  assert all(total(t) >= 32 for t in texts[1:])  # two windows or more

  class Request:
    def __init__(self, text):
      self.args = (text,)

  ours = lm.loglikelihood_rolling([Request(t) for t in texts], disable_tqdm=True)
  project = perplexity.evaluate_perplexity(run.model, run.params, run.tokenizer, texts,
                                           seq_len=16, batch_size=4)
  expected = [-bpb * math.log(2) * len(t.encode()) for bpb, t in
              zip(project["bits_per_byte_by_text"], texts)]
  np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)


def test_the_chat_template_is_the_exported_tokenizers(setup):
  lm = harness.JaxllmLM(run=str(setup / "run"))
  tok = transformers.AutoTokenizer.from_pretrained(setup / "hf")
  history = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "What is two and two?"},
             {"role": "assistant", "content": "Four."}, {"role": "user", "content": "And three?"}]
  text = lm.apply_chat_template(history)
  assert text == tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
  ids, _ = chat.render_chat(lm.tokenizer, history, add_generation_prompt=True)
  assert lm.tok_encode(text) == ids  # special-token strings read as the tokens
  prefilled = history[:3]
  assert lm.apply_chat_template(prefilled, add_generation_prompt=False) == tok.apply_chat_template(
      prefilled, tokenize=False, continue_final_message=True)
  assert lm.chat_template(True) == tok.chat_template
  hf = transformers.AutoModelForCausalLM.from_pretrained(setup / "hf")
  assert lm.get_model_info()["model_num_parameters"] == hf.num_parameters()


def test_bad_model_args_are_clear_errors(setup, tmp_path):
  with pytest.raises(UserError, match="pretrained: not an argument of the jaxllm model"):
    harness.JaxllmLM(run=str(setup / "run"), pretrained="x")
  with pytest.raises(UserError, match="run=RUN is missing"):
    harness.JaxllmLM()
  with pytest.raises(UserError, match="batch_size"):
    harness.JaxllmLM(run=str(setup / "run"), batch_size=0)
  with pytest.raises(UserError, match=str(tmp_path)):
    harness.JaxllmLM(run=str(tmp_path))


@pytest.mark.slow
def test_the_command_writes_results_into_the_run_beside_eval_json(setup):
  run = setup / "run"
  (run / "eval.json").write_text('{"kept": true}\n')
  env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
  done = subprocess.run(
      [sys.executable, "-m", "jaxllm.eval.harness", "--model", "jaxllm", "--model_args",
       f"run={run},batch_size=4", "--tasks", "tiny_mc", "--include_path", str(setup / "tasks")],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"wrote {run / 'lm_eval'}" in done.stdout
  (results,) = glob.glob(str(run / "lm_eval" / "results_*.json"))
  assert json.loads(pathlib.Path(results).read_text())["results"]["tiny_mc"]["acc,none"] >= 0
  assert (run / "eval.json").read_text() == '{"kept": true}\n'
  bad = subprocess.run(
      [sys.executable, "-m", "jaxllm.eval.harness", "--model", "jaxllm", "--model_args",
       "run=/no/such/run", "--tasks", "tiny_mc", "--include_path", str(setup / "tasks")],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("error: ")
  assert "/no/such/run" in bad.stderr.strip().splitlines()[-1]


def test_generation_stops_inside_the_loop(setup):
  """A stop string ends the row in the compiled loop: fewer tokens generated than asked."""
  lm = harness.JaxllmLM(run=str(setup / "run"), batch_size=2)
  prompt = lm.tok_encode("Once upon a time")
  free = lm._sampler.generate([prompt], 20, temperature=0.0)
  text = lm.tok_decode(free.completions()[0])
  stop = text[len(text) // 2:len(text) // 2 + 2]
  out = lm._sampler.generate([prompt], 20, temperature=0.0, stop_table=lm._stop_table([stop]))
  assert stop in lm.tok_decode(out.completions()[0]) and out.lengths[0] < free.lengths[0]


def test_results_of_a_gs_run_go_to_its_local_folder_then_up_beside_it(gcs, monkeypatch, tmp_path):
  monkeypatch.setenv("JAXLLM_CACHE", str(tmp_path / "cache"))
  run = gcs.url("harness", "run")

  class Args:
    model, output_path, model_args = "jaxllm", None, {"run": run}

  output = pathlib.Path(harness._default_output(Args))
  assert output == storage.local_folder(run) / "lm_eval" / "results.json"
  assert harness._default_output(type("Other", (Args,), {"model": "hf"})) is None
  assert harness._default_output(type("Given", (Args,), {"output_path": "x.json"})) is None
  output.parent.mkdir(parents=True)
  (output.parent / "results_T1.json").write_text("{}")
  (output.parent / "samples_tiny_mc_T1.jsonl").write_text("{}\n")
  harness._upload(run, output.parent)
  remote = storage.path(run) / "lm_eval"
  assert sorted(p.name for p in remote.iterdir()) == ["results_T1.json",
                                                      "samples_tiny_mc_T1.jsonl"]
  assert (remote / "results_T1.json").read_text() == "{}"
