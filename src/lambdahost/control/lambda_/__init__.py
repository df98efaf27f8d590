"""Lambda: functions, versions, aliases, layers, URLs, permissions and their rules."""
