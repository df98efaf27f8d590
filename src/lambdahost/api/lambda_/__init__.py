"""The Lambda API: one small handler per operation, and the function URL front door."""
