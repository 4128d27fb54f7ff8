r"""PPO (stable-baselines3) with a permutation-equivariant Plackett-Luce ranking policy.

The policy scores every candidate with **one shared network** (the same weights for each of the N
candidates), so permuting the candidates permutes the scores (equivariance), and the critic pools over the
candidates, so the value does not depend on their order (invariance). Exploration samples whole rankings
from Plackett-Luce over the scores, with exact log-probabilities.

Pieces, from the bottom up:

* :class:`CandidateEncoder` (a SB3 ``BaseFeaturesExtractor``): unflattens the :class:`~envs.rerank.ReRankEnv`
  observation and maps each candidate to a ``H``-dim embedding with a shared MLP over
  ``[u, q, s, v_i, x_i, u * v_i, q * v_i, u.v_i, q.v_i]`` (profile, query, is-search, candidate vector,
  candidate extras, elementwise and dot products) plus the two dot products standardised over the request.
* :class:`PlackettLuceDistribution` (a SB3 ``Distribution``): rankings of ``K`` out of ``N`` sampled by
  Gumbel-top-K, their exact log-probability, and a chain-rule entropy estimate.
* :class:`PlackettLucePolicy` (a SB3 ``ActorCriticPolicy``): logits = a linear head on each candidate's
  embedding; value = an MLP on ``[mean_i h_i, max_i h_i, s, page]`` of a second (critic) encoder.
* :class:`PPORanker` (a :class:`~agents.base.RankingPolicy`): trains the policy with ``sb3.PPO`` on
  ``ReRankEnv`` s (:meth:`PPORanker.learn`), then scores and ranks from :class:`~agents.base.RankingContext`
  like every other agent, and saves as ``policy.json`` + ``state.safetensors`` (no pickle).

Note:
    **Action encoding.** The env takes one score per candidate and shows the top K. A sampled ranking
    :math:`\sigma = (\sigma_1, \dots, \sigma_K)` is emitted as the action

    .. math:: a_{\sigma_j} = 1 - \frac{j}{K + 1} \quad (j = 1..K), \qquad a_i = -1 \text{ otherwise},

    which lies inside the ``Box(-1, 1)`` (SB3's clipping leaves it unchanged), has distinct values on the
    shown slots, and decodes back to :math:`\sigma` as the first K entries of a stable descending argsort
    (the env's own top-K rule). The rollout buffer stores the action; :meth:`PlackettLucePolicy.evaluate_actions`
    decodes the ranking from it.

    **Log-probability** (exact):

    .. math:: \log P(\sigma) = \sum_{j=1}^{K} \Big( z_{\sigma_j} - \log \sum_{l \notin \sigma_{<j}} e^{z_l} \Big).

    **Entropy.** The entropy of a PL ranking has no closed form for K > 1 (a sum over N!/(N-K)! rankings).
    By the chain rule :math:`H(\sigma) = \sum_j \mathbb{E}\,[H(\sigma_j \mid \sigma_{<j})]`, so the sum
    of the conditional softmax entropies *along a sampled ranking* is an unbiased estimate of it. PPO's
    entropy bonus uses this estimate along the rollout's (recent-policy) rankings; it is exact for K = 1
    and a differentiable function of the logits (its gradient ignores the dependence of the sampled ranking
    on the logits, the usual approximation). ``Distribution.entropy()`` without a ranking evaluates it
    along the greedy ranking (a deterministic proxy, used only for logging).

    **Page.** The critic sees the page counter (remaining pages matter for the value); the actor does
    not, because a :class:`~agents.base.RankingContext` carries no page: the ranker's scores from a
    context are then exactly the scores the policy acted on in the env.

Modules: :mod:`agents.ppo.encoder` (observation layout, :class:`CandidateEncoder`),
:mod:`agents.ppo.distribution` (:class:`PlackettLuceDistribution` and the action encoding),
:mod:`agents.ppo.policy` (:class:`PlackettLucePolicy`) and :mod:`agents.ppo.ranker` (:class:`PPORanker`,
the training curve and its callback).
"""

from agents.ppo.distribution import (
    PlackettLuceDistribution,
    decode_ranking,
    encode_ranking,
    ranking_log_prob_entropy,
)
from agents.ppo.encoder import ACTIVATIONS, CandidateEncoder, ObsLayout, observation_from_context
from agents.ppo.policy import PlackettLucePolicy
from agents.ppo.ranker import PPORanker, RewardPerPageCallback, TrainingCurve

# saved policies name their class (policy.json); keep the public path they have always used
PPORanker.__module__ = __name__

__all__ = [
    "ACTIVATIONS",
    "CandidateEncoder",
    "ObsLayout",
    "PPORanker",
    "PlackettLuceDistribution",
    "PlackettLucePolicy",
    "RewardPerPageCallback",
    "TrainingCurve",
    "decode_ranking",
    "encode_ranking",
    "observation_from_context",
    "ranking_log_prob_entropy",
]
