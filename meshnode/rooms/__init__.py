"""Rooms on a node: invites and admission (who may join, with which role)."""
