"""The queue between bots and GPU workers (arq + Redis): jobs, blobs, progress, fairness, limits, delivery.

Bots use `QueueClient` (submit, follow, cancel, forget) and `DeliveryConsumer` (finished jobs, reliably);
workers run `likeness worker` (`likeness.queue._worker`, the only module here that imports torch, loaded
lazily by `worker_settings`). Redis key names are listed in `likeness/queue/_keys.py`.
"""

from likeness.queue._client import FAIR_OFFSET_MS, QueueClient
from likeness.queue._delivery import DeliveryConsumer, append_delivery
from likeness.queue._models import (
    Delivery,
    EditParams,
    JobKind,
    JobPayload,
    Origin,
    Platform,
    PortraitParams,
    ProgressEvent,
    QueueStats,
    ResultRecord,
    Stage,
    Ticket,
)

__all__ = [
    "FAIR_OFFSET_MS",
    "Delivery",
    "DeliveryConsumer",
    "EditParams",
    "JobKind",
    "JobPayload",
    "Origin",
    "Platform",
    "PortraitParams",
    "ProgressEvent",
    "QueueClient",
    "QueueStats",
    "ResultRecord",
    "Stage",
    "Ticket",
    "append_delivery",
]
