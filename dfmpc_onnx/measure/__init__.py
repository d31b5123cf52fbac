"""Measurement: synthetic and distilled inputs, the fidelity probe and divergence, activation
calibration and the bit allocation that uses the measurements."""
