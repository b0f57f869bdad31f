"""Everything that crosses the network between the ServerApp and a site's ClientApp.

Every record name and key of a training or evaluation exchange is spelled here and only
here (as MONAI FL's ``constants.py``), and each exchange is a typed object with
``to_record()`` / ``from_record()`` (as its ``exchange_object.py``):

==================  =====================================  ==============================
exchange            server → site                          site → server
==================  =====================================  ==============================
train               ``arrays`` + ``TrainInstruction``       ``arrays`` + ``TrainReply``
evaluate            ``arrays`` + ``EvaluateInstruction``    ``EvaluateReply``
==================  =====================================  ==============================

A site's reply carries scalars (sums and counts over its cases, privacy spend) and its
fairness statistics as one versioned document (``fairness.wire``); never a case. Only
light modules are imported here (no torch): a SecAgg+ key-exchange process decodes
nothing but its own stage.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, ConfigRecordValues, MetricRecord, RecordDict

from privacy.dp_sgd_settings import DpSgdRequest
from tasks.settings import DEFAULT_BALANCE_ATTRIBUTE, NO_MITIGATION, TrainSettings


class Record(StrEnum):
    """Names of the records in a message's content."""

    ARRAYS = "arrays"  # model weights (ArrayRecord)
    CONFIG = "config"  # the instruction (ConfigRecord)
    METRICS = "metrics"  # the one MetricRecord Flower's strategies aggregate
    SITE = "site"  # ConfigRecord: the site's name
    FAIRNESS = "fairness"  # ConfigRecord: the site's suppressed subgroup statistics


class Key(StrEnum):
    """Keys of the instruction ConfigRecords and of the site and fairness records."""

    TASK = "task"
    SERVER_ROUND = "server-round"
    DEVICE = "device"
    LOCAL_EPOCHS = "local-epochs"
    BATCH_SIZE = "batch-size"
    LEARNING_RATE = "learning-rate"
    PROXIMAL_MU = "proximal-mu"
    MAX_LOCAL_STEPS = "max-local-steps"
    SEED = "seed"
    FAIRNESS_MITIGATION = "fairness-mitigation"
    BALANCE_ATTRIBUTE = "fairness-balance-attribute"
    DP_SGD = "dp-sgd"
    DP_SGD_TARGET_EPSILON = "dp-sgd-target-epsilon"
    DP_SGD_NOISE_MULTIPLIER = "dp-sgd-noise-multiplier"
    DP_SGD_DELTA = "dp-sgd-delta"
    DP_SGD_MAX_GRAD_NORM = "dp-sgd-max-grad-norm"
    DP_SGD_ACCOUNTANT = "dp-sgd-accountant"
    DP_SGD_GRAD_SAMPLE_MODE = "dp-sgd-grad-sample-mode"
    DP_SGD_PLANNED_ROUNDS = "dp-sgd-planned-rounds"
    SUPPRESSION_THRESHOLD = "fairness-suppression-threshold"
    # What the sites' mods need to guard, clip and weight an update (privacy.settings.site_instructions)
    MAX_UPDATE_NORM = "max-update-norm"
    UNIFORM_SITE_WEIGHTS = "uniform-site-weights"
    CLIENT_DP = "client-dp"
    SITE_ID = "site-id"
    FAIRNESS_DOCUMENT = "document"


class Metric(StrEnum):
    """Keys of a reply's MetricRecord that are not per-case metric sums."""

    NUM_EXAMPLES = "num-examples"  # what Flower's strategies weight by
    SITE_WEIGHT = "site-weight"  # stamped by the server under client-level DP (equal weights)
    TRAIN_LOSS = "train-loss"
    TRAIN_SECONDS = "train-seconds"
    TRAIN_EXAMPLES_PER_SECOND = "train-examples-per-second"
    LOSS = "loss"
    # A round's DP-SGD spend at the site (privacy.budget.PrivacySpend); all 0 without DP-SGD
    DP_SGD = "dp-sgd"
    DP_EPSILON = "dp-epsilon"
    DP_DELTA = "dp-delta"
    DP_NOISE_MULTIPLIER = "dp-noise-multiplier"
    DP_SAMPLE_RATE = "dp-sample-rate"
    DP_STEPS = "dp-steps"


