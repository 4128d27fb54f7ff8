"""The application layer: jobs that run the domain packages (rollouts, comparisons, reports)."""
