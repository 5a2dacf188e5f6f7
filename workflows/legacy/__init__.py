"""AuditWorkflow/PodWorkflow v1, frozen: the code audits started before v2 still run on.

Never edit the logic here: an audit started by v1 (its history has no `audit-v2` patch marker,
or its pods have `protocol` 1) replays these commands exactly. Delete this package only when no
v1 history can be running or replayed any more (tests/replay/histories/v1 says which exist).
"""
