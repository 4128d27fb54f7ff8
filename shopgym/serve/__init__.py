"""Serving an exported ranker: ``shopgym serve DIR`` (FastAPI + ONNX Runtime; no PyTorch in the process).

Modules: :mod:`~shopgym.serve.text` (query text to vectors), :mod:`~shopgym.serve.model` (an export folder
loaded for scoring: request features, the graph, exploration with exact propensities), :mod:`~shopgym.serve.log`
(the served log in shopgym's data format) and :mod:`~shopgym.serve.app` (the HTTP API).
"""
