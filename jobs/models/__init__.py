"""Model flavors behind one interface: train, log, load once per worker, predict a batch."""
