"""The application layer.

Workflows that put the domain packages together for a user: evaluating agents and baselines off-policy
on logged data (:mod:`shopgym.app.offline`, which builds contexts with :mod:`envs` and :mod:`encoders`,
runs :mod:`agents` and estimates with :mod:`ope`). It may import every domain package; nothing below it
(the domain packages, the foundation) imports it. The command line (:mod:`shopgym.cli`) sits on top.
Submodules are not imported here: import the one you need.
"""
