"""Reference miner: an HTTP server with the same API as a real miner image (`python -m miner`).

It turns a prompt image + seed into a deterministic GLB mesh, with configurable latency, start-up
time, failure rate and "variant" (a different model). Imports only `models.miner_api` from the
project, so it starts fast and never pulls in torch.
"""
