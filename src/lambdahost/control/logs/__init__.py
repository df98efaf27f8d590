"""CloudWatch Logs: groups, streams, events, retention and filter patterns."""
