# Copyright the roomcache authors. Licensed under the Apache License, Version 2.0.
"""The end-to-end benchmark of the Synapse module (`scripts/bench synapse`).

Not part of the module's package (`pip install ./integrations/synapse`
installs `roomcache_synapse` only): it runs from the repository, in the
pinned Synapse venv (`scripts/synapse venv`), which has this directory on
its path.

* `phases.py`: a benchmark-only Synapse module that times the phases of
  each Sliding Sync request (room lists, per-room data, extensions,
  connection state) and serves them at `/_roomcache_bench/phases`;
* `dataset.py`: users in N rooms with a real room list's state, built
  through Synapse's client API;
* `driver.py`: the simple cases' requests, both sides interleaved request
  by request;
* `element_x.json`, `element_x.py`: Element X's request shape and sequence
  (also used by the equivalence tests);
* `element_x_bench.py`, `answers.py`: the Element X case, and comparing
  both sides' answers;
* `report.py`, `element_x_report.py`: percentiles and the tables printed;
* `__main__.py`: the command line (`python -m roomcache_synapse_bench`).
"""
