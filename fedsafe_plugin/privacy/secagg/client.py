"""SecAgg+ client: one function per stage, state in a ConfigRecord kept in `context.state`.

Stages (all `train` messages): advertise (fresh X25519 keys) -> share-keys (Shamir shares of the
self-mask seed and mask key, sealed for each neighbour) -> train (open the shares, train, keep the
plaintext update on the device) -> mask (send the masked fixed-point update) -> confirm (check the
survivor/dropout lists, MAC them for each neighbour) -> unmask (verify that at least s of the
neighbourhood saw the same lists, then reveal seed shares of survivors and key shares of dropped
neighbours; never both for one node, and only once per round).
Every check that fails raises SecAggError with the reason; the mod turns it into an error reply.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedsafe_plugin.privacy.secagg import primitives as P
from fedsafe_plugin.privacy.secagg import wire as W
from fedsafe_plugin.privacy.secagg.graph import Plan, graph_seed, neighbours, plan
from fedsafe_plugin.privacy.secagg.quantize import encode

def channel_label(session: bytes) -> bytes:
    """HKDF label of the share-encryption key between two clients."""
    return b"fedsafe-secagg-channel" + session


def mask_label(session: bytes, a: int, b: int) -> bytes:
    """HKDF label of the pairwise mask key of nodes a and b (order-free)."""
    lo, hi = sorted((a, b))
    return b"fedsafe-secagg-mask" + session + f"{lo}:{hi}".encode()


def share_aad(session: bytes, src: int, dst: int) -> bytes:
    """Associated data binding a sealed share to its session, sender and recipient."""
    return session + f"{src}>{dst}".encode()


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise P.SecAggError(reason)


def _plan_from(state: dict[str, Any], n: int) -> Plan:
    return plan(n, int(state["neighbours"]), float(state["min-survivors"]))


def _require_enough(state: dict[str, Any], rules: Plan, count: int, stage: str, what: str) -> None:
    """At least t of `what`, and at least the client's own floor (node config), which the server cannot lower."""
    _require(count >= rules.min_survivors, f"{stage}: {count} {what} < threshold t={rules.min_survivors}")
    own = int(state.get("min-clients", 0))
    _require(count >= own, f"{stage}: {count} {what} < this client's minimum {own}")


def _expect(state: dict[str, Any] | None, stage: str, session: bytes) -> dict[str, Any]:
    _require(state is not None and state.get("session") == session,
             f"stage {stage!r} for a round this client never joined (unknown session)")
    assert state is not None
    _require(state["done"] == W.STAGES[W.STAGES.index(stage) - 1],
             f"stage {stage!r} out of order (last completed stage: {state['done']!r})")
    return state


def advertise(node: int, request: dict[str, Any], min_clients: int = 0) -> tuple[dict[str, Any], RecordDict]:
    """Make this round's two key pairs (share channel, masks); reply with the public keys.

    `min_clients` is the client's own floor on how many clients its update may be summed with
    (from its node config): the server sets t, so without a floor it could run a round of two.
    """
    nodes = W.ids_in(request["nodes"])
    _require(node in nodes, "advertise: this node is not in the round's node list")
    _require(len(set(nodes)) == len(nodes), "advertise: the node list has duplicates")
    _require(len(nodes) >= min_clients, f"advertise: {len(nodes)} clients in the round < this client's minimum {min_clients}")
    sk_c, pk_c = P.new_keypair()
    sk_s, pk_s = P.new_keypair()
    state = {
        "session": bytes(request["session"]), "done": W.ADVERTISE, "nodes0": W.ids_out(nodes), "min-clients": min_clients,
        "neighbours": int(request["neighbours"]), "min-survivors": float(request["min-survivors"]),
        "bits": int(request["bits"]), "clip-range": float(request["clip-range"]),
        "sk-c": sk_c, "sk-s": sk_s, "pk-c": pk_c, "pk-s": pk_s,
    }
    return state, RecordDict({W.RECORD: ConfigRecord({"stage": W.ADVERTISE, "pk-c": pk_c, "pk-s": pk_s})})


