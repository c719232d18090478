"""The partner node: a signed, hash-chained, event-sourced record of cases."""
