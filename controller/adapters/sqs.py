"""The thin SQS layer of the queue feed: long-poll receive, batch delete, and errors classified by what to do.

No retries here: the feed (``controller.replacement.queue_feed``) backs off on its injected clock and reports each
outage once. A receive waits up to ``WAIT_SECONDS`` for messages (long polling,
https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-short-and-long-polling.html), so
the read timeout is longer than that.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

WAIT_SECONDS = 20  # the longest long poll SQS allows
MAX_MESSAGES = 10  # the most messages one receive returns

ACCESS_DENIED = "access-denied"
MISSING_QUEUE = "missing-queue"
THROTTLED = "throttled"
UNREACHABLE = "unreachable"
OTHER = "other"
#: What a failed call is reported as, and what to do about each.
ADVICE = {
    ACCESS_DENIED: "give the controller's role sqs:ReceiveMessage and sqs:DeleteMessage on this queue (docs/install.md)"
    ", and kms:Decrypt if the queue is encrypted with a customer key",
    MISSING_QUEUE: "create the queue and its EventBridge rules (docs/install.md), or correct SPOT_GUARD_QUEUE_URL",
    THROTTLED: "nothing: SQS is throttling; Spot Guard backs off and reads again",
    UNREACHABLE: "check the network path to SQS (a VPC endpoint, the proxy, DNS) from the controller's pod",
    OTHER: "read the error; Spot Guard keeps retrying",
}
_MISSING_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"})
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "KMS.AccessDeniedException",
        "UnauthorizedOperation",
        "InvalidClientTokenId",
    }
)
_THROTTLING_CODES = frozenset({"Throttling", "ThrottlingException", "RequestThrottled", "OverLimit"})


class QueueError(RuntimeError):
    """A call to the queue failed; ``kind`` is one of the kinds in ``ADVICE``, ``code`` AWS's error code."""

    def __init__(self, operation: str, kind: str, code: str, message: str, queue_url: str) -> None:
        super().__init__(f"{operation} on queue {queue_url} failed: {code}: {message}")
        self.operation = operation
        self.kind = kind
        self.code = code

    @property
    def advice(self) -> str:
        return ADVICE[self.kind]


@dataclasses.dataclass(frozen=True)
class Message:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int = 1


class EventQueue:
    """One SQS queue (``queue_url``)."""

    def __init__(self, queue_url: str, client: Any = None, *, connect_timeout: float = 1.0) -> None:
        self.queue_url = queue_url
        if client is None:
            client = boto3.session.Session().client(
                "sqs",
                config=BotoConfig(
                    connect_timeout=connect_timeout,
                    read_timeout=WAIT_SECONDS + 10,
                    retries={"max_attempts": 1, "mode": "standard"},
                ),
            )
        self.client = client

    def receive(self, wait_seconds: int = WAIT_SECONDS, max_messages: int = MAX_MESSAGES) -> list[Message]:
        answer = self._call(
            "ReceiveMessage",
            lambda: self.client.receive_message(
                QueueUrl=self.queue_url,
                WaitTimeSeconds=wait_seconds,
                MaxNumberOfMessages=max_messages,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ),
        )
        found = []
        for item in answer.get("Messages") or []:
            attributes = item.get("Attributes") or {}
            found.append(
                Message(
                    message_id=str(item.get("MessageId", "")),
                    receipt_handle=str(item["ReceiptHandle"]),
                    body=str(item.get("Body", "")),
                    receive_count=int(attributes.get("ApproximateReceiveCount", "1") or 1),
                )
            )
        return found

    def delete(self, messages: Sequence[Message]) -> list[str]:
        """Delete ``messages`` (at most 10); returns the ids SQS did not delete (they come back later)."""
        if not messages:
            return []
        entries = [{"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(messages)]
        answer = self._call(
            "DeleteMessageBatch", lambda: self.client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        )
        return [messages[int(f["Id"])].message_id for f in answer.get("Failed") or []]

    def arn(self) -> str:
        answer = self._call(
            "GetQueueAttributes",
            lambda: self.client.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"]),
        )
        return str(answer["Attributes"]["QueueArn"])

    def _call(self, operation: str, call: Any) -> Any:
        try:
            return call()
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            kind = ACCESS_DENIED if status == 403 and kind_of(code) == OTHER else kind_of(code)
            raise QueueError(operation, kind, code, str(error.get("Message", "")), self.queue_url) from exc
        except BotoCoreError as exc:
            raise QueueError(operation, UNREACHABLE, type(exc).__name__, str(exc), self.queue_url) from exc


def kind_of(code: str) -> str:
    """What an SQS error code means for the feed (one of the kinds in ``ADVICE``)."""
    if code in _MISSING_CODES:
        return MISSING_QUEUE
    if code in _ACCESS_CODES:
        return ACCESS_DENIED
    if code in _THROTTLING_CODES:
        return THROTTLED
    return OTHER
