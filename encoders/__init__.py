"""Encoders: BERT text embeddings, feature encoders and user profiles."""
