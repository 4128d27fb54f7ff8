"""The application layer: the jobs behind shopgym's commands.

Workflows that put the domain packages together for a user: the main job (:mod:`shopgym.app.compare`), the
shared config schema and defaults (:mod:`shopgym.app.config`), the rollout of agents in a simulator
(:mod:`shopgym.app.rollout`), and off-policy evaluation of agents and baselines on logged data
(:mod:`shopgym.app.offline`). It may import every domain package; nothing below it (the domain packages, the
foundation) imports it. The command line (:mod:`shopgym.cli`) sits on top. Submodules are not imported here:
import the one you need.
"""
