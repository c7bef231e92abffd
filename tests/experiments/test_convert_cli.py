"""experiments/convert.py both ways; an imported model samples, evaluates and fine-tunes like a run.

The Hugging Face directories hold a tiny random model and a tokenizer built like the family's
(tests/interop/test_hf_tokenizer.py), so nothing is downloaded.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxllm import config as config_lib
from jaxllm import runs
from jaxllm.data import chat
from jaxllm.errors import ConfigError
from jaxllm.eval import suites
from jaxllm.recipes import dpo, evaluate, pretrain, reward_model, rl, sft
from tests.experiments.conftest import run_script
from tests.interop import test_hf_tokenizer as tokenizer_builders

pytestmark = pytest.mark.slow  # runs the scripts as subprocesses

CONVERSATION = [{"role": "user", "content": "What is 2 + 3?"},
                {"role": "assistant", "content": "5"}]


def _hf_directory(root, family: str):
  """A tiny random `family` model with that family's tokenizer, as a Hugging Face directory."""
  directory = tokenizer_builders.BUILDERS[family](root / family)
  vocab = len(transformers.AutoTokenizer.from_pretrained(directory))
  torch.manual_seed(0)
  if family == "qwen2":
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=True))
  else:
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=vocab, n_positions=256, n_embd=32, n_layer=2, n_head=4))
  model.eval().save_pretrained(directory)  # config.json replaces the tokenizer builder's
  return directory, model


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
  return _hf_directory(tmp_path_factory.mktemp("hf"), "qwen2")


def _logits(model, params, tokens):
  return np.asarray(model.apply({"params": params}, jnp.asarray(tokens)))


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.numpy()


def test_import_cli_gives_a_run_that_samples_and_evaluates(qwen, tmp_path):
  directory, hf = qwen
  done = run_script("convert.py", f"--hf_dir={directory}", f"--out={tmp_path / 'run'}")
  assert done.returncode == 0, done.stderr
  imported = json.loads((tmp_path / "run" / "import.json").read_text())
  assert imported["family"] == "qwen2" and imported["added_tokens"] == []
  run = runs.load_run(tmp_path / "run")
  tokens = np.random.default_rng(0).integers(0, hf.config.vocab_size, (2, 24))
  assert np.abs(_logits(run.model, run.params, tokens) - _hf_logits(hf, tokens)).max() <= 1e-4
  assert chat.format_of(run.tokenizer).start == "<|im_start|>" and run.tokenizer.bos_id is None

  sample = run_script("sample.py", f"--workdir={tmp_path / 'run'}", "--prompt=What is 2 + 3?",
                      "--chat", "--temperature=0", "--max_new_tokens=6")
  assert sample.returncode == 0, sample.stderr
  text = "Greta Park works as a baker. She lives in Oslo."
  (tmp_path / "held_out.txt").write_text(text)
  config = evaluate.default_config()
  config.suites = ("lm",)
  config.lm.texts = str(tmp_path / "held_out.txt")
  result = suites.evaluate(run, config)  # what evaluate.py runs
  ids = run.tokenizer.encode(text)  # Qwen has no BOS: every token after the first is scored
  with torch.no_grad():
    logp = torch.log_softmax(hf(torch.tensor([ids])).logits[0, :-1], dim=-1)
  nll = -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean().item()
  assert result["stage"] == "hf_import" and result["suites"]["lm"]["tokens"] == len(ids) - 1
  assert result["suites"]["lm"]["perplexity"] == pytest.approx(np.exp(nll), rel=1e-4)

  again = run_script("convert.py", f"--hf_dir={directory}", f"--out={tmp_path / 'run'}")
  assert again.returncode == 2 and "import into a new directory" in again.stderr
  both = run_script("convert.py", f"--hf_dir={directory}", f"--workdir={tmp_path / 'run'}",
                    f"--out={tmp_path / 'other'}")
  assert both.returncode == 2 and "exactly one of --hf_dir" in both.stderr


def test_lora_sft_from_hf_path_then_export_loads_in_transformers(qwen, tmp_path):
  directory, _ = qwen
  workdir = tmp_path / "sft"
  done = run_script("sft.py", "--config=configs/sft/tiny_lora.py:steps=4", f"--workdir={workdir}",
                    f"--config.init.hf_path={directory}", "--config.train.eval_every=4",
                    "--config.train.checkpoint_every=4", "--config.eval.qa_questions=0",
                    "--config.data.seq_len=128")
  assert done.returncode == 0, done.stderr
  config = json.loads((workdir / "config.json").read_text())
  assert config["model"]["qkv_bias"] and config["init"]["step"] == 0
  run = runs.load_run(workdir)  # adapters merged into the imported base

  done = run_script("convert.py", f"--workdir={workdir}", f"--out={tmp_path / 'out'}")
  assert done.returncode == 0, done.stderr
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  tokens = np.random.default_rng(1).integers(0, run.model.cfg.vocab_size, (2, 24))
  assert np.abs(_hf_logits(hf, tokens) - _logits(run.model, run.params, tokens)).max() <= 1e-4
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  ids = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)
  assert list(ids) == chat.render_chat(run.tokenizer, CONVERSATION)[0]


