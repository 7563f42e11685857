"""The replicated state machine: the MVCC store (:mod:`.mvcc`), the lessor (:mod:`.lease`),
and :mod:`.fsm`, which applies committed entries to them.
Deterministic: no I/O, no clocks, no threads."""
