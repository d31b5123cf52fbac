"""Quantization: the weight quantizers (grids), layer quantization, the corrections and their
solver, and activation QDQ placement."""
