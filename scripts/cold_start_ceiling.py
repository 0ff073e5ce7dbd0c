"""How far can a ranking lift cold items (held out of training) without losing warm targets? On the
validation split of the cold-start protocol (models.evaluation.cold_start), this script prints two tables:

1. the per-user mixture: warm items ranked by the model's softmax over warm items, cold items by its (or a
   second model's) softmax over cold items at temperature T, the two weighted p and 1 - p (Bayes' rule with
   p the prior that the next item is cold) -- unlike the constant new-item bonus, the weight of a cold item
   depends on how sure the model is of the user's warm items;
2. the ranking among the cold items alone, for the cold targets: how well each scorer (the checkpoints, and
   a text nearest-neighbour of the user's last items by the frozen encoder's embeddings) tells which cold
   item comes next, once it is known that one does.

Validation only: nothing here is chosen on, or reports, the test split.

PYTHONPATH=. python scripts/cold_start_ceiling.py --data $DATA/ml-1m --model checkpoints/ml1m-cold15-idt \
    --cold-model checkpoints/ml1m-cold15-idt-drop25 [--encoder LOCAL_HF_FOLDER ...]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.special import log_softmax

from models import metrics
from models.data.datasets import EventLog, load_ml1m
from models.evaluation.baselines import LooData, loo_data, next_item_ranks
from models.evaluation.checkpoint_ranking import CheckpointItemScores, loo_windows
from models.evaluation.cold_start import RecordedScores, hold_out
from models.features.featurize import catalogue_texts
from models.model.encoder import TextEncoder
from models.serving.scorer import Scorer

PRIORS = (0.01, 0.03, 0.1, 0.2, 0.4)
TEMPERATURES = (0.5, 1.0, 2.0)


def validation_scores(folder: str, log: EventLog, data: LooData) -> tuple[np.ndarray, Scorer]:
    """(users, n_items + 1) validation scores of a checkpoint with every catalogue item added from its text."""
    scorer = Scorer.load(folder, device="cpu")
    scorer.new_item_bonus = 0.0
    scorer.add_items(catalogue_texts(log.records))
    recorded = RecordedScores(CheckpointItemScores(scorer, loo_windows(log, data)[0], data))
    next_item_ranks(recorded, data.val_input, data.val_target, data.n_items)
    scores = np.concatenate(recorded.batches)
    return np.where(np.isfinite(scores), scores, -1e9), scorer


def masked_ranks(scores: np.ndarray, data: LooData, columns: np.ndarray | None = None) -> np.ndarray:
    """Ranks of the validation targets by next_item_ranks (history masked, pessimistic ties) over the rows
    of `scores`, among `columns` alone when given."""
    if columns is not None:
        kept = np.full_like(scores, -np.inf)
        kept[:, columns] = scores[:, columns]
        scores = kept
    position = 0

    def replay(histories: list[np.ndarray]) -> np.ndarray:
        nonlocal position
        batch = scores[position : position + len(histories)].copy()  # next_item_ranks masks in place
        position += len(histories)
        return batch

    return next_item_ranks(replay, data.val_input, data.val_target, data.n_items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the ML-1M folder")
    parser.add_argument("--model", required=True, help="checkpoint trained under the protocol (ids+text)")
    parser.add_argument(
        "--cold-model", help="a second checkpoint whose cold-item scores the mixture tries too"
    )
    parser.add_argument(
        "--encoder",
        action="append",
        default=[],
        help="another local Hugging Face encoder for the text neighbours",
    )
    parser.add_argument("--cold-items", type=float, default=0.15)
    parser.add_argument("--cold-seed", type=int, default=0)
    args = parser.parse_args()
    log, cold = hold_out(load_ml1m(args.data), args.cold_items, args.cold_seed)
    data = loo_data(log)
    is_cold_item = np.array([False] + [item in cold for item in data.items])
    cold_columns, warm = np.flatnonzero(is_cold_item), ~is_cold_item
    warm[0] = False
    cold_target = is_cold_item[data.val_target]
    main_scores, scorer = validation_scores(args.model, log, data)
    models = {args.model: main_scores}
    if args.cold_model:
        models[args.cold_model] = validation_scores(args.cold_model, log, data)[0]
    print(
        f"validation targets: {len(cold_target)}, cold: {int(cold_target.sum())}, cold items: {len(cold_columns)}"
    )

    print(
        "\n| cold items scored by | T | p | all NDCG@10 | cold NDCG@10 | warm NDCG@10 |\n|---|---|---|---|---|---|"
    )
    warm_part = log_softmax(np.where(warm, main_scores, -1e9), axis=1)
    for name, scores in models.items():
        for temperature in TEMPERATURES:
            cold_part = log_softmax(np.where(is_cold_item, scores / temperature, -1e9), axis=1)
            for prior in PRIORS:
                mixed = np.where(is_cold_item, np.log(prior) + cold_part, np.log(1 - prior) + warm_part)
                ranks = masked_ranks(mixed, data)
                print(
                    f"| {name} | {temperature} | {prior} | {metrics.ndcg(ranks, 10):.4f} | "
                    f"{metrics.ndcg(ranks[cold_target], 10):.4f} | {metrics.ndcg(ranks[~cold_target], 10):.4f} |"
                )

    catalogue = catalogue_texts(log.records)
    texts = [catalogue.get(item, "") for item in data.items]
    encoders = {"all-MiniLM-L6-v2 (the Scorer's)": scorer.encoder} | {
        path: TextEncoder(path, device="cpu") for path in args.encoder
    }
    scorers = dict(models)
    for encoder_name, encoder in encoders.items():
        encoded = encoder.encode(texts)
        unit = encoded / np.linalg.norm(encoded, axis=1, keepdims=True)
        embeddings = np.vstack([np.zeros((1, unit.shape[1])), unit])  # row 0: padding
        for last in (1, 3, 10):
            profile = np.stack([embeddings[h[-last:].astype(np.int64)].mean(0) for h in data.val_input])
            scorers[f"text nearest neighbour by {encoder_name}, mean of the last {last} items"] = (
                profile @ embeddings.T
            )
    print(
        f"\n| among the {len(cold_columns)} cold items, cold targets only | NDCG@10 | HR@10 |\n|---|---|---|"
    )
    for name, scores in scorers.items():
        ranks = masked_ranks(scores, data, cold_columns)[cold_target]
        print(f"| {name} | {metrics.ndcg(ranks, 10):.4f} | {metrics.hit_rate(ranks, 10):.4f} |")


if __name__ == "__main__":
    main()
