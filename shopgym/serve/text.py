"""Query text to vectors at serving time, without PyTorch: an exported BERT encoder or the hashing encoder.

An export folder's ``encoder/`` holds ``model.onnx`` (token ids and mask to unit sentence vectors, pooling
inside) and the tokenizer files; :class:`OnnxTextEncoder` tokenises with the ``tokenizers`` library (the Rust
tokenizer behind Hugging Face's fast tokenizers) and runs the graph with ONNX Runtime. The manifest's
``text_encoder`` entry says which kind an export has (:func:`text_encoder_from_manifest`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from shopgym.errors import ConfigError

#: the exported encoder's folder inside an export
ENCODER_DIR = "encoder"


class QueryTextEncoder(Protocol):
    """Texts to (n, d_in) float32 unit vectors (before the simulator's projection)."""

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d_in) float32."""
        ...


class OnnxTextEncoder:
    """A BERT-style sentence encoder exported to ONNX (``model.onnx`` + ``tokenizer.json`` in ``folder``).

    Args:
        folder: the exported encoder folder.
        max_length: tokens per text including ``[CLS]``/``[SEP]`` (as the PyTorch encoder's ``max_length``).
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, folder: str | Path, max_length: int, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        root = Path(folder)
        for name in ("model.onnx", "tokenizer.json"):
            if not (root / name).is_file():
                raise ConfigError(f"{root}: no {name}; export the agent again with `shopgym export`")
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=int(max_length))
        pad = "[PAD]"
        config = root / "tokenizer_config.json"
        if config.is_file():
            pad = str(json.loads(config.read_text(encoding="utf-8")).get("pad_token") or pad)
        pad_id = self.tokenizer.token_to_id(pad)
        self.tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(str(root / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(n, T) int64 token ids and attention mask, padded to the longest text."""
        encoded = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encoded], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
        return ids, mask

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, d) float32 unit vectors."""
        ids, mask = self.tokens(texts)
        return np.asarray(self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0], dtype=np.float32)


def text_encoder_from_manifest(folder: str | Path, spec: dict[str, Any], threads: int = 1) -> QueryTextEncoder | None:
    """The query encoder an export ships (``spec`` = the manifest's ``text_encoder``), None if it has none."""
    kind = spec.get("kind")
    if kind == "onnx":
        return OnnxTextEncoder(Path(folder) / ENCODER_DIR, int(spec["max_length"]), threads)
    if kind == "hashing":
        from encoders.hashing import HashingEncoder

        hashing = HashingEncoder(dim=int(spec["dim"]), seed=int(spec["seed"]), bigrams=bool(spec["bigrams"]))

        class _Hashing:
            def encode(self, texts: Sequence[str]) -> np.ndarray:
                return np.asarray(hashing.encode(list(texts), show_progress=False), dtype=np.float32)

        return _Hashing()
    if kind == "none":
        return None
    raise ConfigError(f"{folder}: unknown text encoder kind {kind!r} in the manifest; export again")
