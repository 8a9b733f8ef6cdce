"""Model serving: replica planning (plan), server processes (launch) and weft's own OpenAI-compatible
transformers server (the `server` package; it loads torch only when an app is created)."""