SUM_SUFFIX = "-sum"
COUNT_SUFFIX = "-count"

# A train reply's own scalars; it also carries the DP-SGD spend (privacy.budget.PRIVACY_METRIC_KEYS).
TRAIN_REPLY_METRICS = (Metric.NUM_EXAMPLES, Metric.TRAIN_LOSS, Metric.TRAIN_SECONDS, Metric.TRAIN_EXAMPLES_PER_SECOND)


def sum_key(metric: str) -> str:
    """The reply key of a per-case metric's site-wide sum (``dice_scar`` → ``dice-scar-sum``)."""
    return f"{wire_name(metric)}{SUM_SUFFIX}"


def count_key(metric: str) -> str:
    return f"{wire_name(metric)}{COUNT_SUFFIX}"


def wire_name(metric: str) -> str:
    """Per-case metrics are snake_case in Python, kebab-case on the wire and in the history."""
    return metric.replace("_", "-")


def evaluate_reply_metric_keys(metric_names: Iterable[str]) -> frozenset[str]:
    """The keys of an evaluate reply's metrics: ``num-examples``, a sum and a count per metric and the loss."""
    names = (*metric_names, Metric.LOSS.value)
    return frozenset({Metric.NUM_EXAMPLES.value, *map(sum_key, names), *map(count_key, names)})


class ProtocolError(ValueError):
    """A message that does not have the form this version sends; says which record and key."""


def record_int(value: ConfigRecordValues) -> int:
    """``int()`` of one value of a Config- or MetricRecord (Flower types them as scalars or lists)."""
    if isinstance(value, list):
        raise TypeError(f"expected one number, got a list: {value!r}")
    return int(value)


def record_float(value: ConfigRecordValues) -> float:
    """``float()`` of one value of a Config- or MetricRecord (Flower types them as scalars or lists)."""
    if isinstance(value, list):
        raise TypeError(f"expected one number, got a list: {value!r}")
    return float(value)


_REQUIRED = object()


def _get(record: ConfigRecord, key: str, kind: type, where: str, default: Any = _REQUIRED) -> Any:
    if key not in record:
        if default is not _REQUIRED:
            return default
        raise ProtocolError(f"{where}: no {str(key)!r}")
    try:
        return kind(record[key])
    except (TypeError, ValueError):
        raise ProtocolError(f"{where}: {key}={record[key]!r} is not {kind.__name__}") from None


# The keys TrainInstruction encodes itself; the others in its record are ``extra``.
_TRAIN_INSTRUCTION_KEYS = (
    Key.TASK,
    Key.SERVER_ROUND,
    Key.DEVICE,
    Key.LOCAL_EPOCHS,
    Key.BATCH_SIZE,
    Key.LEARNING_RATE,
    Key.PROXIMAL_MU,
    Key.MAX_LOCAL_STEPS,
    Key.SEED,
    Key.FAIRNESS_MITIGATION,
    Key.BALANCE_ATTRIBUTE,
    Key.DP_SGD,
    Key.DP_SGD_TARGET_EPSILON,
    Key.DP_SGD_NOISE_MULTIPLIER,
    Key.DP_SGD_DELTA,
    Key.DP_SGD_MAX_GRAD_NORM,
    Key.DP_SGD_ACCOUNTANT,
    Key.DP_SGD_GRAD_SAMPLE_MODE,
    Key.DP_SGD_PLANNED_ROUNDS,
)


