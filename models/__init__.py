"""The learning side, in layers: features, model, data, serving, training, evaluation."""
