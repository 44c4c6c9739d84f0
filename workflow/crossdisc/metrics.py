"""Evaluation metrics, one function each; `evaluate` gives every metric that fits a task kind, and
`score` those of a split with subsets."""

import numpy as np
from scipy import stats


def kind_of(metric):
    """The task kind whose predictions a headline metric scores."""
    return {"pearson": "regression", "spearman": "regression", "vote_accuracy": "vote_classification"}.get(
        metric, "classification")


def accuracy(labels, preds):
    return float(np.mean(np.asarray(labels) == np.asarray(preds)))


def f1(labels, preds, positive=1):
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = np.sum((preds == positive) & (labels == positive))
    predicted, actual = np.sum(preds == positive), np.sum(labels == positive)
    return float(2 * tp / (predicted + actual)) if predicted + actual else 0.0


def mcc(labels, preds):
    """Matthews correlation for any number of classes (Gorodkin's R_K); 0 when undefined."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    classes = np.union1d(labels, preds)
    confusion = np.zeros((len(classes), len(classes)))
    np.add.at(confusion, (np.searchsorted(classes, labels), np.searchsorted(classes, preds)), 1)
    t, p, c, s = confusion.sum(1), confusion.sum(0), np.trace(confusion), confusion.sum()
    denominator = np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(labels, preds):
    return float(stats.pearsonr(labels, preds)[0]) if np.std(preds) > 0 else 0.0


def spearman(labels, preds):
    return float(stats.spearmanr(labels, preds)[0]) if np.std(preds) > 0 else 0.0


def vote(groups, labels, preds):
    """Per-group majority vote (ties to the smaller class id): (group labels, group predictions)."""
    by_group = {}
    for g, y, p in zip(groups, labels, preds):
        by_group.setdefault(g, (y, []))[1].append(p)
    truth = [y for y, _ in by_group.values()]
    voted = [int(np.bincount(ps).argmax()) for _, ps in by_group.values()]
    return truth, voted


def evaluate(kind, labels, preds, groups=None):
    if kind == "regression":
        return {"pearson": pearson(labels, preds), "spearman": spearman(labels, preds)}
    result = {"accuracy": accuracy(labels, preds), "mcc": mcc(labels, preds)}
    if len(np.union1d(labels, preds)) <= 2:
        result["f1"] = f1(labels, preds)
    if kind == "vote_classification":
        result["vote_accuracy"] = accuracy(*vote(groups, labels, preds))
    return result


def score(frame, preds, kind):
    """Every metric of the split; where the split has subsets (MNLI matched and mismatched), each
    subset's metrics too, and each metric is the mean of the subsets', as the paper reports MNLI."""
    result = evaluate(kind, frame["label"].to_numpy(), preds, frame["group"].to_numpy())
    subsets = sorted(set(frame["subset"]) - {""}) if "subset" in frame else []
    if len(subsets) > 1:
        for name in subsets:
            part = (frame["subset"] == name).to_numpy()
            result[name] = score(frame[part], preds[part], kind)
        for metric in set.intersection(*(set(result[name]) for name in subsets)) & set(result):
            result[metric] = float(np.mean([result[name][metric] for name in subsets]))
    return result
