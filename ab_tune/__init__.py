"""ab_tune."""
