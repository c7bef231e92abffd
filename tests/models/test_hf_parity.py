"""Logit parity with Hugging Face transformers (CPU torch) for the Llama and GPT-2 families."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the [test] extra installs CPU torch and transformers
import transformers

from jaxllm.models import ModelConfig, Transformer


def _t(x):
  return jnp.asarray(x.detach().numpy())


def _llama_params(sd, cfg: ModelConfig):
  d, n, k, h = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
  params = {"embed": {"embedding": _t(sd["model.embed_tokens.weight"])},
            "final_norm": {"scale": _t(sd["model.norm.weight"])}}
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    params[f"layer_{i}"] = {
        "attn_norm": {"scale": _t(sd[p + "input_layernorm.weight"])},
        "mlp_norm": {"scale": _t(sd[p + "post_attention_layernorm.weight"])},
        "attn": {
            "q": {"kernel": _t(sd[p + "self_attn.q_proj.weight"]).T.reshape(d, n, h)},
            "k": {"kernel": _t(sd[p + "self_attn.k_proj.weight"]).T.reshape(d, k, h)},
            "v": {"kernel": _t(sd[p + "self_attn.v_proj.weight"]).T.reshape(d, k, h)},
            "o": {"kernel": _t(sd[p + "self_attn.o_proj.weight"]).T.reshape(n, h, d)},
        },
        "mlp": {name: {"kernel": _t(sd[p + f"mlp.{name}_proj.weight"]).T}
                for name in ("gate", "up", "down")},
    }
  if not cfg.tie_embeddings:
    params["lm_head"] = {"kernel": _t(sd["lm_head.weight"]).T}
  return params


def _gpt2_params(sd, cfg: ModelConfig):
  d, n, h = cfg.d_model, cfg.num_heads, cfg.resolved_head_dim
  ln = lambda p: {"scale": _t(sd[p + ".weight"]), "bias": _t(sd[p + ".bias"])}
  params = {"embed": {"embedding": _t(sd["transformer.wte.weight"])},
            "pos_embed": {"embedding": _t(sd["transformer.wpe.weight"])},
            "final_norm": ln("transformer.ln_f")}
  for i in range(cfg.num_layers):
    p = f"transformer.h.{i}."
    qkv_w = np.split(sd[p + "attn.c_attn.weight"].detach().numpy(), 3, axis=1)  # Conv1D: [in, out]
    qkv_b = np.split(sd[p + "attn.c_attn.bias"].detach().numpy(), 3)
    attn = {name: {"kernel": jnp.asarray(w.reshape(d, n, h)), "bias": jnp.asarray(b.reshape(n, h))}
            for name, w, b in zip("qkv", qkv_w, qkv_b)}
    attn["o"] = {"kernel": _t(sd[p + "attn.c_proj.weight"]).reshape(n, h, d),
                 "bias": _t(sd[p + "attn.c_proj.bias"])}
    params[f"layer_{i}"] = {
        "attn_norm": ln(p + "ln_1"), "mlp_norm": ln(p + "ln_2"), "attn": attn,
        "mlp": {"up": {"kernel": _t(sd[p + "mlp.c_fc.weight"]), "bias": _t(sd[p + "mlp.c_fc.bias"])},
                "down": {"kernel": _t(sd[p + "mlp.c_proj.weight"]),
                         "bias": _t(sd[p + "mlp.c_proj.bias"])}},
    }
  return params


def _compare(hf_model, cfg, params, tokens):
  hf_model.eval()
  with torch.no_grad():
    ref = hf_model(torch.tensor(tokens)).logits.numpy()
  ours = Transformer(cfg).apply({"params": params}, jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(ours), ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("tied,rope_scaling", [(True, "none"), (False, "llama3")])
def test_llama_logits_match_transformers(tied, rope_scaling):
  torch.manual_seed(0)
  hf_cfg = transformers.LlamaConfig(
      vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
      rms_norm_eps=1e-5, rope_theta=10_000.0, tie_word_embeddings=tied, attention_bias=False,
      rope_scaling=None if rope_scaling == "none" else {
          "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
  hf = transformers.LlamaForCausalLM(hf_cfg)
  cfg = ModelConfig(vocab_size=101, num_layers=2, d_model=64, num_heads=4, num_kv_heads=2,
                    mlp_dim=96, max_seq_len=256, tie_embeddings=tied, rope_scaling=rope_scaling,
                    rope_scaling_factor=8.0, rope_original_max_len=64)
  tokens = np.random.default_rng(0).integers(0, 101, (2, 200))  # past 64: scaling matters
  _compare(hf, cfg, _llama_params(hf.state_dict(), cfg), tokens)


def test_gpt2_logits_match_transformers():
  torch.manual_seed(0)
  hf_cfg = transformers.GPT2Config(vocab_size=97, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                   resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
  hf = transformers.GPT2LMHeadModel(hf_cfg)
  cfg = ModelConfig(vocab_size=97, num_layers=2, d_model=32, num_heads=4, num_kv_heads=4,
                    mlp_dim=128, max_seq_len=64, norm="layer", mlp="gelu", position="learned",
                    use_bias=True, tie_embeddings=True)
  tokens = np.random.default_rng(0).integers(0, 97, (2, 40))
  _compare(hf, cfg, _gpt2_params(hf.state_dict(), cfg), tokens)
