"""Data: the embedded synthetic corpus, tokenizers and batch pipelines."""
