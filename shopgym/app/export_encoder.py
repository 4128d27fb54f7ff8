"""The text encoder of an export: BERT to ONNX with its tokenizer (parity-checked), or the hashing settings.

Production embeds new queries (and items) without PyTorch: :func:`export_text_encoder` writes
``encoder/model.onnx`` (inputs ``input_ids`` and ``attention_mask``, (B, T) int64, dynamic; output ``sentence_vector``
(B, d) float32 unit rows, the encoder's pooling inside) and the tokenizer files, then checks the served path
(:class:`shopgym.serve.text.OnnxTextEncoder`: the ``tokenizers`` library and ONNX Runtime) against the PyTorch
encoder on real texts: every vector within :data:`ENCODER_TOLERANCE` and cosine > :data:`ENCODER_MIN_COSINE`.
The hashing encoder needs no weights: its settings go into the manifest. Item encoders without a text side
(``FeatureEncoder``) export nothing: such a model serves only the queries it was built with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from encoders.bert import BertEncoder
from encoders.hashing import HashingEncoder
from shopgym.errors import ConfigError
from shopgym.serve.text import ENCODER_DIR, OnnxTextEncoder

#: largest absolute difference of an exported sentence vector from the PyTorch one
ENCODER_TOLERANCE = 1e-4
#: smallest cosine of an exported sentence vector with the PyTorch one
ENCODER_MIN_COSINE = 0.9999


class PooledEncoder(nn.Module):
    """A Hugging Face encoder with the :class:`~encoders.bert.BertEncoder` pooling and L2 normalisation."""

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        self.model = encoder.model
        self.pooling = encoder.pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) ids and mask -> (B, d) unit vectors."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                            token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return nn.functional.normalize(pooled, p=2.0, dim=-1)


def _export_bert(encoder: BertEncoder, folder: Path, opset: int) -> None:
    import logging
    import warnings

    folder.mkdir(parents=True, exist_ok=True)
    encoder.tokenizer.save_pretrained(str(folder))
    example = encoder.tokenizer(["a short title", "another product title here"], padding=True, truncation=True,
                                max_length=encoder.max_length, return_tensors="pt")
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens", max=max(encoder.max_length, 3))
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                PooledEncoder(encoder).eval(), (example["input_ids"], example["attention_mask"]), dynamo=True,
                input_names=["input_ids", "attention_mask"], output_names=["sentence_vector"],
                dynamic_shapes=({0: batch, 1: tokens}, {0: batch, 1: tokens}), opset_version=opset, verbose=False)
    finally:
        quiet.setLevel(level)
    assert program is not None
    program.save(str(folder / "model.onnx"))


def encoder_parity(encoder: BertEncoder, folder: Path, texts: list[str]) -> dict[str, Any]:
    """The exported encoder (tokenizers + ONNX Runtime) against the PyTorch encoder on ``texts``."""
    served = OnnxTextEncoder(folder, encoder.max_length)
    expected = np.asarray(encoder.encode(texts, show_progress=False), dtype=np.float64)
    got = np.concatenate([served.encode(texts[i:i + 64]) for i in range(0, len(texts), 64)]).astype(np.float64)
    cosine = (got * expected).sum(axis=1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1), 1e-12)
    worst = float(np.abs(got - expected).max())
    return {"texts": len(texts), "max_abs_diff": worst, "min_cosine": float(cosine.min()),
            "tolerance": ENCODER_TOLERANCE, "min_cosine_required": ENCODER_MIN_COSINE,
            "passed": bool(worst <= ENCODER_TOLERANCE and cosine.min() > ENCODER_MIN_COSINE)}


def export_text_encoder(encoder: Any, folder: Path, texts: list[str], opset: int) -> dict[str, Any]:
    """Export ``encoder`` into ``folder`` (the export's temporary folder); return the manifest's ``text_encoder``.

    Args:
        encoder: the encoder the simulator's space was built with (or its identity string when the space was
            built from item features: nothing to export then).
        folder: the export folder being written (``encoder/`` is created in it for BERT).
        texts: real texts for the parity check (the catalog's titles; queries too).
        opset: the ONNX opset.

    Raises:
        ConfigError: the exported encoder disagrees with PyTorch beyond the tolerances.
    """
    if isinstance(encoder, BertEncoder):
        target = folder / ENCODER_DIR
        _export_bert(encoder, target, opset)
        parity = encoder_parity(encoder, target, [t for t in texts if t] or ["an item"])
        if not parity["passed"]:
            raise ConfigError(f"text encoder parity failed on {parity['texts']} texts: max |difference| "
                              f"{parity['max_abs_diff']:.3g} (tolerance {ENCODER_TOLERANCE}), smallest cosine "
                              f"{parity['min_cosine']:.6f}; nothing was exported")
        return {"kind": "onnx", "identity": encoder.identity, "pooling": encoder.pooling,
                "max_length": encoder.max_length, "dim": encoder.dim, "folder": ENCODER_DIR, "parity": parity}
    if isinstance(encoder, HashingEncoder):
        return {"kind": "hashing", "identity": encoder.identity, "dim": encoder.dim, "seed": encoder.seed,
                "bigrams": encoder.bigrams}
    identity = encoder if isinstance(encoder, str) else str(getattr(encoder, "identity", type(encoder).__name__))
    return {"kind": "none", "identity": identity,
            "note": "the item encoder has no text side: only the queries in queries.json can be served"}
