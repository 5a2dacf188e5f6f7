"""Test support shared by `tests/` and `benchmarks/`: in-memory fakes of the activities.

Owns `testing.fakes` (FakeWorld: every activity a workflow calls, registered under its real
name, with no I/O). Neither tests nor benchmarks own it, so benchmarks never import from
`tests` and the two do not import each other in a cycle. Not part of the installed package.
"""
