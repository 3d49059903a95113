"""The one place each for the Spark session, the lake, the registry, the object store, DVC and alerts."""
