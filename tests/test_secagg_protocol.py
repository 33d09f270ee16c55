"""SecAgg+ end to end through the in-process grid: real crypto, real Messages over Flower's wire format."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedsafe_plugin.config import FedSafeConfig, SecAggConfig
from fedsafe_plugin.privacy.secagg import make_server_aggregator, primitives
from fedsafe_plugin.privacy.secagg import wire as W
from fedsafe_plugin.privacy.secagg.client_mod import secagg_mod
from fedsafe_plugin.privacy.secagg.graph import plan
from fedsafe_plugin.privacy.secagg.inprocess import LocalGrid, fixed_update_app, run_round, stage_name
from fedsafe_plugin.privacy.secagg.quantize import error_bound, levels

SHAPES = {"lora_A": (8, 24), "lora_B": (24, 8), "bias": (5,)}


@dataclass
class Federation:
    nodes: list[int]
    global_arrays: dict[str, np.ndarray]
    updates: dict[int, dict[str, np.ndarray]]
    weights: dict[int, float]
    config: FedSafeConfig

    def grid(self, **hooks) -> LocalGrid:
        apps = {n: fixed_update_app(self.updates[n], self.weights[n]) for n in self.nodes}
        return LocalGrid(apps, **hooks)

    def record(self) -> ArrayRecord:
        return ArrayRecord({k: Array(v) for k, v in self.global_arrays.items()})

    def run(self, grid: LocalGrid):
        server = make_server_aggregator(self.config.secagg)
        return run_round(server, grid, self.record(), self.config.to_flat())

    def expected(self, survivors: list[int]) -> dict[str, np.ndarray]:
        total = sum(self.weights[n] for n in survivors)
        return {k: g + sum(self.weights[n] * self.updates[n][k] for n in survivors) / total
                for k, g in self.global_arrays.items()}


def make_federation(n: int, neighbours: int = 0, fraction: float = 0.5, seed: int = 0, clip: float = 0.5) -> Federation:
    rng = np.random.default_rng(seed)
    nodes = sorted({int(x) for x in rng.integers(1, 2**63, size=n)})  # uint64-sized Flower node ids
    cfg = FedSafeConfig(secagg=SecAggConfig(mode="secagg+", neighbours=neighbours, min_survivors=fraction, clip_range=clip))
    return Federation(
        nodes=nodes,
        global_arrays={k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()},
        updates={m: {k: rng.uniform(-0.9 * clip, 0.9 * clip, size=s).astype(np.float32) for k, s in SHAPES.items()} for m in nodes},
        weights={m: float(rng.integers(1, 500)) for m in nodes},
        config=cfg,
    )


def assert_close(result, fed: Federation, survivors: list[int]) -> None:
    assert result.arrays is not None, result.reason
    bound = result.metrics["fedsafe.secagg.error-bound"]
    assert bound <= error_bound(len(fed.nodes), fed.config.secagg.clip_range, fed.config.secagg.bits) * 10
    for key, want in fed.expected(survivors).items():
        got = result.arrays[key].numpy()
        assert got.dtype == np.float32 and got.shape == want.shape
        # float32 storage of the result adds at most one ulp of the global values
        assert np.max(np.abs(got - want)) <= bound + 4 * np.finfo(np.float32).eps * np.max(np.abs(want)) + 1e-7


@pytest.mark.parametrize("n,neighbours,fraction", [(4, 0, 0.5), (7, 0, 0.6), (10, 9, 0.5), (12, 4, 0.5), (16, 0, 0.7)])
def test_secure_mean_equals_weighted_mean_with_dropouts(n, neighbours, fraction):
    fed = make_federation(n, neighbours, fraction, seed=n)
    rules = plan(n, neighbours, fraction)
    # Any set of silent nodes no larger than this leaves every neighbourhood >= s holders, whatever the graph.
    tolerable = min(n - rules.min_survivors, rules.k + 1 - rules.shamir)
    rng = random.Random(n)
    for trial in range(2):
        silent = rng.sample(fed.nodes, tolerable) if trial else []
        at_mask = set(silent[: len(silent) // 2 + len(silent) % 2])  # drop after key sharing and training, before sending
        at_unmask = set(silent) - at_mask  # sent the masked input, then vanished
        grid = fed.grid(drop=lambda stage, node: (stage == W.MASK and node in at_mask) or (stage == W.UNMASK and node in at_unmask))
        result = fed.run(grid)
        survivors = [m for m in fed.nodes if m not in at_mask]
        assert_close(result, fed, survivors)
        assert result.metrics["fedsafe.secagg.dropped"] == len(at_mask)
        assert result.total_weight == sum(fed.weights[m] for m in survivors)


def test_classic_secagg_tolerates_n_minus_t_dropouts_after_masking():
    fed = make_federation(10, neighbours=9, fraction=0.6, seed=3)
    rules = plan(10, 9, 0.6)
    gone = set(fed.nodes[: 10 - rules.min_survivors])
    result = fed.run(fed.grid(drop=lambda stage, node: stage == W.MASK and node in gone))
    assert_close(result, fed, [m for m in fed.nodes if m not in gone])


def test_more_dropouts_than_tolerated_fail_cleanly():
    fed = make_federation(8, neighbours=7, fraction=0.5, seed=4)
    rules = plan(8, 7, 0.5)
    gone = set(fed.nodes[: 8 - rules.min_survivors + 1])
    result = fed.run(fed.grid(drop=lambda stage, node: stage == W.MASK and node in gone))
    assert result.arrays is None and f"need t={rules.min_survivors}" in result.reason


def test_lost_neighbourhood_fails_with_clear_reason():
    fed = make_federation(12, neighbours=4, fraction=0.5, seed=5)
    rules = plan(12, 4, 0.5)
    victim = fed.nodes[0]
    silent: set[int] = set()

    def drop(stage: str, node: int) -> bool:
        return stage == W.UNMASK and node in silent

    grid = fed.grid(drop=drop)
    server = make_server_aggregator(fed.config.secagg)
    messages = [Message(RecordDict({"arrays": fed.record(), "config": ConfigRecord(fed.config.to_flat())}), dst_node_id=n, message_type="train")
                for n in fed.nodes]
    train = server.configure_train(1, messages, grid)
    neighbourhood = server._rounds[1].graph[victim]
    silent.update(neighbourhood[: rules.k + 1 - rules.shamir + 1])  # one more than the neighbourhood tolerates
    replies = grid.send_and_receive(train)
    result = server.aggregate_train(1, replies, grid, fed.record(), "num-examples")
    assert result.arrays is None and f"self-mask seed of node {victim}" in result.reason


def test_setup_failure_returns_no_train_messages_and_a_reason():
    fed = make_federation(6, seed=6)
    grid = fed.grid(drop=lambda stage, node: stage == W.ADVERTISE and node != fed.nodes[0])
    result = fed.run(grid)
    assert result.arrays is None and "advertise" in result.reason
    assert not any(stage_name(m) == W.TRAIN for m in grid.received)


def _tamper_stage(stage: str, change):
    def hook(msg: Message) -> Message:
        record = W.stage_of(msg)
        if record and record["stage"] == stage:
            msg.content[W.RECORD] = ConfigRecord(change(dict(record), msg.metadata.dst_node_id))
        return msg

    return hook


def _ids(values) -> list[int]:
    return W.ids_in(values)


UNMASK_ATTACKS = {
    "overlap": (lambda r, me: {**r, "dropped": [*r["dropped"], r["survivors"][-1]]}, "both survived and dropped"),
    "stranger": (lambda r, me: {**r, "survivors": [*r["survivors"], "12345"]}, "differ from the set asked to mask"),
    "too-few": (lambda r, me: {**r, "survivors": r["survivors"][:2], "dropped": [*r["dropped"], *r["survivors"][2:]]}, "survivors < threshold"),
    "me-dropped": (lambda r, me: {**r, "survivors": [s for s in r["survivors"] if int(s) != me], "dropped": [*r["dropped"], str(me)]}, "listed as dropped"),
}


@pytest.mark.parametrize("attack", sorted(UNMASK_ATTACKS))
def test_clients_refuse_bad_survivor_lists_and_round_fails(attack):
    change, message = UNMASK_ATTACKS[attack]
    fed = make_federation(6, neighbours=5, fraction=0.5, seed=7)
    grid = fed.grid(to_client=_tamper_stage(W.CONFIRM, change))
    result = fed.run(grid)
    assert result.arrays is None and "refused to unmask" in result.reason
    refusals = [m.error.reason for m in grid.received if m.has_error()]
    assert len(refusals) == 6 and any(message in r for r in refusals)  # every client refuses
    assert not any(stage_name(m) == W.UNMASK for m in grid.received if not m.has_error())  # nothing was revealed


def test_lists_changed_after_confirmation_are_refused():
    fed = make_federation(6, neighbours=5, fraction=0.5, seed=17)
    change, _ = UNMASK_ATTACKS["overlap"]
    grid = fed.grid(to_client=_tamper_stage(W.UNMASK, change))
    assert fed.run(grid).arrays is None
    refusals = [m.error.reason for m in grid.received if m.has_error()]
    assert len(refusals) == 6 and all("differ from the ones this client confirmed" in r for r in refusals)


def test_split_view_attack_cannot_unmask_one_client():
    """An active server shows A's neighbours "everyone survived" and everyone else "A's neighbours
    dropped", hoping for A's self-mask seed from the former and the neighbours' mask keys from the
    latter. Neighbourhood confirmations stop it: what is revealed never recovers both."""
    fed = make_federation(12, neighbours=4, fraction=0.5, seed=18)
    rules = plan(12, 4, 0.5)
    server = make_server_aggregator(fed.config.secagg)
    victim = fed.nodes[0]
    graph: dict[int, list[int]] = {}

    def equivocate(record, me):
        if record["stage"] not in (W.CONFIRM, W.UNMASK) or me in graph[victim]:
            return record
        every = W.ids_in(record["survivors"]) + W.ids_in(record["dropped"])
        return {**record, "survivors": W.ids_out(n for n in every if n not in graph[victim]), "dropped": W.ids_out(graph[victim])}

    grid = fed.grid(to_client=lambda msg: _tamper_stage(W.stage_of(msg)["stage"], equivocate)(msg) if W.stage_of(msg) else msg)
    messages = [Message(RecordDict({"arrays": fed.record(), "config": ConfigRecord(fed.config.to_flat())}), dst_node_id=n, message_type="train")
                for n in fed.nodes]
    train = server.configure_train(1, messages, grid)
    graph.update(server._rounds[1].graph)
    result = server.aggregate_train(1, grid.send_and_receive(train), grid, fed.record(), "num-examples")
    assert result.arrays is None
    seeds: dict[int, int] = {}
    keys: dict[int, int] = {}
    for msg in grid.received:
        if not msg.has_error() and stage_name(msg) == W.UNMASK:
            record = msg.content.config_records[W.RECORD]
            for owner in W.ids_in(record.get("seed-of")):
                seeds[owner] = seeds.get(owner, 0) + 1
            for owner in W.ids_in(record.get("key-of")):
                keys[owner] = keys.get(owner, 0) + 1
    victim_seed = seeds.get(victim, 0) >= rules.shamir
    all_neighbour_keys = all(keys.get(v, 0) >= rules.shamir for v in graph[victim])
    assert not (victim_seed and all_neighbour_keys)
    assert any("confirmed the same survivor list" in m.error.reason for m in grid.received if m.has_error())


def test_second_unmask_request_is_refused():
    fed = make_federation(5, seed=8)
    captured: list[Message] = []

    def keep(msg: Message) -> Message:
        if stage_name(msg) == W.UNMASK:
            captured.append(msg)
        return msg

    grid = fed.grid(to_client=keep)
    assert fed.run(grid).arrays is not None
    node = captured[0].metadata.dst_node_id
    replay = secagg_mod(captured[0], grid.contexts[node], lambda m, c: pytest.fail("app must not run"))
    assert replay.has_error() and "already revealed" in replay.error.reason


def test_tampered_share_ciphertext_is_rejected():
    def flip(record, me):
        blobs = list(record["sealed"])
        blobs[0] = blobs[0][:-1] + bytes([blobs[0][-1] ^ 1])
        return {**record, "sealed": blobs}

    fed = make_federation(5, seed=9)
    grid = fed.grid(to_client=_tamper_stage(W.TRAIN, flip))
    result = fed.run(grid)
    assert result.arrays is None
    reasons = [m.error.reason for m in grid.received if m.has_error()]
    assert len(reasons) == 5 and all("failed authentication" in r for r in reasons)


def test_misrouted_share_is_rejected():
    """A share sealed for one client and relabelled as coming from another fails AEAD."""
    def swap(record, me):
        senders = list(record["from"])
        return {**record, "from": [senders[1], senders[0], *senders[2:]]}

    fed = make_federation(5, neighbours=4, seed=10)
    grid = fed.grid(to_client=_tamper_stage(W.TRAIN, swap))
    assert fed.run(grid).arrays is None
    assert all("failed authentication" in m.error.reason for m in grid.received if m.has_error())


def test_withheld_share_and_forged_weights_are_refused():
    fed = make_federation(5, neighbours=4, seed=11)
    grid = fed.grid(to_client=_tamper_stage(W.TRAIN, lambda r, me: {**r, "from": r["from"][1:], "sealed": r["sealed"][1:]}))
    assert fed.run(grid).arrays is None
    assert all("expected exactly the neighbours" in m.error.reason for m in grid.received if m.has_error())
    grid = fed.grid(to_client=_tamper_stage(W.MASK, lambda r, me: {**r, "weights": [w * 2 for w in r["weights"]]}))
    result = fed.run(grid)
    assert result.arrays is None
    assert any("weight" in m.error.reason for m in grid.received if m.has_error())


def test_per_client_weight_views_cannot_isolate_one_client():
    """A server that shows the victim 'all other weights are 0' and everyone else 'the victim's
    weight is huge' would get the victim's update as the sum; the view binding makes clients refuse."""
    fed = make_federation(6, neighbours=5, seed=3)
    victim = fed.nodes[0]

    def forge(request, me):
        nodes = W.ids_in(request["nodes"])
        weights = [w if (n == victim) == (me == victim) else (0.0 if me == victim else 1e15)
                   for n, w in zip(nodes, request["weights"])]
        return {**request, "weights": weights}

    grid = fed.grid(to_client=_tamper_stage(W.MASK, forge))
    result = fed.run(grid)
    assert result.arrays is None
    assert any(m.has_error() and "different masking set or weights" in m.error.reason for m in grid.received)


def test_server_never_holds_an_unmasked_individual_update():
    """Everything the server receives, with every secret it can reconstruct, still hides each update."""
    fed = make_federation(8, neighbours=3, fraction=0.5, seed=12)
    gone = {fed.nodes[1]}
    grid = fed.grid(drop=lambda stage, node: stage == W.MASK and node in gone)
    result = fed.run(grid)
    assert_close(result, fed, [m for m in fed.nodes if m not in gone])
    plaintexts = [np.concatenate([fed.updates[n][k].ravel() for k in sorted(SHAPES)]) for n in fed.nodes]
    weights_sent = [np.concatenate([(fed.global_arrays[k] + fed.updates[n][k]).ravel() for k in sorted(SHAPES)]) for n in fed.nodes]
    seed_shares: dict[int, list[bytes]] = {}
    masked: dict[int, np.ndarray] = {}
    for msg in grid.received:
        for record in msg.content.array_records.values():
            for array in record.values():
                values = array.numpy()
                if values.dtype != np.uint32:
                    assert values.size == 0, "a train reply leaked plaintext arrays"
                    continue
                masked[msg.metadata.src_node_id] = values
        if not msg.has_error() and stage_name(msg) == W.UNMASK:
            record = msg.content.config_records[W.RECORD]
            for owner, share in zip(W.ids_in(record.get("seed-of")), record.get("seed-shares") or []):
                seed_shares.setdefault(owner, []).append(share)
    assert len(masked) == 7
    total_weight = sum(fed.weights.values())
    for node, y in masked.items():
        # The server knows this node's self-mask seed after unmasking; remove it as well.
        rules = plan(8, 3, 0.5)
        seed = primitives.join_shares(seed_shares[node][: rules.shamir])
        residual = (y - primitives.keystream_u32(seed, y.size)).view(np.int32)
        limit = fed.weights[node] / total_weight * levels(fed.config.secagg.bits) + 2
        inside = np.mean(np.abs(residual.astype(np.int64)) <= limit)
        assert inside < 0.05, "an individual quantised update is visible to the server"
        for plain in plaintexts + weights_sent:
            assert not np.allclose(residual.astype(np.float64), plain, atol=1e-3)


def test_masks_are_fresh_across_identical_runs():
    """Same inputs, two runs: the masked vectors differ everywhere, not just by rounding noise."""
    fed = make_federation(4, seed=13)
    runs = []
    for _ in range(2):
        np.random.seed(0)
        grid = fed.grid()
        assert fed.run(grid).arrays is not None
        runs.append({m.metadata.src_node_id: m.content.array_records[W.MASKED]["y"].numpy() for m in grid.received if W.MASKED in m.content.array_records})
    for node, first in runs[0].items():
        diff = (first - runs[1][node]).view(np.int32).astype(np.int64)
        assert np.mean(np.abs(diff) > 1) > 0.99


def test_mask_prg_is_the_chacha20_keystream():
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    key = primitives.new_seed()
    expected = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(4 * 1000))
    assert primitives.keystream_u32(key, 1000).tobytes() == expected


def test_exhausted_client_is_left_out_and_the_round_finishes():
    fed = make_federation(5, seed=14)
    tired = fed.nodes[0]

    def exhausted(msg: Message, context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 0.0, "fedsafe.dp.exhausted": 1.0})}), reply_to=msg)

    grid = fed.grid()
    grid.apps[tired] = exhausted
    result = fed.run(grid)
    assert_close(result, fed, [m for m in fed.nodes if m != tired])


def test_client_refuses_plaintext_when_secagg_is_configured():
    fed = make_federation(3, seed=15)
    msg = Message(RecordDict({"arrays": fed.record(), "config": ConfigRecord(fed.config.to_flat())}), dst_node_id=fed.nodes[0], message_type="train")
    grid = fed.grid()
    reply = secagg_mod(msg, grid.contexts[fed.nodes[0]], lambda m, c: pytest.fail("app must not run"))
    assert reply.has_error() and "refusing to send a plaintext update" in reply.error.reason


def test_wire_size_is_within_1_1x_fp32():
    fed = make_federation(10, seed=16)
    grid = fed.grid()
    result = fed.run(grid)
    assert result.arrays is not None
    fp32 = 4 * sum(int(np.prod(s)) for s in SHAPES.values())
    masked_up = max(v for (stage, node), v in grid.received_bytes.items() if stage == W.MASK)
    # the uint32 vector, constant protobuf framing, and one 32-byte view binding per neighbour
    assert masked_up <= 1.1 * fp32 + 600 + 64 * (10 - 1)


@pytest.mark.parametrize("corruption,reason", [
    ({"seed-of": ["1", "2"], "seed-shares": [b"x"]}, "malformed stage reply"),
    ("garbage-shares", "seed of node"),
])
def test_faulty_client_unmask_reply_fails_the_round_cleanly(corruption, reason):
    fed = make_federation(5, neighbours=4, fraction=0.5, seed=19)
    liar = fed.nodes[2]

    def corrupt(msg, context, call_next):
        reply = secagg_mod(msg, context, call_next)
        if stage_name(msg) != W.UNMASK or msg.metadata.dst_node_id != liar:
            return reply
        record = dict(reply.content.config_records[W.RECORD])
        if corruption == "garbage-shares":
            record["seed-shares"] = [s[:4] + bytes(len(s) - 4) for s in record["seed-shares"]]
        else:
            record.update(corruption)
        reply.content[W.RECORD] = ConfigRecord(record)
        return reply

    grid = fed.grid(mods=[corrupt])
    # With 5 holders and s = 3 the server combines the first three shares: the liar's (3rd node) is among them.
    result = fed.run(grid)
    assert result.arrays is None and reason in result.reason


def test_client_floor_stops_a_server_shrinking_the_round():
    """The server sets t; a client's own node-config floor holds even when the server shrinks the round."""
    fed = make_federation(6, neighbours=0, fraction=0.5, seed=21)
    victim, colluder = fed.nodes[0], fed.nodes[1]

    def shrink(record, me):  # share-keys lists only the victim and one colluder
        keep = [i for i, n in enumerate(W.ids_in(record["nodes"])) if n in (victim, colluder)]
        return {**record, "nodes": [record["nodes"][i] for i in keep],
                "pk-c": [record["pk-c"][i] for i in keep], "pk-s": [record["pk-s"][i] for i in keep]}

    for floor, refused in ((0, False), (4, True)):
        grid = fed.grid(to_client=_tamper_stage(W.SHARE_KEYS, shrink))
        grid.contexts[victim].node_config["fedsafe-secagg-min-clients"] = floor
        fed.run(grid)
        reasons = [m.error.reason for m in grid.received if m.has_error() and m.metadata.src_node_id == victim]
        assert bool(reasons) == refused, reasons
        if refused:
            assert "2 clients < this client's minimum 4" in reasons[0]