def share_keys(node: int, state: dict[str, Any] | None, request: dict[str, Any]) -> tuple[dict[str, Any], RecordDict]:
    """Check the advertised key set, derive the graph, seal seed and key shares for each neighbour."""
    session = bytes(request["session"])
    state = _expect(state, W.SHARE_KEYS, session)
    nodes = W.ids_in(request["nodes"])
    keys = dict(zip(nodes, zip(request["pk-c"], request["pk-s"], strict=True), strict=True))
    _require(len(keys) == len(nodes), "share-keys: the key list has duplicate nodes")
    _require(set(nodes) <= set(W.ids_in(state["nodes0"])), "share-keys: a listed node was not in this round")
    _require(keys.get(node) == (state["pk-c"], state["pk-s"]), "share-keys: the server changed or omitted this client's own public keys")
    _require(len({k for pair in keys.values() for k in pair}) == 2 * len(nodes), "share-keys: two nodes advertise the same public key")
    rules = _plan_from(state, len(nodes))
    _require_enough(state, rules, len(nodes), "share-keys", "clients")
    graph = neighbours(nodes, rules.k, graph_seed(session, keys))
    holders = sorted(graph[node] + [node])
    seed = P.new_seed()
    seed_shares = P.split_secret(seed, rules.shamir, len(holders))
    key_shares = P.split_secret(state["sk-s"], rules.shamir, len(holders))
    to, sealed = [], []
    for holder, s_share, k_share in zip(holders, seed_shares, key_shares, strict=True):
        if holder == node:
            state["own-seed-share"], state["own-key-share"] = s_share, k_share
            continue
        key = P.agree(state["sk-c"], keys[holder][0], channel_label(session))
        to.append(str(holder))
        sealed.append(P.seal(key, s_share + k_share, share_aad(session, node, holder)))
    state.update({
        "done": W.SHARE_KEYS, "seed": seed, "nodes1": W.ids_out(nodes), "peers": W.ids_out(graph[node]),
        "pk-c-all": [keys[n][0] for n in nodes], "pk-s-all": [keys[n][1] for n in nodes],
    })
    reply = {"stage": W.SHARE_KEYS, "to": to, "sealed": sealed, "commitment": P.commitment(session, seed)}
    return state, RecordDict({W.RECORD: ConfigRecord(reply)})


def receive_shares(node: int, state: dict[str, Any] | None, request: dict[str, Any]) -> dict[str, Any]:
    """On the train message: check the list of key-sharers and open every neighbour's shares."""
    session = bytes(request["session"])
    state = _expect(state, W.TRAIN, session)
    nodes1 = W.ids_in(state["nodes1"])
    nodes2 = W.ids_in(request["nodes"])
    _require(node in nodes2, "train: this client is missing from the list of key-sharers")
    _require(set(nodes2) <= set(nodes1) and len(set(nodes2)) == len(nodes2),
             "train: the key-sharer list names nodes that never advertised keys (or repeats one)")
    rules = _plan_from(state, len(nodes1))
    _require_enough(state, rules, len(nodes2), "train", "key-sharers")
    pk_c = dict(zip(nodes1, state["pk-c-all"], strict=True))
    senders = W.ids_in(request.get("from"))
    blobs = dict(zip(senders, request.get("sealed") or [], strict=True))
    expected = set(W.ids_in(state["peers"])) & set(nodes2)
    _require(set(senders) == expected and len(senders) == len(blobs),
             f"train: got shares from {sorted(set(senders))}, expected exactly the neighbours {sorted(expected)}")
    held_from, seed_shares, key_shares = [str(node)], [state["own-seed-share"]], [state["own-key-share"]]
    for src in sorted(expected):
        key = P.agree(state["sk-c"], pk_c[src], channel_label(session))
        plain = P.open_sealed(key, blobs[src], share_aad(session, src, node))
        half = len(plain) // 2
        held_from.append(str(src))
        seed_shares.append(plain[:half])
        key_shares.append(plain[half:])
    state.update({"done": W.TRAIN, "nodes2": W.ids_out(nodes2), "held-from": held_from,
                  "seed-shares": seed_shares, "key-shares": key_shares})
    return state