def test_base_model_gets_chat_tokens_and_exports_with_them(tmp_path):
  directory, hf = _hf_directory(tmp_path, "gpt2")
  runs.import_hf(directory, tmp_path / "run")
  imported = json.loads((tmp_path / "run" / "import.json").read_text())
  assert "<|im_start|>" in imported["added_tokens"]
  run = runs.load_run(tmp_path / "run")
  vocab = hf.config.vocab_size
  assert run.model.cfg.vocab_size == vocab + len(imported["added_tokens"])
  tokens = np.random.default_rng(0).integers(0, vocab, (2, 24))
  ours = _logits(run.model, run.params, tokens)
  assert np.abs(ours[..., :vocab] - _hf_logits(hf, tokens)).max() <= 1e-4
  assert (ours[..., vocab:].max(-1) < ours[..., :vocab].max(-1)).all()  # new rows: mean logit

  runs.export_hf(tmp_path / "run", tmp_path / "out")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  assert reloaded.config.vocab_size == run.model.cfg.vocab_size
  assert np.abs(_hf_logits(reloaded, tokens) - ours).max() <= 1e-4
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  assert list(tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=False)) == \
      chat.render_chat(run.tokenizer, CONVERSATION)[0]


def test_a_trained_run_exports_with_its_own_tokenizer(pretrained_run, tmp_path):
  run = runs.load_run(pretrained_run)
  runs.export_hf(pretrained_run, tmp_path / "out", dtype="float32")
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  assert type(hf) is transformers.LlamaForCausalLM
  tokens = np.random.default_rng(0).integers(0, run.model.cfg.vocab_size, (2, 32))
  assert np.abs(_hf_logits(hf, tokens) - _logits(run.model, run.params, tokens)).max() <= 1e-4
  tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  text = "Greta Park works as a baker in 2024; café ☕."
  assert tok.encode(text, add_special_tokens=False) == run.tokenizer.encode(text)


@pytest.mark.parametrize("make_config", [pretrain.default_config, sft.default_config,
                                         reward_model.default_config, dpo.default_config,
                                         rl.default_config])
def test_every_stage_starts_from_hf_path_on_its_mesh(qwen, make_config, tmp_path):
  directory, hf = qwen
  config = make_config("tiny")
  config.init.hf_path = str(directory)
  config.model.scan_layers = True  # a run option: kept from the stage's config
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  init = runs.start_from(config, tmp_path)
  assert config.model.d_model == hf.config.hidden_size and config.model.qkv_bias
  assert config.model.vocab_size == 512  # 505 padded to a multiple of 128 (and of tensor=2)
  assert config.model.scan_layers and config_lib.validate(config) == init.model.cfg
  q = init.params["layers"]["attn"]["q"]["kernel"]
  assert dict(q.sharding.mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert q.addressable_shards[0].data.shape[1] == hf.config.hidden_size // 2  # embed over fsdp
  assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "tokenizer_config.json").is_file()
  config.init.checkpoint = str(tmp_path)
  with pytest.raises(ConfigError, match="both set"):
    runs.start_from(config, tmp_path)


@pytest.mark.parametrize("family,bos_first", [("gpt2", False), ("llama3", True)])
def test_sample_continues_a_prompt_as_transformers_generate_on_tokenizer_of_it(
    tmp_path, family, bos_first):
  """GPT-2's tokenizer names <|endoftext|> as BOS but does not add it; Llama 3's adds
  <|begin_of_text|>. sample.py encodes a plain prompt by that rule, as `tokenizer(prompt)`."""
  directory, hf = _hf_directory(tmp_path, family)
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  prompt = "Greta Park works as"
  inputs = reference(prompt, return_tensors="pt")
  assert (inputs["input_ids"][0, 0].item() == reference.bos_token_id) == bos_first
  with torch.no_grad():
    out = hf.generate(**inputs, max_new_tokens=8, do_sample=False, pad_token_id=0,
                      eos_token_id=reference.eos_token_id)
  new = out[0, inputs["input_ids"].shape[1]:].tolist()
  if reference.eos_token_id in new:
    new = new[:new.index(reference.eos_token_id)]
  done = run_script("convert.py", f"--hf_dir={directory}", f"--out={tmp_path / 'run'}")
  assert done.returncode == 0, done.stderr
  assert runs.load_run(tmp_path / "run").tokenizer.encode_prompt(prompt) == (
      inputs["input_ids"][0].tolist())
  sample = run_script("sample.py", f"--workdir={tmp_path / 'run'}", f"--prompt={prompt}",
                      "--temperature=0", "--max_new_tokens=8")
  assert sample.returncode == 0, sample.stderr
  assert sample.stdout == reference.decode(new) + "\n"
