"""Monitoring of deployed models: measured metrics and recommendations, data and latency drift checks
(evidently) and the retrain policy of drift alerts."""
