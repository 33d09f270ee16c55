"""CKKS mode: key files, encrypted rounds through the in-process grid, and what the server can't do."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedsafe_plugin.cli import main as fedsafe_main
from fedsafe_plugin.config import FedSafeConfig, SecAggConfig
from fedsafe_plugin.privacy.secagg import ckks as C
from fedsafe_plugin.privacy.secagg import make_server_aggregator
from fedsafe_plugin.privacy.secagg.client_mod import secagg_mod
from fedsafe_plugin.privacy.secagg.inprocess import LocalGrid, run_round

SHAPES = {"lora_A": (16, 40), "lora_B": (40, 16), "bias": (7,)}
# CKKS error on the mean: about 5e-4 absolute on the weighted sum (scale 2^25) over the total weight.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def keydir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckks")
    assert fedsafe_main(["keys", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def other_keydir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ckks-other")
    C.write_keys(out)
    return out


def test_keys_command_writes_secret_and_public_contexts(keydir, tmp_path):
    secret, public = keydir / C.SECRET_FILE, keydir / C.PUBLIC_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert C.load(keydir, "secret").is_secret and not C.load(keydir, "public").is_secret
    assert C.load(secret, "secret").key_id == C.load(public, "public").key_id
    with pytest.raises(FileExistsError, match="--force"):
        C.write_keys(keydir)
    (tmp_path / C.SECRET_FILE).write_bytes(b"old")
    (tmp_path / C.SECRET_FILE).chmod(0o644)
    C.write_keys(tmp_path, force=True)  # a replaced secret file is private again
    assert stat.S_IMODE((tmp_path / C.SECRET_FILE).stat().st_mode) == 0o600


def test_public_context_cannot_decrypt(keydir):
    secret, public = C.load(keydir, "secret"), C.load(keydir, "public")
    record = C.encrypt(secret, {"w": np.ones(10, dtype=np.float32)}, 2.0)
    with pytest.raises(C.CKKSKeyError, match="public-only"):
        C.decrypt(public, record)
    import tenseal as ts

    # TenSEAL itself refuses as well: the public file really holds no secret key.
    vector = ts.ckks_vector_from(public.context, C._chunks(record, C._header(record))[0])
    with pytest.raises(ValueError, match="secret_key"):
        vector.decrypt()
    with pytest.raises(C.CKKSKeyError, match="public-only"):
        C.load(keydir / C.PUBLIC_FILE, "secret")


def test_server_refuses_the_secret_context(keydir):
    with pytest.raises(C.CKKSKeyError, match="secret key"):
        make_server_aggregator(SecAggConfig(mode="ckks", ckks_context=str(keydir / C.SECRET_FILE)))


def test_wrong_or_stale_context_gives_clear_errors(keydir, other_keydir, tmp_path):
    mine, other = C.load(keydir, "secret"), C.load(other_keydir, "secret")
    record = C.encrypt(mine, {"w": np.ones(4, dtype=np.float32)}, 1.0)
    with pytest.raises(C.CKKSKeyError, match="wrong or stale"):
        C.decrypt(other, record)
    with pytest.raises(C.CKKSKeyError, match="wrong or stale"):
        C.add(C.load(other_keydir, "public"), [record])
    with pytest.raises(C.CKKSKeyError, match="not found"):
        C.load(tmp_path / "missing", "secret")
    (tmp_path / "junk.ctx").write_bytes(b"not a context")
    with pytest.raises(C.CKKSKeyError, match="not a fedsafe CKKS key file"):
        C.load(tmp_path / "junk.ctx", "secret")


def _federation(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    nodes = list(range(1, n + 1))
    glob = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
    updates = {m: {k: rng.uniform(-0.1, 0.1, size=s).astype(np.float32) for k, s in SHAPES.items()} for m in nodes}
    weights = {m: float(rng.integers(1, 300)) for m in nodes}
    return nodes, glob, updates, weights


def _apps(nodes, updates, weights, seen):
    def make(node):
        def app(msg: Message, context) -> Message:
            received = msg.content.array_records["arrays"]
            plain = {k: received[k].numpy() for k in received}
            seen.setdefault(node, []).append(plain)
            new = {k: Array(plain[k] + updates[node][k]) for k in plain}
            return Message(RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"num-examples": weights[node]})}), reply_to=msg)

        return app

    return {m: make(m) for m in nodes}


def test_two_encrypted_rounds_match_the_plaintext_weighted_mean(keydir):
    nodes, glob, updates, weights = _federation(4)
    config = FedSafeConfig(secagg=SecAggConfig(mode="ckks", ckks_context=str(keydir / C.PUBLIC_FILE)))
    seen: dict[int, list] = {}
    grid = LocalGrid(_apps(nodes, updates, weights, seen), node_config={m: {"fedsafe-ckks-context": str(keydir)} for m in nodes})
    server = make_server_aggregator(config.secagg)
    total = sum(weights.values())
    expected = {k: g + sum(weights[m] * updates[m][k] for m in nodes) / total for k, g in glob.items()}

    first = run_round(server, grid, ArrayRecord({k: Array(v) for k, v in glob.items()}), config.to_flat(), 1)
    assert first.encrypted and first.total_weight == total and C.is_encrypted(first.arrays)
    second = run_round(server, grid, first.arrays, config.to_flat(), 2)
    for node in nodes:  # every client decrypted round 2's global to the weighted mean of round 1
        for key, want in expected.items():
            assert np.max(np.abs(seen[node][1][key] - want)) < TOLERANCE
    final = C.decrypt(C.load(keydir, "secret"), second.arrays)
    for key, want in expected.items():
        again = want + sum(weights[m] * updates[m][key] for m in nodes) / total
        assert np.max(np.abs(final[key] - again)) < 2 * TOLERANCE

    # Instrumentation: the server only ever held ciphertext bytes (uint8) and plaintext metrics.
    for msg in grid.received:
        for record in msg.content.array_records.values():
            assert C.is_encrypted(record)
            assert all(a.numpy().dtype == np.uint8 for a in record.values())
    for result in (first, second):
        assert all(a.numpy().dtype == np.uint8 for a in result.arrays.values())
        assert not any(np.allclose(np.frombuffer(a.numpy().tobytes()[: 4 * 7], dtype=np.float32), expected["bias"], atol=1e-2)
                       for a in result.arrays.values() if a.numpy().size >= 28)


def test_client_with_a_different_key_set_refuses(keydir, other_keydir):
    nodes, glob, updates, weights = _federation(2, seed=1)
    config = FedSafeConfig(secagg=SecAggConfig(mode="ckks", ckks_context=str(keydir)))
    grid = LocalGrid(_apps(nodes, updates, weights, {}), node_config={m: {"fedsafe-ckks-context": str(other_keydir)} for m in nodes})
    result = run_round(make_server_aggregator(config.secagg), grid, ArrayRecord({k: Array(v) for k, v in glob.items()}), config.to_flat())
    assert result.arrays is None
    assert all(m.has_error() and "wrong or stale context" in m.error.reason for m in grid.received)


def test_evaluate_messages_get_the_decrypted_global(keydir):
    secret = C.load(keydir, "secret")
    weights = {"w": np.linspace(-1, 1, 12, dtype=np.float32)}
    record = C.encrypt(secret, weights, 3.0)
    grid = LocalGrid({1: lambda m, c: m}, node_config={1: {"fedsafe-ckks-context": str(keydir)}})
    msg = Message(RecordDict({"arrays": record, "config": ConfigRecord({})}), dst_node_id=1, message_type="evaluate")
    got: dict = {}

    def evaluate(m: Message, context) -> Message:
        got.update({k: v.numpy() for k, v in m.content.array_records["arrays"].items()})
        return Message(RecordDict({"metrics": MetricRecord({"loss": 0.0})}), reply_to=m)

    secagg_mod(msg, grid.contexts[1], evaluate)
    assert np.max(np.abs(got["w"] - weights["w"])) < TOLERANCE


def test_ciphertext_size_is_at_most_8x_fp32(keydir):
    secret = C.load(keydir, "secret")
    values = {"w": np.random.default_rng(2).normal(size=40_960).astype(np.float32) * 0.05}
    record = C.encrypt(secret, values, 100.0)
    ratio = sum(len(a.data) for a in record.values()) / (4 * values["w"].size)
    assert ratio <= 8.0


def _corrupted(record: ArrayRecord, corrupt: str, keydir: Path) -> ArrayRecord:
    """A client's ciphertext record, broken in one way (what a faulty or malicious client could send)."""
    import json

    import tenseal as ts

    header = json.loads(record[C.HEADER].numpy().tobytes())
    data = record[C.DATA].numpy().copy()
    raw = None
    if corrupt == "truncated-header":
        raw = record[C.HEADER].numpy().tobytes()[:-3]
    elif corrupt == "zeroed-stream":
        data[:] = 0
    elif corrupt == "invalid-ciphertext":  # a flip deep in a coefficient is a valid ciphertext of other values,
        data[10:20] = 0                    # which no server can tell from a malicious client's update
    elif corrupt == "other-layout":
        header["keys"] = ["lora_X", *header["keys"][1:]]
    elif corrupt == "no-shapes":
        del header["shapes"]
    elif corrupt == "flat-shapes":
        header["shapes"] = [6, 4]
    elif corrupt == "clients-string":
        header["clients"] = "many"
    elif corrupt == "huge-weight":
        raw = json.dumps(header).replace(f'"weight": {json.dumps(header["weight"])}', '"weight": 1' + "0" * 400).encode()
    elif corrupt == "other-scale":
        ctx = C.load(keydir, "secret").context
        chunks = [ts.ckks_vector(ctx, [0.0] * n, scale=2**20).serialize() for n in _chunk_sizes(header)]
        header["lengths"] = [len(c) for c in chunks]
        data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    elif corrupt == "bogus-dtypes":  # harmless now: the sum takes the global's layout, not a client's
        header["dtypes"] = ["bogus"] * len(header["dtypes"])
    raw = raw if raw is not None else json.dumps(header).encode()
    return ArrayRecord({C.HEADER: Array(np.frombuffer(raw, dtype=np.uint8)), C.DATA: Array(data)})


