"""Finding scans, splitting subjects, and turning volumes into training batches."""
