"""The CloudWatch Logs API (json protocol, `X-Amz-Target: Logs_20140328.<Operation>`)."""
