"""Off-policy evaluation estimators."""
