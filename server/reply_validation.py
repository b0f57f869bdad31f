"""Is a site's reply fit to aggregate? The server checks its form before any strategy sees it.

A reply is whatever another institution's machine sent, and Flower's strategies take
it as it comes: a NaN or infinite ``num-examples`` makes the weighted mean (and the
global model) NaN, a negative one turns the mean into an extrapolation that amplifies
one site's step many times, and MetricRecords whose keys differ between replies make
``aggregate_train`` raise and end the run. So a reply must have exactly the protocol's
form (cmrfl/protocol.py): one ``metrics`` record with exactly the expected keys, every
value one finite number, a whole ``num-examples`` within ``MAX_NUM_EXAMPLES``, and for
training exactly the global model's arrays (names, shapes, dtypes), all finite.
Anything else is refused with a reason that says what was wrong (server/reply_screening.py
records it as that node's failure; the round goes on without the reply).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.supercore.differential_privacy import KEY_NORM_BIT

from cmrfl.protocol import COUNT_SUFFIX, TRAIN_REPLY_METRICS, Metric, Record, evaluate_reply_metric_keys
from privacy.budget import PRIVACY_METRIC_KEYS

# More training slices or validation cases than any one hospital holds (the largest
# public CMR collections are ~10^5 studies). Bounds how far one site can weigh in a mean.
MAX_NUM_EXAMPLES = 10_000_000


@dataclass(frozen=True)
class ArraySpec:
    shape: tuple[int, ...]
    dtypes: frozenset[str]  # the model's own dtype, and the one the server sent (FedAdam may widen it)


@dataclass(frozen=True)
class ReplyForm:
    """What every reply of one exchange must look like."""

    exchange: str  # "train" or "evaluate", for the reasons
    metric_keys: frozenset[str]
    min_examples: int  # a site that trains on nothing has no update; one may validate on nothing
    arrays: dict[str, ArraySpec] | None = None  # None: the reply carries no weights in the clear


def train_reply_form(reference: ArrayRecord, sent: ArrayRecord | None = None, *, adaptive_clipping: bool) -> ReplyForm:
    """A train reply: the protocol's scalars, and the arrays of ``reference`` (the task's model).

    ``sent`` is the global model of this round: a site may answer in its dtypes too.
    ``adaptive_clipping``: client-level DP's adaptive mode (Flower's adaptiveclipping_mod)
    adds its norm bit to the metrics.
    """
    sent_dtypes = {name: array.dtype for name, array in (sent or ArrayRecord()).items()}
    arrays = {
        name: ArraySpec(tuple(array.shape), frozenset({array.dtype, sent_dtypes.get(name, array.dtype)}))
        for name, array in reference.items()
    }
    keys = {str(key) for key in TRAIN_REPLY_METRICS} | set(PRIVACY_METRIC_KEYS)
    if adaptive_clipping:
        keys.add(KEY_NORM_BIT)
    return ReplyForm("train", frozenset(keys), min_examples=1, arrays=arrays)


def secure_train_reply_form(form: ReplyForm) -> ReplyForm:
    """Under SecAgg+ the weights travel masked (checked by ``masked_vector_problem``), not in the clear."""
    return ReplyForm(form.exchange, form.metric_keys, form.min_examples, arrays=None)


def evaluate_reply_form(metric_names: Iterable[str]) -> ReplyForm:
    """An evaluate reply: ``num-examples`` and a sum and a count for each of the task's metrics and the loss."""
    return ReplyForm("evaluate", evaluate_reply_metric_keys(metric_names), min_examples=0)


def reply_problem(content: RecordDict, form: ReplyForm) -> str | None:
    """Why ``content`` cannot be aggregated as a reply of ``form``, or None when it can."""
    metric_records = dict(content.metric_records)
    if list(metric_records) != [Record.METRICS.value]:
        found = ", ".join(repr(name) for name in metric_records) or "none"
        return f"{form.exchange} reply must carry one MetricRecord {Record.METRICS.value!r}; found {found}"
    problem = metrics_problem(metric_records[Record.METRICS], form)
    if problem is None and form.arrays is not None:
        problem = arrays_problem(content, form.arrays)
    elif problem is None and content.array_records and any(len(record) for record in content.array_records.values()):
        problem = f"{form.exchange} reply carries weights in the clear where none are expected"
    return problem