def _chunk_sizes(header: dict) -> list[int]:
    total = int(sum(np.prod(s) for s in header["shapes"]))
    return [min(4096, total - i) for i in range(0, total, 4096)]


CORRUPTIONS = ["truncated-header", "zeroed-stream", "invalid-ciphertext", "other-layout", "no-shapes", "flat-shapes",
               "clients-string", "huge-weight", "other-scale", "bogus-dtypes"]


@pytest.mark.parametrize("corrupt", CORRUPTIONS)
def test_one_malformed_ciphertext_costs_only_its_sender(keydir, corrupt):
    nodes, glob, updates, weights = _federation(3, seed=2)
    config = FedSafeConfig(secagg=SecAggConfig(mode="ckks", ckks_context=str(keydir / C.PUBLIC_FILE)))
    liar = nodes[1]

    def tamper(msg, context, call_next):
        reply = secagg_mod(msg, context, call_next)
        if msg.metadata.dst_node_id == liar and msg.metadata.message_type == "train":
            (name, record), = reply.content.array_records.items()
            reply.content[name] = _corrupted(record, corrupt, keydir)
        return reply

    grid = LocalGrid(_apps(nodes, updates, weights, {}), node_config={m: {"fedsafe-ckks-context": str(keydir)} for m in nodes},
                     mods=[tamper])
    server = make_server_aggregator(config.secagg)
    first = run_round(server, grid, ArrayRecord({k: Array(v) for k, v in glob.items()}), config.to_flat())
    honest = [m for m in nodes if m != liar]
    kept = nodes if corrupt == "bogus-dtypes" else honest
    assert first.arrays is not None and first.metrics["fedsafe.secagg.survivors"] == len(kept)
    mean = C.decrypt(C.load(keydir, "secret"), first.arrays)
    total = sum(weights[m] for m in kept)
    for key, g in glob.items():
        assert mean[key].dtype == g.dtype
        assert np.max(np.abs(mean[key] - (g + sum(weights[m] * updates[m][key] for m in kept) / total))) < TOLERANCE
    second = run_round(server, grid, first.arrays, config.to_flat(), 2)  # clients still decrypt the new global
    assert second.arrays is not None and not any(m.has_error() for m in grid.received)


