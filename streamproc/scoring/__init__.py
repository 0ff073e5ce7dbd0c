"""The scoring worker: sequence updates in, micro-batched model scores out."""
