"""The synthetic upstream for the demo and the tests; no step imports it."""
