"""The built-in synthetic shop world: catalog, shoppers, true response model, logging policy, oracle."""
