"""Performers (FAVOR+) and other efficient attention in JAX and Flax NNX."""
