"""The queue between bots and GPU workers (arq + Redis): jobs, blobs, progress, fairness, limits, delivery.

Bots (torch-free):

    async with QueueClient(settings) as queue:
        ticket = await queue.submit_portrait(origin, selfie_bytes, spec,    # a likeness.requests.PortraitSpec
                                             idempotency_key=message_id)   # UserError -> tell the user
        async for event in queue.progress(ticket.job_id):                  # queued/started/step/... in order
            ...

    async with DeliveryConsumer(settings, "telegram", consumer_name=hostname) as deliveries:
        async for delivery in deliveries:                                   # every finished job, once
            images = [await queue.get_image(b) for b in delivery.result.image_blob_ids] if delivery.ok else []
            ...                                                             # send, then:
            await deliveries.ack(delivery)

The client and the protocol both sides share; workers are `likeness.worker`. Every Redis key name:
`likeness.queue.keys` (the registry). Redis failures reach bots as `QueueUnavailable`; `outlasting_outage`
rides out a Redis restart for writes that must not fail once a message is out.
"""

from likeness.queue import _keys as keys
from likeness.queue._abuse import AbuseLog, AuditEvent, BanInfo
from likeness.queue._admission import Admission
from likeness.queue._blobs import BlobStore
from likeness.queue._client import QueueClient
from likeness.queue._delivery import DeliveryConsumer, append_delivery
from likeness.queue._models import (
    Delivery,
    JobKind,
    JobPayload,
    Origin,
    Platform,
    ProgressEvent,
    QueueStats,
    ResultMeta,
    ResultRecord,
    Stage,
    Ticket,
)
from likeness.queue._progress import add_progress
from likeness.queue._redis import REDIS_DOWN, outlasting_outage, redis_errors, worker_retry

__all__ = [
    "REDIS_DOWN",
    "AbuseLog",
    "Admission",
    "AuditEvent",
    "BanInfo",
    "BlobStore",
    "Delivery",
    "DeliveryConsumer",
    "JobKind",
    "JobPayload",
    "Origin",
    "Platform",
    "ProgressEvent",
    "QueueClient",
    "QueueStats",
    "ResultMeta",
    "ResultRecord",
    "Stage",
    "Ticket",
    "add_progress",
    "append_delivery",
    "keys",
    "outlasting_outage",
    "redis_errors",
    "worker_retry",
]
