"""Access to the competition repo: the git layer and the parsed reads built on it.

Owns everything that touches COMPETITION_REPO outside Temporal: the local clone and its
fetch/commit/push (`competition.repo`), and loading a round's files through the models of
`models.competition` (`competition.rounds`). Plain synchronous code with no Temporal imports;
`activities.competition_repo` exposes it to workflows as activities. Does not own the file
formats (`models.competition`) or any decision about them (`workflows.policy`).
"""
