"""``netsim emulate``: the same scenario, run by real ``meshnode up`` processes.

Each node runs in its own network namespace; a single user-space fabric process carries every
IP packet between namespaces through netsim's link models (this kernel has no netem). Modules:
``preflight`` (what cannot be emulated, refused before anything starts), ``namespaces`` (names,
addresses, teardown), ``fabric`` (the packet fabric process), ``workload`` (the seeded edit
schedule), ``agent`` (the admin calls and the client inside a namespace), ``runner`` (the run),
``results`` (results.json with ``netsim run``'s keys). See docs/netsim.md, "Emulation and
comparison".
"""
