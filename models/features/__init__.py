"""The feature layer: velocity aggregates, their offline replay, the one featurizer of both sides."""