def masked_input(update: np.ndarray, share: float, seed: bytes, pair_keys: list[tuple[bytes, bool]],
                 clip_range: float, bits: int) -> np.ndarray:
    """encode(update) + self mask + pairwise masks (added when this node's id is the smaller), mod 2^32."""
    masked = encode(update, share, clip_range, bits, np.random.default_rng())
    stream = P.Keystream(masked.size)
    masked += stream(seed)
    for key, add in pair_keys:
        if add:
            masked += stream(key)
        else:
            masked -= stream(key)
    return masked


def mask(node: int, state: dict[str, Any] | None, request: dict[str, Any], update: np.ndarray, weight: float) -> tuple[dict[str, Any], RecordDict]:
    """Check the masking set and weights, then send SR(a_k * update) plus all masks, in uint32."""
    session = bytes(request["session"])
    state = _expect(state, W.MASK, session)
    nodes1, nodes2 = W.ids_in(state["nodes1"]), W.ids_in(state["nodes2"])
    nodes3 = W.ids_in(request["nodes"])
    weights = dict(zip(nodes3, (float(w) for w in request["weights"]), strict=True))
    rules = _plan_from(state, len(nodes1))
    _require(node in nodes3, "mask: this client is not in the masking set")
    _require(set(nodes3) <= set(nodes2) and len(weights) == len(nodes3),
             "mask: the masking set names nodes that never shared keys (or repeats one)")
    _require_enough(state, rules, len(nodes3), "mask", "clients")
    _require(all(w >= 0 for w in weights.values()) and weights[node] == weight,
             f"mask: the server states this client's weight as {weights[node]}, not {weight}")
    total = sum(weights.values())
    _require(total > 0, "mask: the total weight is 0")
    pk_s = dict(zip(nodes1, state["pk-s-all"], strict=True))
    pair_keys = [(P.agree(state["sk-s"], pk_s[peer], mask_label(session, node, peer)), node < peer)
                 for peer in sorted(set(W.ids_in(state["peers"])) & set(nodes3))]
    masked = masked_input(update, weight / total, state["seed"], pair_keys, float(state["clip-range"]), int(state["bits"]))
    # Bind the masking set and weights this client was shown: its neighbours reveal its self-mask
    # seed only if their view is the same. Otherwise a server could show the victim "all other
    # weights are 0" and everyone else "the victim's weight is huge", and unmask the victim alone.
    view = _view_digest(session, nodes3, [weights[n] for n in nodes3])
    peers, pk_c, _ = _neighbourhood(state)
    to = sorted(set(peers) & set(nodes3))
    tags = [_confirm_tag(state, pk_c[peer], node, peer, view) for peer in to]
    state.update({"done": W.MASK, "nodes3": W.ids_out(nodes3), "view": view})
    content = RecordDict({
        W.RECORD: ConfigRecord({"stage": W.MASK, "to": W.ids_out(to), "tags": tags}),
        W.MASKED: ArrayRecord({"y": Array(masked)}),
    })
    return state, content


def _view_digest(session: bytes, nodes: list[int], weights: list[float]) -> bytes:
    return hashlib.sha256(b"mask-view" + session + repr(sorted(zip(nodes, weights))).encode()).digest()


def _lists_digest(session: bytes, survivors: list[int], dropped: list[int]) -> bytes:
    return hashlib.sha256(session + repr((sorted(survivors), sorted(dropped))).encode()).digest()


def _confirm_tag(state: dict[str, Any], peer_pk_c: bytes, src: int, dst: int, digest: bytes) -> bytes:
    key = P.agree(state["sk-c"], peer_pk_c, b"fedsafe-secagg-confirm" + state["session"])
    return hmac.new(key, digest + f"{src}>{dst}".encode(), hashlib.sha256).digest()


def _neighbourhood(state: dict[str, Any]) -> tuple[list[int], dict[int, bytes], Plan]:
    """This client's neighbours (fixed at share-keys), everyone's channel keys, the round's plan."""
    nodes1 = W.ids_in(state["nodes1"])
    return W.ids_in(state["peers"]), dict(zip(nodes1, state["pk-c-all"], strict=True)), _plan_from(state, len(nodes1))