@dataclass(frozen=True)
class TrainInstruction:
    """What the server asks of a site's round of training (with the weights in ``arrays``)."""

    task: str
    server_round: int
    device: str
    training: TrainSettings
    dp_sgd: DpSgdRequest | None = None  # None: no DP-SGD this run
    extra: dict[str, Any] = field(default_factory=dict)  # the sites' mods' own keys (privacy.settings)

    def to_record(self) -> ConfigRecord:
        training = self.training
        values: dict[str, Any] = {
            Key.TASK: self.task,
            Key.SERVER_ROUND: self.server_round,
            Key.DEVICE: self.device,
            Key.LOCAL_EPOCHS: training.local_epochs,
            Key.BATCH_SIZE: training.batch_size,
            Key.LEARNING_RATE: training.learning_rate,
            Key.PROXIMAL_MU: training.proximal_mu,
            Key.MAX_LOCAL_STEPS: training.max_steps,
            Key.SEED: training.seed,
            Key.FAIRNESS_MITIGATION: training.fairness_mitigation,
            Key.BALANCE_ATTRIBUTE: training.balance_attribute,
            Key.DP_SGD: self.dp_sgd is not None,
        }
        if self.dp_sgd is not None:
            request = self.dp_sgd
            values |= {
                Key.DP_SGD_TARGET_EPSILON: request.target_epsilon,
                Key.DP_SGD_NOISE_MULTIPLIER: request.noise_multiplier,
                Key.DP_SGD_DELTA: request.delta,
                Key.DP_SGD_MAX_GRAD_NORM: request.max_grad_norm,
                Key.DP_SGD_ACCOUNTANT: request.accountant,
                Key.DP_SGD_GRAD_SAMPLE_MODE: request.grad_sample_mode,
                Key.DP_SGD_PLANNED_ROUNDS: request.planned_rounds,
            }
        return ConfigRecord({str(k): v for k, v in {**values, **self.extra}.items()})

    @classmethod
    def from_record(cls, record: ConfigRecord) -> TrainInstruction:
        where = "train instruction"
        training = TrainSettings(
            local_epochs=_get(record, Key.LOCAL_EPOCHS, int, where),
            batch_size=_get(record, Key.BATCH_SIZE, int, where),
            learning_rate=_get(record, Key.LEARNING_RATE, float, where),
            proximal_mu=_get(record, Key.PROXIMAL_MU, float, where),
            max_steps=_get(record, Key.MAX_LOCAL_STEPS, int, where),
            seed=_get(record, Key.SEED, int, where),
            fairness_mitigation=str(record.get(Key.FAIRNESS_MITIGATION, NO_MITIGATION)),
            balance_attribute=str(record.get(Key.BALANCE_ATTRIBUTE, DEFAULT_BALANCE_ATTRIBUTE)),
        )
        dp_sgd = None
        if bool(record.get(Key.DP_SGD, False)):
            dp_sgd = DpSgdRequest(
                max_grad_norm=_get(record, Key.DP_SGD_MAX_GRAD_NORM, float, where),
                delta=_get(record, Key.DP_SGD_DELTA, float, where),
                noise_multiplier=_get(record, Key.DP_SGD_NOISE_MULTIPLIER, float, where),
                target_epsilon=_get(record, Key.DP_SGD_TARGET_EPSILON, float, where),
                planned_rounds=_get(record, Key.DP_SGD_PLANNED_ROUNDS, int, where),
                accountant=_get(record, Key.DP_SGD_ACCOUNTANT, str, where),
                grad_sample_mode=_get(record, Key.DP_SGD_GRAD_SAMPLE_MODE, str, where),
            )
        own = {str(k) for k in _TRAIN_INSTRUCTION_KEYS}
        return cls(
            task=_get(record, Key.TASK, str, where),
            server_round=_get(record, Key.SERVER_ROUND, int, where),
            device=_get(record, Key.DEVICE, str, where),
            training=training,
            dp_sgd=dp_sgd,
            extra={k: v for k, v in record.items() if k not in own},
        )


@dataclass(frozen=True)
class EvaluateInstruction:
    """What the server asks of a site's evaluation (with the weights in ``arrays``)."""

    task: str
    server_round: int
    device: str
    # The consortium's floor for small cells; a site may hold a higher one (site.toml).
    suppression_threshold: int

    def to_record(self) -> ConfigRecord:
        return ConfigRecord(
            {
                str(Key.TASK): self.task,
                str(Key.SERVER_ROUND): self.server_round,
                str(Key.DEVICE): self.device,
                str(Key.SUPPRESSION_THRESHOLD): self.suppression_threshold,
            }
        )

    @classmethod
    def from_record(cls, record: ConfigRecord) -> EvaluateInstruction:
        where = "evaluate instruction"
        return cls(
            task=_get(record, Key.TASK, str, where),
            server_round=_get(record, Key.SERVER_ROUND, int, where),
            device=_get(record, Key.DEVICE, str, where),
            suppression_threshold=_get(record, Key.SUPPRESSION_THRESHOLD, int, where, default=1),
        )


