"""Offline tuning of the semantic cache: evaluation on labelled pairs and fitting a verifier.

Kept beside the runtime cache (:mod:`budgetgraph.budgets.cache`), not inside it, the
way LangGraph keeps its checkpoint conformance suite apart from the savers: this
package imports the runtime (to look pairs up through the real cache path), and the
runtime never imports this package. ``budgetgraph cache eval`` and ``cache
calibrate`` run it; a model call never does.

- :mod:`~budgetgraph.budgets.cachetune.evaluate`: read labelled pairs, score the
  cache on them (precision, recall, false hits per category and refusal reason).
- :mod:`~budgetgraph.budgets.cachetune.fit`: fit the optional duplicate
  classifier (:class:`~budgetgraph.budgets.cache.verifier.Verifier`) and pick its cutoff.
"""

from __future__ import annotations
