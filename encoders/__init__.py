"""Encoders: BERT text embeddings, an on-disk embedding cache, feature encoders and user profiles.

Importing this package is cheap: ``torch`` and ``transformers`` load only when a BERT model does.
See ``docs/encoders.md``.
"""

from encoders.base import ItemEncoder, TextEncoder, l2_normalize
from encoders.bert import BertEncoder, check_model_folder, default_model_path, model_checksum
from encoders.cache import CachedEncoder, CacheStats, text_hashes
from encoders.errors import CacheError, CacheWarning, EncoderInputError, ModelFolderError
from encoders.features import FeatureColumn, FeatureEncoder, render_features
from encoders.hashing import HashingEncoder
from encoders.items import TextItemEncoder, encode_items, item_texts
from encoders.profiles import (
    POOLINGS,
    BehaviourWeights,
    CompositeProfile,
    ProfileState,
    UserProfiles,
    decay_from_half_life,
    interaction_weights,
    population_default,
    profiles_from_logs,
    update,
    vector,
)
from encoders.tiny import tiny_bert

__all__ = [
    "POOLINGS",
    "BehaviourWeights",
    "BertEncoder",
    "CacheError",
    "CacheStats",
    "CacheWarning",
    "CachedEncoder",
    "CompositeProfile",
    "EncoderInputError",
    "FeatureColumn",
    "FeatureEncoder",
    "HashingEncoder",
    "ItemEncoder",
    "ModelFolderError",
    "ProfileState",
    "TextEncoder",
    "TextItemEncoder",
    "UserProfiles",
    "check_model_folder",
    "decay_from_half_life",
    "default_model_path",
    "encode_items",
    "interaction_weights",
    "item_texts",
    "l2_normalize",
    "model_checksum",
    "population_default",
    "profiles_from_logs",
    "render_features",
    "text_hashes",
    "tiny_bert",
    "update",
    "vector",
]
