"""Matplotlib for reports: loaded on first use (``import ab_tune`` stays light) and without a
screen (the Agg backend), so reports render on headless workers and CI."""
from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
