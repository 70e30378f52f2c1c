"""One router per resource: classify, decisions, review, taxonomy, stats, health, and the web pages."""
