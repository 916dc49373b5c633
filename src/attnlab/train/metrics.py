"""The scores a finished run reports beyond loss and accuracy, per kind of task, each beside the
baseline that says what it is worth: the majority class, copying the source, the most popular item."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.data.base import TaskData

TOP_K = 10  # HR@10 and NDCG@10, as SASRec reports them


@torch.no_grad()
def accuracy(task, model: nn.Module, batches) -> float:
    """Correct predictions over scored labels of `batches`, as the task's `Step.hits` counts them
    (what `attnlab eval` reports as test_accuracy)."""
    correct = scored = 0
    for batch in batches:
        hits, labels = task.step(model, batch).hits()
        correct, scored = correct + int(hits), scored + int(labels)
    return correct / max(scored, 1)


def classification_scores(model: nn.Module, test: TaskData, batch: int,
                          positive: str | None) -> dict:
    """Majority rate (always guess the commonest class), macro F1, and the F1 of `positive`
    as test_f1."""
    f1 = f1_scores(predictions(model, test, batch), test.labels, test.num_classes)
    scores = {"test_majority_rate": max(test.label_distribution().values()),
              "test_macro_f1": sum(f1) / len(f1)}
    if positive is not None:
        scores["test_f1"] = f1[test.label_names.index(positive)]
    return scores


@torch.no_grad()
def predictions(model: nn.Module, data: TaskData, batch: int) -> Tensor:
    """Predicted class ids for every example of a classification split."""
    was_training = model.training
    model.eval()
    preds = torch.cat([model(data.inputs[i:i + batch]).argmax(-1)
                       for i in range(0, len(data), batch)])
    model.train(was_training)
    return preds


def f1_scores(preds: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """F1 of each class (0 where a class is neither predicted nor present)."""
    scores = []
    for c in range(num_classes):
        tp = int(((preds == c) & (labels == c)).sum())
        predicted, actual = int((preds == c).sum()), int((labels == c).sum())
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return scores


def ranking_scores(scores: Tensor, k: int = TOP_K) -> tuple[Tensor, Tensor]:
    """Hit rate and NDCG at k per row of candidate scores (N, C) whose column 0 is the true item.

    A tie counts against the true item, so a model that scores everything alike scores 0, not 1.
    """
    rank = (scores[:, 1:] >= scores[:, :1]).sum(-1)  # 0 = ranked first
    hit = rank < k
    return hit.float(), torch.where(hit, 1 / torch.log2(rank.float() + 2), 0.0)


@torch.no_grad()
def model_ranking_scores(model: nn.Module, test: TaskData, batch: int) -> dict:
    """HR@10 and NDCG@10 of the model's scores for each example's candidates, at its last position."""
    was_training = model.training
    model.eval()
    hits, ndcgs = zip(*(ranking_scores(model(test.inputs[i:i + batch])[:, -1].gather(
        1, test.candidates[i:i + batch])) for i in range(0, len(test), batch)), strict=True)
    model.train(was_training)
    return {"test_hr10": float(torch.cat(hits).mean()), "test_ndcg10": float(torch.cat(ndcgs).mean())}


def popularity_scores(popularity: Tensor, test: TaskData) -> dict:
    """HR@10 and NDCG@10 of ranking each user's candidates by training popularity."""
    hr, ndcg = ranking_scores(popularity[test.candidates])
    return {"test_popular_hr10": float(hr.mean()), "test_popular_ndcg10": float(ndcg.mean())}


def translation_scores(translations: list[str], examples: list[dict]) -> dict:
    """Corpus BLEU and chrF (sacreBLEU's defaults) of `translations` against the references, and of
    copying the source unchanged: the bar a model has to clear."""
    from sacrebleu.metrics import BLEU, CHRF

    refs = [[ex["target"] for ex in examples]]
    sources = [ex["source"] for ex in examples]
    bleu, chrf = BLEU(), CHRF()
    return {"test_bleu": bleu.corpus_score(translations, refs).score,
            "test_chrf": chrf.corpus_score(translations, refs).score,
            "test_copy_bleu": bleu.corpus_score(sources, refs).score,
            "test_copy_chrf": chrf.corpus_score(sources, refs).score}


def alignment_error_rate(predicted: list[set], sure: list[set], possible: list[set] | None = None) -> float:
    """Och & Ney's (2003) alignment error rate over a corpus: 1 − (|A∩S| + |A∩P|) / (|A| + |S|),
    A the predicted links, S the sure gold links and P ⊇ S the possible ones (P = S when only
    sure links are given), each summed over the examples. 0 is perfect."""
    possible = sure if possible is None else possible
    a = sum(len(x) for x in predicted)
    s = sum(len(x) for x in sure)
    hits = sum(len(x & y) for x, y in zip(predicted, sure, strict=True)) + sum(
        len(x & (y | z)) for x, y, z in zip(predicted, sure, possible, strict=True))
    return 1.0 - hits / (a + s) if a + s else 0.0
