"""Statistics: per-channel tensor moments, their propagation through nodes, and the one walk of
the graph that carries them to every layer input."""
