"""Deferred calls: model requests sent through a provider's batch API at batch prices.

A deferred call is reserved like a live one (at the batch price), queued in the
:class:`~budgetgraph.budgets.deferred.queue.BatchQueue` instead of sent, and the
node waits (a LangGraph interrupt) until its answer is in. The collector
(:mod:`budgetgraph.budgets.deferred.collector`) pools queued requests into batch
files, submits them, polls them, stores their answers, and says which runs can
resume; the resumed node finds its answer in the queue and the call settles
from the usage in the result file.
"""

from __future__ import annotations

from budgetgraph.budgets.deferred.queue import BatchQueue, QueuedRequest, RequestState, open_queue

__all__ = ["BatchQueue", "QueuedRequest", "RequestState", "open_queue"]
