"""The application layer: the jobs behind shopgym's commands (compare, fit, fidelity, offline evaluation)."""
