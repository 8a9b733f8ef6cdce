"""The workflow service: every way a workflow is created, stepped through, started, cancelled,
retried and read, for the API's routers and weft's own callers (the retrain chain) alike.

Functions take the database session and the caller's user id and raise `weft.errors` (NotFound,
Invalid, Refused, Conflict, Unavailable); the API maps those to HTTP responses in one place.

- `views`: stored steps, merged data, the caller's workflow, the step API's merged view, lists.
- `steps`: one step of document 004's step API (`post_step`); a whole workflow at once (`create`).
- `lifecycle`: `start` (admission, then the flow run), `start_stored`, `cancel`, `retry`.
"""

from weft.workflows.lifecycle import cancel, compensate_after_cancel, retry, start, start_stored, stored_spec
from weft.workflows.steps import (
                                  ALIASES,
                                  StepEnvelope,
                                  create,
                                  create_from_config,
                                  discard,
                                  post_step,
                                  put_step,
                                  resolve_type,
                                  steps_of_config,
)
from weft.workflows.views import (
                                  WorkflowSummary,
                                  WorkflowView,
                                  get,
                                  listing,
                                  merged_data,
                                  next_step,
                                  owned,
                                  refresh_status,
                                  stored_steps,
                                  summary,
                                  view,
)

__all__ = ["ALIASES", "StepEnvelope", "WorkflowSummary", "WorkflowView", "cancel", "compensate_after_cancel",
           "create", "create_from_config", "discard", "get", "listing", "merged_data", "next_step", "owned",
           "post_step", "put_step", "refresh_status", "resolve_type", "retry", "start", "start_stored",
           "steps_of_config", "stored_spec", "stored_steps", "summary", "view"]
