"""Producers of input: replay of data files and the generator, and the fraud-label feed."""
