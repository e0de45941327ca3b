"""`trunkline cdr`: the CDR exporter, from the store's CDR stream to the configured sinks (docs/cdr.md)."""
