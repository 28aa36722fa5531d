"""The per-op rules of scene ops (``CREATE``, ``SET``, ``MOVE``, ``DELETE``), judged against a
change's causal past.

One function for both layers: ``SceneReplica._integrate`` calls it for a clear change (a
violation rejects the change), and ``meshnode.crdt.privacy`` for a decrypted sealed payload (a
violation voids the payload, without cascading). The rules and reasons are those of
docs/protocol.md, "Receiving a change", rule 7.
"""

from collections.abc import Callable, Mapping
from typing import Any

from meshnode.crdt.graph import ChangeGraph
from meshnode.crdt.ids import ROOT, TRASH
from meshnode.crdt.results import Rejected
from protocol.change import OP_CREATE, OP_DELETE, OP_MOVE, OP_SET
from protocol.values import Value

Node = tuple[bytes, int]
SceneSet = tuple[Node, str, str, Value]
SceneMove = tuple[int, Node, Node]


def resolve(ref: Any, author: bytes, actors: list[bytes]) -> Node:
    """An entity reference of an op, as ``(creator, counter)``."""
    if ref is None:
        return ROOT
    if type(ref) is int:
        return (author, ref)
    return (actors[ref[0]], ref[1])


def judge_scene_ops(
    ops: list[list[Any]],
    author: bytes,
    actors: list[bytes],
    names: list[str],
    *,
    admin: bool,
    quota: int | None,
    creation: dict[Node, int],
    created_by: dict[Node, list[bytes]],
    equivocators: set[bytes],
    graph: ChangeGraph,
    deps: list[bytes],
    vv: Mapping[bytes, int],
    other: Callable[[int, list[Any]], None],
) -> tuple[dict[Node, Node], list[SceneSet], list[SceneMove], bool]:
    """Judge every op in order; scene ops here, any other op code by ``other(index, op)``.

    Returns ``(created: entity -> parent, sets, moves, foreign)`` (``foreign``: touches an
    entity of someone else, which needs admin); raises ``Rejected`` on the first violation.
    """
    created: dict[Node, Node] = {}  # entity -> parent; ordered, for deterministic iteration

    def known(ent: Node) -> bool:
        """Created in this change's causal past (or earlier in this change)?"""
        if ent in created:
            return True
        s = creation.get(ent)
        if s is None or s > vv.get(ent[0], 0):
            return False
        if ent[0] in equivocators:
            # The version vector cannot tell an equivocator's twin changes apart.
            makers = created_by.get(ent)
            if makers is None:  # known only from a snapshot: the version vector decides
                return True
            return any(graph.in_past(c, deps) for c in makers)
        return True

    sets: list[SceneSet] = []
    moves: list[SceneMove] = []
    foreign = False
    for idx, op in enumerate(ops):
        code = op[0]
        if code == OP_SET:
            r = op[1]
            if type(r) is int:
                ent: Node = (author, r)
            elif r is None:
                raise Rejected("root_is_immutable")
            else:
                ent = (actors[r[0]], r[1])
            if ent not in created:
                created_in = creation.get(ent)
                if (
                    created_in is None or created_in > vv.get(ent[0], 0)
                    or (ent[0] in equivocators and not known(ent))
                ):
                    raise Rejected("unknown_entity")
            if ent[0] is not author:
                if not admin:
                    raise Rejected("not_entity_owner")
                foreign = True
            sets.append((ent, names[op[2]], names[op[3]], op[4]))
        elif code == OP_CREATE:
            ent = (author, op[1])
            if ent in created or known(ent):
                raise Rejected("entity_exists")
            if quota is not None and op[1] > quota:
                raise Rejected("quota")
            parent = resolve(op[2], author, actors)
            if parent != ROOT and not known(parent):
                raise Rejected("unknown_entity")
            created[ent] = parent
            moves.append((idx, ent, parent))
        elif code in (OP_MOVE, OP_DELETE):
            ent = resolve(op[1], author, actors)
            parent = TRASH if code == OP_DELETE else resolve(op[2], author, actors)
            if not known(ent) or (parent != ROOT and parent != TRASH and not known(parent)):
                raise Rejected("unknown_entity")
            if ent[0] is not author:
                if not admin:
                    raise Rejected("not_entity_owner")
                foreign = True
            moves.append((idx, ent, parent))
        else:
            other(idx, op)
    return created, sets, moves, foreign


__all__ = ["judge_scene_ops", "resolve"]
