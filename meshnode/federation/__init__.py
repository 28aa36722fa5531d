"""The operator's say over federation: which other operators' nodes this node links to and
hosts rooms with, and which rooms it announces (``meshnode.federation.policy``)."""

from meshnode.federation.policy import FederationPolicy, FederationRefusal

__all__ = ["FederationPolicy", "FederationRefusal"]
