"""The data plane: the stage entrypoint and backend tooling that run inside a pipeline Job."""
