"""Data contracts: loading suites, row rules as Spark predicates, quarantine, Data Docs, profiling."""
