"""The shared wire vectors (tests/vectors/*.json) hold for the Python implementation.

The same files are checked by the JavaScript implementation; docs/protocol.md
says what they mean. A failure here means the code and the specification
disagree: fix the code, or change the spec and regenerate the vectors with
``tests/vectors/generate.py`` on purpose.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from strict_equality import same

from ocapd.captp import codec
from ocapd.captp.codec import CodecError, Desc
from ocapd.captp.passable import Far, Rejected, RemoteError, Tagged, far
from ocapd.captp.session import DEFAULT_LIMITS, Limits, Session
from ocapd.captp.transport import pack_batch, split_batch
from ocapd.captp.turns import run_turns

VECTORS = Path(__file__).resolve().parent / "vectors"


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("vectors_generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()
to_py = generate.to_py
VALUES = json.loads((VECTORS / "values.json").read_text(encoding="utf-8"))
MESSAGES = json.loads((VECTORS / "messages.json").read_text(encoding="utf-8"))


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]



# ---------------------------------------------------------------------------
# values.json


@pytest.mark.parametrize("vector", VALUES["values"], ids=_ids(VALUES["values"]))
def test_value_encodes_to_exactly_the_vector_bytes(vector: dict[str, Any]) -> None:
    assert codec.encode(to_py(vector["value"])).hex() == vector["hex"]


@pytest.mark.parametrize("vector", VALUES["values"], ids=_ids(VALUES["values"]))
def test_vector_bytes_decode_to_the_value(vector: dict[str, Any]) -> None:
    assert same(codec.decode(bytes.fromhex(vector["hex"])), to_py(vector["value"]))


@pytest.mark.parametrize("vector", VALUES["decode_only"], ids=_ids(VALUES["decode_only"]))
def test_non_canonical_forms_are_accepted_but_never_written(vector: dict[str, Any]) -> None:
    value = to_py(vector["value"])
    assert same(codec.decode(bytes.fromhex(vector["hex"])), value)
    assert codec.encode(value).hex() != vector["hex"]


@pytest.mark.parametrize("vector", VALUES["rejects"], ids=_ids(VALUES["rejects"]))
def test_decoder_refuses_malformed_bytes(vector: dict[str, Any]) -> None:
    assert vector["error"] == "CodecError"
    with pytest.raises(CodecError):
        codec.decode(bytes.fromhex(vector["hex"]))


@pytest.mark.parametrize("vector", VALUES["encode_rejects"], ids=_ids(VALUES["encode_rejects"]))
def test_encoder_refuses_values_beyond_the_limits(vector: dict[str, Any]) -> None:
    assert vector["error"] == "TypeError"
    with pytest.raises(TypeError):
        codec.encode(to_py(vector["value"]))


class _Ref:
    """Stands for a remotable: the session would map it to a descriptor."""

    def __init__(self, desc: Desc) -> None:
        self.desc = desc


def _swap_descs(value: Any, make: Any) -> Any:
    if type(value) is Desc:
        return make(value)
    if type(value) is list:
        return [_swap_descs(v, make) for v in value]
    if type(value) is dict:
        return {k: _swap_descs(v, make) for k, v in value.items()}
    if type(value) is Tagged:
        return Tagged(value.tag, _swap_descs(value.payload, make))
    return value


_DESC_VECTORS = [v for v in VALUES["values"] if '"desc"' in json.dumps(v["value"])]


@pytest.mark.parametrize("vector", _DESC_VECTORS, ids=_ids(_DESC_VECTORS))
def test_descriptors_pass_through_the_on_ref_and_on_desc_callbacks(vector: dict[str, Any]) -> None:
    value = to_py(vector["value"])
    with_refs = _swap_descs(value, _Ref)
    assert codec.encode(with_refs, on_ref=lambda ref: ref.desc).hex() == vector["hex"]
    revived = codec.decode(bytes.fromhex(vector["hex"]), on_desc=lambda d: ("ref", d.kind_name, d.position))
    expected = _swap_descs(value, lambda d: ("ref", d.kind_name, d.position))
    assert revived == expected


# ---------------------------------------------------------------------------
# messages.json


@pytest.mark.parametrize("vector", MESSAGES["frames"], ids=_ids(MESSAGES["frames"]))
def test_message_encodes_to_exactly_the_frame_bytes(vector: dict[str, Any]) -> None:
    message = to_py(vector["message"])
    assert codec.encode(message).hex() == vector["hex"]
    assert same(codec.decode(bytes.fromhex(vector["hex"])), message)


@pytest.mark.parametrize("vector", MESSAGES["stream_frames"], ids=_ids(MESSAGES["stream_frames"]))
def test_stream_frame_is_a_4_byte_big_endian_length_then_the_message(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    body = codec.encode(to_py(vector["message"]))
    assert data == len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize("vector", MESSAGES["websocket_batches"], ids=_ids(MESSAGES["websocket_batches"]))
def test_a_websocket_batch_message_is_its_frames_each_length_prefixed(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    frames = [codec.encode(to_py(m)) for m in vector["messages"]]
    assert pack_batch(frames) == [data]
    assert split_batch(data, DEFAULT_LIMITS.max_frame_size) == frames


@far("VectorBootstrap")
class VectorBootstrap:
    """The bootstrap the message vectors assume (tests/vectors/README.md)."""

    def echo(self, value: Any) -> Any:
        return value

    def self(this) -> Any:  # noqa: N805 - the remote method is called "self"
        return this

    def fail(self, message: str) -> None:
        raise RemoteError("Error", message)

    def adder(self) -> Any:
        return Far("Add", lambda a, b: a + b)

    def reject(self, value: Any) -> None:
        raise value if isinstance(value, BaseException) else Rejected(value)


START = bytes.fromhex(MESSAGES["frames"][0]["hex"])


def _is_gc(frame: bytes) -> bool:
    return codec.unpack(frame)[0] in ("gc-exports", "gc-answers")


@pytest.mark.parametrize("vector", MESSAGES["rejects"], ids=_ids(MESSAGES["rejects"]))
def test_session_aborts_with_the_vector_code(vector: dict[str, Any]) -> None:
    session = Session(VectorBootstrap(), limits=Limits(**vector["limits"]))
    assert session.data_to_send() == [START]
    if vector["started"]:
        session.receive_frame(START)
    for frame in vector["prelude"]:
        session.receive_frame(bytes.fromhex(frame))
    assert session.aborted is None, "the prelude alone must not abort"
    session.data_to_send()

    session.receive_frame(bytes.fromhex(vector["hex"]))

    code = vector["abort_code"]
    assert session.aborted is not None
    assert (session.aborted.code, session.aborted.by_peer) == (code, False)
    sent = session.data_to_send()
    assert len(sent) == 1
    op, reason = codec.decode(sent[0])
    assert op == "abort"
    assert reason == code or reason.startswith(code + ": ")


@pytest.mark.parametrize("vector", MESSAGES["exchanges"], ids=_ids(MESSAGES["exchanges"]))
def test_exchange_with_the_vector_bootstrap(vector: dict[str, Any]) -> None:
    session = Session(VectorBootstrap())
    for step in vector["steps"]:
        if "in" in step:
            assert same(codec.decode(bytes.fromhex(step["in"])), to_py(step["message"]))
            session.receive_frame(bytes.fromhex(step["in"]))
            run_turns()  # as a driver does, before it looks for frames to send
        else:
            sent = [f.hex() for f in session.data_to_send() if not _is_gc(f)]
            assert sent == ([] if step["out"] is None else [step["out"]])
    expected = vector["aborted"]
    if expected is None:
        assert session.aborted is None
    else:
        aborted = session.aborted
        assert aborted is not None
        assert {"code": aborted.code, "detail": aborted.detail, "by_peer": aborted.by_peer} == expected


# ---------------------------------------------------------------------------


def test_vector_files_are_what_generate_py_writes() -> None:
    assert generate.check() == [], "run tests/vectors/generate.py and review the diff"