@dataclass(frozen=True)
class TrainReply:
    """A site's answer to a training instruction (its weights travel beside it)."""

    site_id: str
    num_examples: int
    train_loss: float
    seconds: float
    examples_per_second: float
    privacy: dict[str, float] = field(default_factory=dict)  # DP-SGD spend (privacy.budget)

    def to_record(self, arrays: ArrayRecord) -> RecordDict:
        metrics = {
            Metric.NUM_EXAMPLES: self.num_examples,
            Metric.TRAIN_LOSS: self.train_loss,
            Metric.TRAIN_SECONDS: self.seconds,
            Metric.TRAIN_EXAMPLES_PER_SECOND: self.examples_per_second,
            **self.privacy,
        }
        return RecordDict(
            {
                str(Record.ARRAYS): arrays,
                str(Record.METRICS): MetricRecord({str(k): v for k, v in metrics.items()}),
                str(Record.SITE): ConfigRecord({str(Key.SITE_ID): self.site_id}),
            }
        )

    @classmethod
    def from_record(cls, content: RecordDict) -> TrainReply:
        """The reply's scalars (its weights are read by the strategy, under SecAgg+ already summed)."""
        metrics = _metrics_of(content, "train reply")
        named = {str(key) for key in TRAIN_REPLY_METRICS}
        return cls(
            site_id=_site_of(content, "train reply"),
            num_examples=record_int(metrics[Metric.NUM_EXAMPLES]),
            train_loss=record_float(metrics[Metric.TRAIN_LOSS]),
            seconds=record_float(metrics[Metric.TRAIN_SECONDS]),
            examples_per_second=record_float(metrics[Metric.TRAIN_EXAMPLES_PER_SECOND]),
            privacy={key: record_float(value) for key, value in metrics.items() if key not in named},
        )


@dataclass(frozen=True)
class EvaluateReply:
    """A site's answer to an evaluation instruction: sums and counts, and its fairness document."""

    site_id: str
    metrics: dict[str, float]  # num-examples and each metric's -sum and -count (client.app)
    fairness_document: str | None = None  # fairness.wire; None for a task without an audit

    def to_record(self) -> RecordDict:
        content = RecordDict(
            {
                str(Record.METRICS): MetricRecord(dict(self.metrics)),
                str(Record.SITE): ConfigRecord({str(Key.SITE_ID): self.site_id}),
            }
        )
        if self.fairness_document is not None:
            # A ConfigRecord, not a second MetricRecord: Flower's strategies aggregate exactly
            # one MetricRecord per reply, and these statistics are the audit's alone.
            content[str(Record.FAIRNESS)] = ConfigRecord({str(Key.FAIRNESS_DOCUMENT): self.fairness_document})
        return content

    @classmethod
    def from_record(cls, content: RecordDict) -> EvaluateReply:
        metrics = _metrics_of(content, "evaluate reply")
        return cls(
            site_id=_site_of(content, "evaluate reply"),
            metrics={key: record_float(value) for key, value in metrics.items()},
            fairness_document=cls.fairness_document_of(content),
        )

    @classmethod
    def fairness_document_of(cls, content: RecordDict) -> str | None:
        """The fairness document in a reply's content, or None where the site sent none."""
        if Record.FAIRNESS not in content:
            return None
        document = content[Record.FAIRNESS].get(Key.FAIRNESS_DOCUMENT)
        return None if document is None else str(document)


def site_id_of(content: RecordDict) -> str | None:
    """The name a site gives itself in a reply, or None where it gives none (or not as a name)."""
    if Record.SITE not in content.config_records:
        return None
    site = content.config_records[Record.SITE].get(Key.SITE_ID)
    return site if isinstance(site, str) and site else None


def _metrics_of(content: RecordDict, where: str) -> MetricRecord:
    if Record.METRICS not in content.metric_records:
        raise ProtocolError(f"{where}: no {Record.METRICS.value!r} record")
    return content.metric_records[Record.METRICS]


def _site_of(content: RecordDict, where: str) -> str:
    site = site_id_of(content)
    if site is None:
        raise ProtocolError(f"{where}: no {Record.SITE.value!r} record naming the site")
    return site
