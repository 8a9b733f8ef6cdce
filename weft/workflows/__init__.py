"""The workflow service: every way a workflow is created, stepped through, started, cancelled,
retried and read, for the API's routers and weft's own callers (the retrain chain) alike.

Functions take the database session and the caller's user id and raise `weft.errors` (NotFound,
Invalid, Refused, Conflict, Unavailable); the API maps those to HTTP responses in one place.

- `views`: stored steps, merged data, the caller's workflow, the step API's merged view, lists.
- `steps`: one step of document 004's step API (`post_step`); a whole workflow at once (`create`).
- `lifecycle`: `start` (admission, then the flow run), `start_stored`, `cancel`, `retry`.
"""

from weft.workflows.lifecycle import cancel, compensate_after_cancel, retry, start_stored
from weft.workflows.steps import StepEnvelope, create, create_from_config, post_step
from weft.workflows.views import (
    WorkflowSummary,
    WorkflowView,
    get,
    listing,
    merged_data,
    refresh_status,
    stored_steps,
    summary,
    view,
)

__all__ = ["StepEnvelope", "WorkflowSummary", "WorkflowView", "cancel", "compensate_after_cancel", "create",
           "create_from_config", "get", "listing", "merged_data", "post_step", "refresh_status", "retry",
           "start_stored", "stored_steps", "summary", "view"]
