"""STS (query protocol): GetCallerIdentity."""
