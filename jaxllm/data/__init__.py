"""Data: readers, cleaning, tokenizers and chat template, TFDS sources, grain pipelines, the
embedded world."""
