"""`dealflow bench ...` programs."""