def metrics_problem(metrics: MetricRecord, form: ReplyForm) -> str | None:
    missing = sorted(form.metric_keys - set(metrics))
    unexpected = sorted(set(metrics) - form.metric_keys)
    if missing or unexpected:
        return f"{form.exchange} metrics do not have the protocol's keys: {_difference(missing, unexpected)}"
    numbers: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, (list, bool)):
            return f"metric {key!r} is {value!r}, not one number"
        if not math.isfinite(value):
            return f"metric {key!r} is {value!r}, not a finite number"
        numbers[key] = value
    examples = numbers[Metric.NUM_EXAMPLES]
    if not _whole_within(examples, form.min_examples, MAX_NUM_EXAMPLES):
        return (
            f"{Metric.NUM_EXAMPLES.value} is {examples!r}: expected a whole number from "
            f"{form.min_examples} to {MAX_NUM_EXAMPLES:,}"
        )
    for key, value in numbers.items():
        if key.endswith(COUNT_SUFFIX) and not _whole_within(value, 0, MAX_NUM_EXAMPLES):
            return f"metric {key!r} is {value!r}: expected a whole number from 0 to {MAX_NUM_EXAMPLES:,}"
    return None


def arrays_problem(content: RecordDict, expected: dict[str, ArraySpec]) -> str | None:
    records = dict(content.array_records)
    if list(records) != [Record.ARRAYS.value]:
        names = ", ".join(repr(name) for name in records) or "none"
        return f"train reply must carry one ArrayRecord {Record.ARRAYS.value!r}; found {names}"
    arrays = records[Record.ARRAYS]
    missing = [name for name in expected if name not in arrays]
    unexpected = [name for name in arrays if name not in expected]
    if missing or unexpected:
        return f"weights do not match the global model: {_difference(missing, unexpected)}"
    if list(arrays) != list(expected):  # the strategies aggregate in the first reply's order
        return "weights are not in the global model's order"
    values = {name: array.numpy() for name, array in arrays.items()}  # the data's own header, not the label
    for name, spec in expected.items():
        found = values[name]
        if found.shape != spec.shape or str(found.dtype) not in spec.dtypes:
            wanted = " or ".join(sorted(spec.dtypes))
            return f"weights {name!r} are {found.dtype}{found.shape}, expected {wanted}{spec.shape}"
    return non_finite_problem(values, "weights")


def non_finite_problem(arrays: Mapping[str, np.ndarray], what: str) -> str | None:
    """Says how many values of ``arrays`` are NaN or infinite, and where; None when all are finite."""
    bad = {}
    for name, values in arrays.items():
        if np.issubdtype(values.dtype, np.inexact) and (count := values.size - int(np.isfinite(values).sum())):
            bad[name] = count
    if not bad:
        return None
    total = sum(values.size for values in arrays.values())
    return (
        f"non-finite {what}: {sum(bad.values())} of {total} values are NaN or infinite, "
        f"in {len(bad)} array(s), first {next(iter(bad))!r}"
    )


def aggregate_problem(aggregated: ArrayRecord, model: ArrayRecord) -> str | None:
    """Why a strategy's aggregate must not become the global model (non-finite, or not the model's arrays)."""
    if list(aggregated) != list(model):
        missing, unexpected = sorted(set(model) - set(aggregated)), sorted(set(aggregated) - set(model))
        return f"the aggregate's arrays are not the model's: {_difference(missing, unexpected) or 'another order'}"
    values = {name: array.numpy() for name, array in aggregated.items()}
    for name, array in model.items():
        if values[name].shape != tuple(array.shape):
            return f"the aggregate's {name!r} has shape {values[name].shape}, the model's {tuple(array.shape)}"
    return non_finite_problem(values, "aggregate")


def masked_vector_problem(masked: list[np.ndarray], shapes: list[tuple[int, ...]]) -> str | None:
    """A SecAgg+ masked vector: the weight factor, then one integer array per model array, same shapes."""
    expected = [(1,), *shapes]
    found = [tuple(array.shape) for array in masked]
    if found != expected:
        first = next((i for i, pair in enumerate(zip(found, expected, strict=False)) if pair[0] != pair[1]), None)
        where = f"array {first} has shape {found[first]}, expected {expected[first]}" if first is not None else ""
        return f"masked vector does not match the model: {where or f'{len(found)} arrays, expected {len(expected)}'}"
    if any(not np.issubdtype(array.dtype, np.integer) for array in masked):
        return "masked vector is not integers"
    return None


def _whole_within(value: float, low: int, high: int) -> bool:
    return float(value).is_integer() and low <= value <= high


def _difference(missing: list[str], unexpected: list[str]) -> str:
    parts = [f"missing {', '.join(missing)}"] if missing else []
    parts += [f"unexpected {', '.join(unexpected)}"] if unexpected else []
    return "; ".join(parts)
