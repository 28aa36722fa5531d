"""netsim: a deterministic discrete-event network simulator for meshnode.

It runs the real sans-I/O protocol core on simulated links (latency distributions, jitter,
random and bursty loss, bandwidth with a FIFO queue, MTU packetisation, SCTP-like reliable
delivery, partitions) over generated topologies, on a virtual clock. All randomness comes from
seeded ``random.Random`` instances, so the same seed gives the same result, byte for byte.

Modules: ``netsim.links`` (one-direction link models and presets), ``netsim.topology`` (graph
builders and path helpers).
"""
