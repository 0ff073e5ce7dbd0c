"""The learning side: featurization, encoder, temporal head, training, evaluation, scorer."""
