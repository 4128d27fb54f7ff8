"""`tiny_bert`: write a tiny, randomly initialised BERT model and a WordPiece tokenizer to a folder.

The folder loads with ``AutoTokenizer``/``AutoModel`` like any downloaded model, so
:class:`~encoders.bert.BertEncoder` can be tested in milliseconds without network or large weights.
The vectors are random projections of the tokens, not semantic embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import string
import tempfile
from pathlib import Path

from shopgym.checks import check_int
from shopgym.errors import ConfigError

_SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: whole words of a small shop vocabulary (the rest of a word falls back to ##-suffix pieces)
_WORDS = """
a an and the of for with in on to by men women men's women's girls boys girls' boys' kids baby unisex
black white red blue navy green pink grey gray brown beige yellow orange purple gold silver cream
leather cotton linen wool silk denim suede canvas rubber plastic glass metal wood ceramic
shirt t-shirt blouse dress skirt trousers jeans shorts jacket coat hoodie sweater cardigan suit
shoes boots sneakers sandals heels belt bag handbag backpack wallet hat cap scarf gloves socks
watch ring necklace earrings bracelet sunglasses umbrella rain running sport casual formal
slim wide leg wide-leg fit long short sleeve sleeveless small medium large set pack of
cup mug plate bowl candle holder lantern light heart vintage christmas gift box paper card
bottle tin jar cake stand frame mirror clock sign cushion cover bunting garden kitchen
new classic summer winter spring autumn party wedding home office travel
""".split()


def _vocabulary() -> list[str]:
    """Special tokens, single characters, ##-suffix characters, then whole words; no duplicates."""
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = [*_SPECIAL, *chars, *(f"##{c}" for c in string.ascii_lowercase + string.digits)]
    seen = set(tokens)
    for word in _WORDS:
        if word not in seen:
            seen.add(word)
            tokens.append(word)
    return tokens


def _spec(seed: int, hidden_size: int, num_layers: int, num_heads: int, max_position: int) -> dict[str, int]:
    return {"seed": seed, "hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
            "max_position": max_position, "format": 1}


def _write(folder: Path, spec: dict[str, int]) -> None:
    """Write config, weights and tokenizer files of the tiny model into ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    vocab = _vocabulary()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": spec["max_position"],
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }, indent=2), encoding="utf-8")
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=spec["hidden_size"], num_hidden_layers=spec["num_layers"],
        num_attention_heads=spec["num_heads"], intermediate_size=2 * spec["hidden_size"],
        max_position_embeddings=spec["max_position"], pad_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(spec["seed"])
        model = BertModel(config).eval()
    model.save_pretrained(str(folder))
    (folder / "tiny_bert.json").write_text(json.dumps(spec, sort_keys=True), encoding="utf-8")


def tiny_bert(
    path: str | Path | None = None,
    seed: int = 0,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position: int = 128,
) -> Path:
    """Write a tiny random BERT model folder (config, safetensors weights, WordPiece vocab) and return it.

    The same arguments give byte-identical weights, hence the same
    :func:`~encoders.bert.model_checksum`. The folder is built in a temporary sibling and renamed
    into place, so a concurrent caller never sees a half-written model.

    Args:
        path: the folder to create; None uses ``<tmp>/shopgym-tiny-bert/<spec hash>`` and reuses it
            when it already exists. An existing non-empty folder is reused only if it holds a tiny
            model with the same arguments.
        seed: seeds the weight initialisation.
        hidden_size: output dimension, divisible by ``num_heads``.
        num_layers: transformer layers.
        num_heads: attention heads.
        max_position: maximum sequence length.

    Returns:
        The model folder.

    Raises:
        ConfigError: an argument is out of range, or ``path`` holds something else.
    """
    spec = _spec(
        check_int(seed, "seed", min_value=0), check_int(hidden_size, "hidden_size", min_value=2),
        check_int(num_layers, "num_layers", min_value=1), check_int(num_heads, "num_heads", min_value=1),
        check_int(max_position, "max_position", min_value=8),
    )
    if spec["hidden_size"] % spec["num_heads"]:
        raise ConfigError(f"`hidden_size` ({hidden_size}) must be divisible by `num_heads` ({num_heads})")
    if path is None:
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        target = Path(tempfile.gettempdir()) / "shopgym-tiny-bert" / key
    else:
        target = Path(path).expanduser()
    marker = target / "tiny_bert.json"
    if target.exists():
        if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == spec:
            return target.resolve()
        if not target.is_dir() or any(target.iterdir()):
            raise ConfigError(
                f"`path` {str(target)!r} already exists and is not a tiny BERT folder with these arguments; "
                "pass a new or empty folder"
            )
        target.rmdir()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        _write(staging, spec)
        os.replace(staging, target)
    except OSError:
        if not marker.is_file():  # nobody else finished it first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target.resolve()
