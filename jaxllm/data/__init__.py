"""Data: readers, cleaning, tokenizers and chat template, TFDS sources, grain batching, the
embedded world."""
