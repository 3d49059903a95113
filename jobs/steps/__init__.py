"""The steps of the loop: each reads through jobs.io, computes with core and models, and writes through jobs.io."""
