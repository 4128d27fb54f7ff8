"""Ranking agents and baselines, all behind the one interface of :mod:`agents.base` (see ``docs/agents.md``)."""

from agents._checks import NotFittedError
from agents.base import (
    Feedback,
    PolicyInputError,
    Ranking,
    RankingContext,
    RankingPolicy,
    deterministic_topk,
    load_policy,
)
from agents.baselines import (
    BuyAgainPolicy,
    CosinePolicy,
    LogFittedPolicy,
    PopularityPolicy,
    RandomPolicy,
    cosine_scores,
)
from agents.cf import ALSPolicy, ItemKNNPolicy, als_factors
from agents.features import BLOCKS, CandidateFeatures, SlotCredit, slot_credit
from agents.linear import EpsilonGreedyRanker, LinearBandit, LinTSRanker, LinUCBRanker
from agents.logistic import OnlineLogisticRanker
from agents.neural import NeuralLinearRanker
from agents.reference import LoggingPolicy, OracleGreedyPolicy, WorldReferencePolicy
from agents.ridge import ItemBias, RidgeModel
from agents.toy import OnlineTrace, ToyRankingProblem, run_online

__all__ = [
    "ALSPolicy",
    "BLOCKS",
    "BuyAgainPolicy",
    "CandidateFeatures",
    "CosinePolicy",
    "EpsilonGreedyRanker",
    "Feedback",
    "ItemBias",
    "ItemKNNPolicy",
    "LinTSRanker",
    "LinUCBRanker",
    "LinearBandit",
    "LogFittedPolicy",
    "LoggingPolicy",
    "NeuralLinearRanker",
    "NotFittedError",
    "OnlineLogisticRanker",
    "OnlineTrace",
    "OracleGreedyPolicy",
    "PolicyInputError",
    "PopularityPolicy",
    "RandomPolicy",
    "Ranking",
    "RankingContext",
    "RankingPolicy",
    "RidgeModel",
    "SlotCredit",
    "ToyRankingProblem",
    "WorldReferencePolicy",
    "als_factors",
    "cosine_scores",
    "deterministic_topk",
    "load_policy",
    "run_online",
    "slot_credit",
]
