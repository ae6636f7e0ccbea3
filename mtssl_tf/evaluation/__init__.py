"""Transfer evaluations: linear probe, detection, depth."""