def test_server_side_optimisers_are_refused_in_ckks_mode(keydir):
    from flwr.serverapp.strategy import FedAdam, FedAvgM, FedProx

    from fedsafe_plugin.strategies.feddetox import FedDetox

    config = FedSafeConfig(secagg=SecAggConfig(mode="ckks", ckks_context=str(keydir / C.PUBLIC_FILE)))
    for strategy in (FedAdam(), FedAvgM()):
        with pytest.raises(ValueError, match="ckks mode"):
            FedDetox(strategy, config)
    FedDetox(FedProx(), config)  # FedAvg's own aggregation: allowed


def test_server_cannot_switch_ckks_off_mid_run(keydir):
    nodes, glob, updates, weights = _federation(2, seed=3)
    config = FedSafeConfig(secagg=SecAggConfig(mode="ckks", ckks_context=str(keydir / C.PUBLIC_FILE)))
    grid = LocalGrid(_apps(nodes, updates, weights, {}), node_config={m: {"fedsafe-ckks-context": str(keydir)} for m in nodes})
    record = ArrayRecord({k: Array(v) for k, v in glob.items()})
    assert run_round(make_server_aggregator(config.secagg), grid, record, config.to_flat()).arrays is not None
    plain = Message(RecordDict({"arrays": record, "config": ConfigRecord(FedSafeConfig().to_flat())}), dst_node_id=nodes[0], message_type="train")
    reply = secagg_mod(plain, grid.contexts[nodes[0]], lambda m, c: pytest.fail("app must not run"))
    assert reply.has_error() and "refusing a plaintext one" in reply.error.reason
