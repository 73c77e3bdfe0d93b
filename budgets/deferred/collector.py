"""The collector: pools queued requests into batch files, submits, polls and stores answers.

One pass (:meth:`Collector.collect`) does, in order:

1. **recover** submissions a killed collector left half done: a submission
   token whose batch exists (the token is the batch's ``metadata``) is adopted,
   else its requests go back to the queue;
2. **submit** every pool that is due (``max_requests`` queued for one tier and
   model, or the oldest queued ``window_s`` ago): one JSONL file uploaded with
   purpose ``batch`` (``/v1/files``), one batch created on
   ``/v1/chat/completions`` (``/v1/batches``);
3. **poll** every open batch, and when it has ended (``completed``, ``failed``,
   ``expired``, ``cancelled``) download its output and error files and store
   each request's answer or error in the queue, in one transaction.

It talks to each tier's endpoint through the ``openai`` client's own file and
batch APIs. Resuming the runs whose answers are all in is the caller's
(``budgetgraph collect``, or the served graph's background task): see
:meth:`~budgetgraph.budgets.deferred.queue.BatchQueue.waiting`.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from budgetgraph.budgets.config import DeferredSettings, ModelsConfig
from budgetgraph.budgets.deferred.queue import BatchQueue
from budgetgraph.lazy import lazy_module

openai = lazy_module("openai")  # imported at the first model call (see budgetgraph.lazy)

logger = logging.getLogger(__name__)

ENDED = ("completed", "failed", "expired", "cancelled")
"""Batch statuses after which nothing more will be answered."""

SUBMISSION_KEY = "budgetgraph_submission"
"""The batch ``metadata`` key holding the submission token."""


@dataclass
class Pass:
    """What one collector pass did.

    Attributes:
        submitted: Batch ids created.
        ended: Batch id -> its final status.
        recovered: Submission tokens adopted or put back after a killed collector.
    """

    submitted: list[str] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)
    recovered: list[str] = field(default_factory=list)


class Collector:
    """Submits and collects the batch queue's requests.

    Args:
        queue: The batch queue.
        models: The resolved ``models.yaml`` (each tier's endpoint).
        settings: ``budgets.yaml``'s ``deferred`` section.
        client_for: The ``openai.OpenAI`` client of a tier (default: one per tier,
            from its endpoint).
    """

    def __init__(
        self,
        queue: BatchQueue,
        models: ModelsConfig,
        settings: DeferredSettings,
        *,
        client_for: Callable[[str], openai.OpenAI] | None = None,
    ) -> None:
        self.queue = queue
        self.models = models
        self.settings = settings
        self._clients: dict[str, openai.OpenAI] = {}
        self._client_for = client_for

    def client(self, tier: str) -> openai.OpenAI:
        """The OpenAI client of ``tier``'s endpoint."""
        if self._client_for is not None:
            return self._client_for(tier)
        if tier not in self._clients:
            endpoint = self.models.endpoints[tier]  # type: ignore[index]
            self._clients[tier] = openai.OpenAI(
                base_url=endpoint.base_url,
                api_key=endpoint.api_key or "no-key",
                max_retries=2,
                timeout=endpoint.settings.timeout_s,
            )
        return self._clients[tier]

    def collect(self, *, force: bool = False) -> Pass:
        """One pass: recover, submit what is due (everything with ``force``), poll.

        Raises:
            openai.APIError: An endpoint failed; the queue is left consistent.
        """
        done = Pass()
        done.recovered = self.recover()
        done.submitted = self.submit(force=force)
        done.ended = self.poll()
        return done

    def recover(self, older_than_s: float | None = None) -> list[str]:
        """Settle submissions left ``submitting`` by a collector that died."""
        age = self.settings.submit_timeout_s if older_than_s is None else older_than_s
        recovered = []
        for token, tier, model in self.queue.stale_submissions(age):
            batch = self._find(tier, token)
            if batch is None:
                self.queue.unsubmit(token)
                logger.info("Submission %s made no batch: its requests are queued again", token)
            else:
                self.queue.submitted(
                    token,
                    batch_id=batch.id,
                    tier=tier,
                    model=model,
                    input_file_id=batch.input_file_id,
                    status=batch.status,
                )
                logger.info("Submission %s made batch %s: adopted", token, batch.id)
            recovered.append(token)
        return recovered

    def _find(self, tier: str, token: str) -> Any:
        """The batch whose metadata holds ``token``, among the endpoint's batches, or ``None``."""
        for batch in self.client(tier).batches.list(limit=100):
            if (batch.metadata or {}).get(SUBMISSION_KEY) == token:
                return batch
        return None

    def submit(self, *, force: bool = False) -> list[str]:
        """Submit every pool that is due; return the batch ids created."""
        created = []
        for pool in self.queue.pools(
            window_s=self.settings.window_s, max_requests=self.settings.max_requests, force=force
        ):
            while True:
                token = uuid.uuid4().hex
                limit = self.settings.max_requests
                taken = self.queue.take(pool.tier, pool.model, limit=limit, submission=token)
                if not taken:
                    break
                lines = "".join(
                    json.dumps(
                        {
                            "custom_id": r.custom_id,
                            "method": "POST",
                            "url": "/v1/chat/completions",
                            "body": r.body,
                        },
                        separators=(",", ":"),
                    )
                    + "\n"
                    for r in taken
                )
                client = self.client(pool.tier)
                try:
                    uploaded = client.files.create(
                        file=(f"budgetgraph-{token}.jsonl", lines.encode("utf-8")), purpose="batch"
                    )
                    if not self.queue.confirm(token, len(taken)):
                        # Slow enough that another collector took the requests back: no batch.
                        logger.warning("Submission %s was recovered by another collector; not created", token)
                        break
                    batch = client.batches.create(
                        input_file_id=uploaded.id,
                        endpoint="/v1/chat/completions",
                        completion_window=self.settings.completion_window,
                        metadata={SUBMISSION_KEY: token},
                    )
                except openai.APIStatusError:
                    self.queue.unsubmit(token)  # refused: no batch exists, the requests wait again
                    raise
                held = self.queue.submitted(
                    token,
                    batch_id=batch.id,
                    tier=pool.tier,
                    model=pool.model,
                    input_file_id=uploaded.id,
                    status=batch.status,
                )
                if held < len(taken):
                    # Recovered while the batch was being created: its requests are queued again,
                    # so this batch must not answer them twice.
                    logger.warning("Batch %s lost its requests to a recovery; cancelling it", batch.id)
                    client.batches.cancel(batch.id)
                logger.info("Batch %s: %d requests to %s (%s)", batch.id, len(taken), pool.model, pool.tier)
                created.append(batch.id)
                if len(taken) < self.settings.max_requests:
                    break
        return created

    def poll(self) -> dict[str, str]:
        """Poll every open batch; store the answers of those that ended. Returns id -> status."""
        ended: dict[str, str] = {}
        for batch_id, tier, _model in self.queue.open_batches():
            client = self.client(tier)
            batch = client.batches.retrieve(batch_id)
            if batch.status not in ENDED:
                self.queue.note_status(batch_id, batch.status)
                continue
            results: dict[str, tuple[bool, Mapping[str, Any]]] = {}
            for file_id in (batch.error_file_id, batch.output_file_id):  # answers win over errors
                if file_id:
                    for line in client.files.content(file_id).text.splitlines():
                        if line.strip():
                            custom_id, ok, payload = _result_of(json.loads(line))
                            results[custom_id] = (ok, payload)
            self.queue.complete(batch_id, batch.status, results)
            ended[batch_id] = batch.status
            logger.info("Batch %s %s: %d results", batch_id, batch.status, len(results))
        return ended


def _result_of(line: Mapping[str, Any]) -> tuple[str, bool, Mapping[str, Any]]:
    """(custom_id, answered, payload) of one output- or error-file line."""
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    body = response.get("body") if isinstance(response, Mapping) else None
    if line.get("error") is None and isinstance(body, Mapping) and int(response.get("status_code", 0)) == 200:
        return custom_id, True, body
    error = line.get("error") or (body or {}).get("error") or {"message": "no answer"}
    status = response.get("status_code") if isinstance(response, Mapping) else None
    return custom_id, False, {"error": error, "status_code": status}