def confirm(node: int, state: dict[str, Any] | None, request: dict[str, Any]) -> tuple[dict[str, Any], RecordDict]:
    """Check the survivor/dropout lists; MAC their digest for each surviving neighbour."""
    session = bytes(request["session"])
    state = _expect(state, W.CONFIRM, session)
    nodes3 = set(W.ids_in(state["nodes3"]))
    survivors, dropped = W.ids_in(request["survivors"]), W.ids_in(request["dropped"])
    peers, pk_c, rules = _neighbourhood(state)
    overlap = set(survivors) & set(dropped)
    _require(not overlap, f"confirm: nodes {sorted(overlap)} are listed as both survived and dropped")
    _require(len(set(survivors)) == len(survivors) and len(set(dropped)) == len(dropped), "confirm: a list repeats a node")
    _require(set(survivors) | set(dropped) == nodes3,
             "confirm: survivors + dropped differ from the set asked to mask "
             f"(extra {sorted((set(survivors) | set(dropped)) - nodes3)}, missing {sorted(nodes3 - set(survivors) - set(dropped))})")
    _require(node in survivors, "confirm: this client sent its masked input but is listed as dropped")
    _require_enough(state, rules, len(survivors), "confirm", "survivors")
    digest = _lists_digest(session, survivors, dropped)
    confirmers = sorted(set(peers) & set(survivors))
    tags = [_confirm_tag(state, pk_c[peer], node, peer, digest) for peer in confirmers]
    state.update({"done": W.CONFIRM, "digest": digest})
    return state, RecordDict({W.RECORD: ConfigRecord({"stage": W.CONFIRM, "to": W.ids_out(confirmers), "tags": tags})})


def unmask(node: int, state: dict[str, Any] | None, request: dict[str, Any]) -> tuple[dict[str, Any], RecordDict]:
    """Check that >= s of the neighbourhood confirmed the same lists, then reveal one share kind per node."""
    session = bytes(request["session"])
    _require(state is None or state.get("done") != W.UNMASK, "unmask: shares for this round were already revealed once")
    state = _expect(state, W.UNMASK, session)
    survivors, dropped = W.ids_in(request["survivors"]), W.ids_in(request["dropped"])
    digest = _lists_digest(session, survivors, dropped)
    _require(hmac.compare_digest(digest, state["digest"]), "unmask: the survivor/dropout lists differ from the ones this client confirmed")
    peers, pk_c, rules = _neighbourhood(state)
    confirmed = {node}
    for src, tag in zip(W.ids_in(request.get("from")), request.get("tags") or [], strict=True):
        if src in peers and hmac.compare_digest(bytes(tag), _confirm_tag(state, pk_c[src], src, node, digest)):
            confirmed.add(src)
    _require(len(confirmed) >= rules.shamir,
             f"unmask: only {len(confirmed)} of this client's neighbourhood confirmed the same survivor list, need {rules.shamir} "
             "(the server may be showing clients different lists)")
    held = {int(src): i for i, src in enumerate(state["held-from"])}
    seed_of = [n for n in survivors if n in held]
    same_view = {node}
    for src, tag in zip(W.ids_in(request.get("view-from")), request.get("view-tags") or [], strict=True):
        if src in peers and hmac.compare_digest(bytes(tag), _confirm_tag(state, pk_c[src], src, node, state["view"])):
            same_view.add(src)
    unbound = sorted(set(seed_of) - same_view)
    _require(not unbound, f"unmask: survivors {unbound} were shown a different masking set or weights than this client "
             "(or their binding was withheld); refusing to reveal their self-mask shares")
    key_of = [n for n in dropped if n in held]
    reply = {
        "stage": W.UNMASK,
        "seed-of": W.ids_out(seed_of), "seed-shares": [state["seed-shares"][held[n]] for n in seed_of],
        "key-of": W.ids_out(key_of), "key-shares": [state["key-shares"][held[n]] for n in key_of],
    }
    state["done"] = W.UNMASK
    return state, RecordDict({W.RECORD: ConfigRecord(reply)})
