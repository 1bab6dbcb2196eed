"""iondrag's adapters: what talks to the outside world.

Candidate sources (:mod:`iondrag.adapters.sources`: the Materials Project, CIF folders, the
embedded set), the SQLite ranking database (:mod:`iondrag.adapters.database`), the jobflow
job stores (:mod:`iondrag.adapters.stores`), the validation journal
(:mod:`iondrag.adapters.journal`) and the reader of measured-conductivity tables
(:mod:`iondrag.adapters.table`). They turn files, servers and databases into the typed
records of :mod:`iondrag.screening` and back; the physics never imports them.
"""
