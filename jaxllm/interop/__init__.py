"""Hugging Face interoperability: checkpoints (Llama 2/3, Mistral, Qwen2/2.5, Qwen3, GPT-2) and
tokenizers in and out.

  hf_config     config.json <-> ModelConfig (fails clearly on what the model cannot compute)
  hf_weights    safetensors <-> params: lazy, per-device blocks placed on the mesh; export shards
  hf_tokenizer  tokenizer.json + tokenizer_config.json -> Tokenizer, chat format mapped to ours
  hf_models     a model directory <-> (ModelConfig, params): import_model, export
Whole run directories convert in jaxllm/runs.py (import_hf, export_hf).
"""