def test_client_floor_must_be_a_whole_number():
    fed = make_federation(3, seed=22)
    grid = fed.grid()
    grid.contexts[fed.nodes[0]].node_config["fedsafe-secagg-min-clients"] = "three"
    fed.run(grid)
    reasons = [m.error.reason for m in grid.received if m.has_error()]
    assert reasons and "fedsafe-secagg-min-clients" in reasons[0]


def test_server_cannot_switch_secure_aggregation_off_mid_run():
    fed = make_federation(3, seed=23)
    grid = fed.grid()
    assert fed.run(grid).arrays is not None
    plain = FedSafeConfig().to_flat()  # round 2: the server asks for a plaintext update
    node = fed.nodes[0]
    msg = Message(RecordDict({"arrays": fed.record(), "config": ConfigRecord(plain)}), dst_node_id=node, message_type="train")
    reply = secagg_mod(msg, grid.contexts[node], lambda m, c: pytest.fail("app must not run"))
    assert reply.has_error() and "refusing a plaintext one" in reply.error.reason
    fresh = fed.grid().contexts[node]  # a client that never used secure aggregation in this run trains as usual
    assert secagg_mod(msg, fresh, lambda m, c: Message(RecordDict(), reply_to=m)).has_error() is False


def test_an_app_error_is_not_reported_as_a_secagg_refusal():
    fed = make_federation(3, seed=24)
    grid = fed.grid()

    def broken(msg, context):
        raise ValueError("the app's own bug")

    grid.apps[fed.nodes[0]] = broken
    with pytest.raises(ValueError, match="the app's own bug"):
        fed.run(grid)


def test_survivors_of_total_weight_zero_fail_the_round_cleanly():
    fed = make_federation(4, seed=25)
    gone = fed.nodes[0]
    fed.weights = {n: (5.0 if n == gone else 0.0) for n in fed.nodes}
    result = fed.run(fed.grid(drop=lambda stage, node: stage == W.MASK and node == gone))
    assert result.arrays is None and "surviving clients' total 'num-examples' is 0" in result.reason
