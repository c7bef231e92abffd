"""Inference: KV-cache sampling, tool calls, retrieval (RAG), perplexity."""
