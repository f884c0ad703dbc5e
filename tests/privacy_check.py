"""Is any site's own number in what reached the SuperLink? The check behind the privacy
tests, embedded and on the cluster.

Input: the messages the SuperLink stored during a run (healthrisk.federated.capture) and
each site's rows. From the rows the check computes every number a site would leak if it
sent it in clear — its row counts, Σx and Σx² per feature (raw and as the scaled vector
secure aggregation sums), and the model it trained locally in each round, recomputed
deterministically from the instruction that reached the SuperLink — and looks for each of
them among all the numbers in every reply (arrays, metrics, config values, ndarray bytes).
A plain run must show findings (the check can fail); a secure-aggregation run none.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.common import bytes_to_ndarray, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from healthrisk.federated import secure
from healthrisk.federated.client_app import SITE_RECORD, Split
from healthrisk.federated.model import Params, Standardisation, train_sgd
from healthrisk.federated.run_config import RunConfig


@dataclass
class Findings:
    replies: int = 0
    arrays_in_clear: int = 0  # non-empty ArrayRecords in replies
    leaks: list[str] = field(default_factory=list)  # "<site>: <what> in a <type> reply"
    recomputed_updates: int = 0
    rows_in_clear: int = 0  # replies holding a site's row (its 11 feature values)


def numbers(message: Message) -> Iterator[np.ndarray]:
    """Every number in a message's records, as flat float arrays (one per value or array)."""
    for record in message.content.values():
        if isinstance(record, ArrayRecord):
            for array in record.to_numpy_ndarrays():
                yield array.ravel().astype(float)
        elif isinstance(record, MetricRecord):
            for value in record.values():
                yield np.asarray(value, dtype=float).ravel()
        elif isinstance(record, ConfigRecord):
            for value in record.values():
                yield from _config_numbers(value)


def _config_numbers(value: Any) -> Iterator[np.ndarray]:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bytes):
            try:
                yield bytes_to_ndarray(item).ravel().astype(float)
            except (ValueError, TypeError, OSError, EOFError):
                continue  # keys, ciphertexts and shares are not ndarrays
        elif isinstance(item, int | float) and not isinstance(item, bool):
            yield np.array([float(item)])


def site_of_nodes(messages: list[Message]) -> dict[int, str]:
    """node id → site, from the replies (the site record, or the SecAgg+ fit metrics)."""
    nodes = {}
    for m in messages:
        if not m.metadata.reply_to_message_id or m.has_error():
            continue
        records = m.content.config_records
        if SITE_RECORD in records:
            nodes[m.metadata.src_node_id] = str(records[SITE_RECORD][SITE_RECORD])
        elif "fitres.metrics" in records and secure.SITE in records["fitres.metrics"]:
            nodes[m.metadata.src_node_id] = str(records["fitres.metrics"][secure.SITE])
    return nodes


def _local_update(
    instruction: Message, split: Split, site: str, settings: RunConfig
) -> tuple[int, np.ndarray] | None:
    """(round, the model `site` trained) for a train instruction, as its ClientApp computes it."""
    records = instruction.content.config_records
    if "fitins.config" in records:  # SecAgg+: only the masked-vector stage carries the model
        if "fitins.parameters" not in instruction.content.array_records:
            return None
        fitins = compat.recorddict_to_fitins(instruction.content, keep_input=True)
        if fitins.config.get(secure.PHASE) != secure.Phase.TRAIN:
            return None
        incoming = parameters_to_ndarrays(fitins.parameters)
        mean = np.frombuffer(cast(bytes, fitins.config["mean"]))
        scale = np.frombuffer(cast(bytes, fitins.config["scale"]))
        server_round = int(cast(int, fitins.config[secure.SERVER_ROUND]))
    elif "config" in records and "arrays" in instruction.content.array_records:
        config = records["config"]
        incoming = instruction.content.array_records["arrays"].to_numpy_ndarrays()
        mean = np.asarray(config["mean"], dtype=float)
        scale = np.asarray(config["scale"], dtype=float)
        server_round = int(cast(int, config["server-round"]))
    else:
        return None
    updated = train_sgd(
        Params.from_arrays(incoming),
        split.x_train,
        split.y_train,
        epochs=settings.local_epochs,
        learning_rate=settings.learning_rate,
        standardisation=Standardisation(mean, scale),
        seed=server_round * 7919 + zlib.crc32(site.encode()),
    )
    return server_round, np.concatenate(updated.to_arrays())


def check(messages: list[Message], splits: Mapping[str, Split], settings: RunConfig) -> Findings:
    findings = Findings()
    nodes = site_of_nodes(messages)
    secrets: dict[str, list[tuple[str, np.ndarray]]] = {}
    for site, split in splits.items():
        x = split.x_train
        scalars = np.concatenate([[x.shape[0], split.y_val.size], x.sum(axis=0), np.square(x).sum(axis=0)])
        secrets[site] = [
            ("a row count, Σx or Σx²", scalars),
            ("its scaled statistics vector", secure.stats_vector(x)),
        ]
    for m in messages:
        if m.metadata.reply_to_message_id or m.metadata.message_type != "train":
            continue
        site = nodes.get(m.metadata.dst_node_id)
        if site is None or site not in splits:
            continue
        update = _local_update(m, splits[site], site, settings)
        if update is not None:
            findings.recomputed_updates += 1
            secrets[site].append((f"its locally trained model of round {update[0]}", update[1]))
    for m in messages:
        if not m.metadata.reply_to_message_id or m.has_error():
            continue
        findings.replies += 1
        findings.arrays_in_clear += sum(1 for r in m.content.array_records.values() if len(r))
        values = list(numbers(m))
        findings.rows_in_clear += sum(1 for v in values if _is_a_row(v, splits))
        for site, items in secrets.items():
            for what, secret in items:
                if any(_contains(v, secret) for v in values):
                    findings.leaks.append(f"{site}: {what} in a {m.metadata.message_type} reply")
    return findings


def _is_a_row(values: np.ndarray, splits: Mapping[str, Split]) -> bool:
    for split in splits.values():
        for rows in (split.x_train, split.x_val):
            if (
                values.size == rows.shape[1]
                and np.isclose(rows, values[None, :], rtol=1e-9).all(axis=1).any()
            ):
                return True
    return False


def _contains(values: np.ndarray, secret: np.ndarray) -> bool:
    """`secret` (all of it, as one vector) or any of its entries is among `values`."""
    if values.size == secret.size and np.allclose(values, secret, rtol=1e-9, atol=0):
        return True
    significant = secret[np.abs(secret) > 1e-6]
    return bool(np.isclose(values[:, None], significant[None, :], rtol=1e-9, atol=0).any())
