"""The queue between bots and GPU workers (arq + Redis): jobs, blobs, progress, fairness, limits, delivery.

Bots (torch-free):

    async with QueueClient(settings) as queue:
        ticket = await queue.submit_portrait(origin, selfie_bytes, PortraitParams(preset="ghibli"),
                                             idempotency_key=message_id)   # UserError -> tell the user
        async for event in queue.progress(ticket.job_id):                  # queued/started/step/... in order
            ...

    async with DeliveryConsumer(settings, "telegram", consumer_name=hostname) as deliveries:
        async for delivery in deliveries:                                   # every finished job, once
            images = [await queue.get_image(b) for b in delivery.result.image_blob_ids] if delivery.ok else []
            ...                                                             # send, then:
            await deliveries.ack(delivery)

Workers run `likeness worker` (`likeness.queue._worker`, the only module here that imports the engine).
Every Redis key name: `likeness.queue.keys` (the registry). Redis failures reach bots as `QueueUnavailable`.
"""

from likeness.queue import _keys as keys
from likeness.queue._admission import FAIR_OFFSET_MS
from likeness.queue._client import QueueClient
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
    "keys",
]
