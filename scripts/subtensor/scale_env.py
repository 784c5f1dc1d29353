"""SCALE encoding and decoding for the loopback subtensor node, all through Bittensor's Python SDK.

Every storage key, storage value, header and signing payload the node produces is encoded here by
the SDK's own codec (cyscale's `scalecodec`, as loaded by `async_substrate_interface.types.Runtime`)
from the pinned runtime metadata: keys with `StorageKey.create_from_storage_function` (twox128 of
the pallet prefix and item name, then each key's hasher as the metadata says), values with the
metadata's portable type registry. Nothing here writes SCALE bytes by hand.

Types that are not in the metadata's registry (the block header, the timelocked weights payload)
are declared to the SDK as structs of registry/core types, so the SDK still does the encoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

from async_substrate_interface.types import Runtime, _decode_option_opaque_metadata
from async_substrate_interface.utils.hasher import xxh128
from async_substrate_interface.utils.storage import StorageKey
from scalecodec.base import ScaleBytes
from scalecodec.utils.ss58 import ss58_decode, ss58_encode

META_MAGIC = b"meta"


def blake2_256(data: bytes) -> bytes:
    return blake2b(data, digest_size=32).digest()


def hex0x(data: bytes) -> str:
    return "0x" + bytes(data).hex()


def unhex(s: str) -> bytes:
    if not isinstance(s, str):
        raise ValueError("expected a hex string")
    s = s[2:] if s.startswith(("0x", "0X")) else s
    return bytes.fromhex(s)


class DecodeError(Exception):
    """An extrinsic or value that the metadata's types cannot decode."""


def plain(obj: Any) -> Any:
    """A decoded SDK scale object as plain Python, with byte sequences kept as `bytes`.

    The SDK turns a `Vec<u8>` into text when it is valid UTF-8 and into "0x.." otherwise, which is
    ambiguous; its `value_object` tree keeps the raw bytes, so this walks that tree instead.
    Enum values come back as (variant, inner) tuples.
    """
    if hasattr(obj, "value_object"):
        vo = obj.value_object
        if vo is None or isinstance(vo, (int, str, bool)):
            return obj.value
        return plain(vo)
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], str):
        return (obj[0], plain(obj[1]) if obj[1] is not None else None)
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


@dataclass
class DecodedExtrinsic:
    raw: bytes
    hash: bytes
    signer: bytes  # AccountId32
    signer_ss58: str
    signature_kind: str  # "Sr25519" | "Ed25519" | "Ecdsa"
    signature: bytes
    era: Any  # SDK Era scale object
    era_value: Any
    nonce: int
    tip: int
    metadata_hash_mode: str
    call_bytes: bytes
    extra_bytes: bytes
    pallet: str
    call: str
    args: dict = field(default_factory=dict)


class Scale:
    """The pinned metadata loaded into the SDK, with helpers the node needs."""

    def __init__(self, metadata_path: str, spec_version: int, transaction_version: int,
                 ss58_format: int = 42):
        raw = open(metadata_path, "rb").read()
        if not raw.startswith(META_MAGIC):
            # Option<OpaqueMetadata> as Metadata_metadata_at_version answers it.
            raw = _decode_option_opaque_metadata(raw) or b""
        if not raw.startswith(META_MAGIC):
            raise ValueError(f"{metadata_path}: not runtime metadata (no b'meta' magic)")
        self.metadata_bytes = raw
        self.spec_version = spec_version
        self.transaction_version = transaction_version
        self.ss58_format = ss58_format
        self.runtime = Runtime.deserialize({
            "chain": "loopback",
            "type_registry": {},
            "metadata_value": raw,
            "ss58_format": ss58_format,
            "runtime_info": {"specVersion": spec_version,
                             "transactionVersion": transaction_version},
        })
        self.rc = self.runtime.runtime_config
        self.md = self.runtime.metadata
        versioned = self.md.value[1]
        (self.metadata_version_name, inner), = versioned.items()
        self.metadata_version = int(self.metadata_version_name.lstrip("V"))
        ext = inner["extrinsic"]
        self.extrinsic_version = ext["version"]
        self.extensions = [(e["identifier"], e["ty"], e["additional_signed"])
                           for e in ext["signed_extensions"]]
        self.pallet_index = {p.name: p.value["index"] for p in self.md.pallets}
        self._fn_cache: dict = {}
        self._key_cache: dict = {}
        digest_ty = self.storage_fn("System", "Digest").get_value_type_string()
        # sp_runtime::generic::Header<u32, BlakeTwo256>; the Digest type is the metadata's own.
        self.rc.update_type_registry_types({
            "KothLoopbackHeader": {"type": "struct", "type_mapping": [
                ["parent_hash", "H256"], ["number", "Compact<u32>"], ["state_root", "H256"],
                ["extrinsics_root", "H256"], ["digest", digest_ty]]},
            # subtensor pallets/subtensor/src/coinbase/reveal_commits.rs
            "KothWeightsTlockPayload": {"type": "struct", "type_mapping": [
                ["hotkey", "Vec<u8>"], ["uids", "Vec<u16>"], ["values", "Vec<u16>"],
                ["version_key", "u64"]]},
            "KothLegacyWeightsTlockPayload": {"type": "struct", "type_mapping": [
                ["uids", "Vec<u16>"], ["values", "Vec<u16>"], ["version_key", "u64"]]},
        })

    # ---- storage -------------------------------------------------------------------------

    def storage_fn(self, pallet: str, item: str):
        k = (pallet, item)
        f = self._fn_cache.get(k)
        if f is None:
            p = self.md.get_metadata_pallet(pallet)
            if p is None:
                raise KeyError(f"pallet {pallet} not in metadata")
            f = p.get_storage_function(item)
            if f is None:
                raise KeyError(f"storage item {pallet}.{item} not in metadata")
            self._fn_cache[k] = f
        return f

    def has_storage(self, pallet: str, item: str) -> bool:
        try:
            self.storage_fn(pallet, item)
            return True
        except KeyError:
            return False

    def key(self, pallet: str, item: str, params: tuple = ()) -> bytes:
        ck = (pallet, item, params)
        key = self._key_cache.get(ck)
        if key is None:
            sk = StorageKey.create_from_storage_function(
                pallet, item, list(params), runtime_config=self.rc, metadata=self.md)
            key = bytes(sk.data)
            if len(self._key_cache) < 200_000:
                self._key_cache[ck] = key
        return key

    def prefix(self, pallet: str, item: str) -> bytes:
        f = self.storage_fn(pallet, item)
        p = self.md.get_metadata_pallet(pallet)
        return bytes(xxh128(p.value["storage"]["prefix"].encode())) + bytes(
            xxh128(f.value["name"].encode()))

    def value_type(self, pallet: str, item: str) -> str:
        return self.storage_fn(pallet, item).get_value_type_string()

    def encode_value(self, pallet: str, item: str, value: Any) -> bytes:
        return self.encode(self.value_type(pallet, item), value)

    def decode_value(self, pallet: str, item: str, data: bytes) -> Any:
        return self.decode(self.value_type(pallet, item), data)

    def default(self, pallet: str, item: str) -> Any:
        """The value a ValueQuery item reads as when its key is absent (the metadata's default)."""
        f = self.storage_fn(pallet, item)
        d = f.value_object["default"].value_object
        return self.decode(self.value_type(pallet, item), bytes(d))

    # ---- generic --------------------------------------------------------------------------

    def encode(self, type_string: str, value: Any) -> bytes:
        obj = self.rc.create_scale_object(type_string)
        return bytes(obj.encode(value).data)

    def decode(self, type_string: str, data: bytes, check_remaining: bool = True) -> Any:
        obj = self.rc.create_scale_object(type_string, data=ScaleBytes(bytes(data)))
        return obj.decode(check_remaining=check_remaining)

    def decode_obj(self, type_string: str, data: bytes, check_remaining: bool = True):
        obj = self.rc.create_scale_object(type_string, data=ScaleBytes(bytes(data)))
        obj.decode(check_remaining=check_remaining)
        return obj

    def account(self, ss58_or_hex: str) -> bytes:
        if ss58_or_hex.startswith("0x"):
            b = unhex(ss58_or_hex)
        else:
            b = unhex(ss58_decode(ss58_or_hex))
        if len(b) != 32:
            raise ValueError(f"not a 32-byte account: {ss58_or_hex}")
        return b

    def ss58(self, account: bytes) -> str:
        return ss58_encode(bytes(account), self.ss58_format)

    def header_hash(self, header: dict) -> bytes:
        return blake2_256(self.encode("KothLoopbackHeader", header))

    # ---- extrinsics -----------------------------------------------------------------------

    def decode_extrinsic(self, raw: bytes) -> DecodedExtrinsic:
        """Decodes a signed extrinsic with the SDK's Extrinsic type from the metadata.

        The spans of the transaction-extension bytes and the call are taken from the SDK's
        decoded objects, so the signing payload is rebuilt from exactly the bytes that were sent.
        """
        try:
            obj = self.rc.create_scale_object("Extrinsic", data=ScaleBytes(raw),
                                              metadata=self.md)
            value = obj.decode(check_remaining=True)
        except Exception as e:  # noqa: BLE001 - the SDK raises many kinds
            raise DecodeError(f"could not decode the extrinsic: {e}") from e
        vo = obj.value_object
        if "signature" not in vo or "address" not in vo:
            raise DecodeError("unsigned extrinsic")
        version = raw[vo["extrinsic_length"].data_end_offset]
        if version & 0x7F != self.extrinsic_version or not version & 0x80:
            raise DecodeError(f"unsupported extrinsic version byte {version:#x}")
        addr = value["address"]
        if isinstance(addr, dict):
            if "Id" not in addr:
                raise DecodeError(f"unsupported address kind {list(addr)}")
            addr = addr["Id"]
        signer = self.account(addr if addr.startswith("0x") else addr)
        (sig_kind, sig_hex), = value["signature"].items()
        call_obj = vo["call"]
        sig_end = vo["signature"].data_end_offset
        call_start = call_obj.data_start_offset
        call_bytes = raw[call_start:call_obj.data_end_offset]
        extra_bytes = raw[sig_end:call_start]
        # The metadata types the era as CheckMortality's enum; the SDK's Era type reads the same
        # bytes and knows birth/death.
        era_span = vo["era"]
        era_bytes = raw[era_span.data_start_offset:era_span.data_end_offset] if era_span else b"\x00"
        era_obj = self.rc.create_scale_object("Era", data=ScaleBytes(era_bytes))
        era_value = era_obj.decode()
        mode = value.get("mode") or {"mode": "Disabled"}
        if isinstance(mode, dict):
            mode = mode.get("mode", "Disabled")
        call_v = value["call"]
        args = self._decode_call_args(call_bytes)
        return DecodedExtrinsic(
            raw=raw, hash=blake2_256(raw), signer=signer, signer_ss58=self.ss58(signer),
            signature_kind=sig_kind, signature=unhex(sig_hex), era=era_obj,
            era_value=era_value, nonce=int(value.get("nonce", 0)),
            tip=int(value.get("tip", 0) or 0), metadata_hash_mode=str(mode),
            call_bytes=call_bytes, extra_bytes=extra_bytes,
            pallet=call_v["call_module"], call=call_v["call_function"], args=args)

    def _decode_call_args(self, call_bytes: bytes) -> dict:
        """The call's arguments as plain Python (bytes kept raw), one SDK decode per field."""
        pallet_idx, call_idx = call_bytes[0], call_bytes[1]
        pallet = next((p for p in self.md.pallets if p.value["index"] == pallet_idx), None)
        if pallet is None or not pallet.calls:
            raise DecodeError(f"no pallet with calls at index {pallet_idx}")
        fn = next((c for c in pallet.calls if c.value["index"] == call_idx), None)
        if fn is None:
            raise DecodeError(f"no call {call_idx} in pallet {pallet.name}")
        data = ScaleBytes(call_bytes[2:])
        args = {}
        for f in fn.value["fields"]:
            obj = self.rc.create_scale_object(f"scale_info::{f['type']}", data=data)
            obj.decode(check_remaining=False)
            args[f["name"]] = plain(obj)
        return args

    def signing_payload(self, xt: DecodedExtrinsic, additional: dict) -> bytes:
        """call ++ extension bytes ++ each extension's implicit ("additional signed") data,
        hashed with blake2-256 when longer than 256 bytes (sp_runtime's SignedPayload).

        `additional` maps an extension identifier to its implicit value; extensions whose
        implicit type is the unit type take none. An extension with a non-unit implicit type
        the node does not know makes the transaction unverifiable (KeyError)."""
        parts = [xt.call_bytes, xt.extra_bytes]
        for ident, _ty, add_ty in self.extensions:
            type_string = f"scale_info::{add_ty}"
            if ident in additional:
                parts.append(self.encode(type_string, additional[ident]))
            else:
                if self.encode(type_string, []) != b"":  # the unit type encodes to nothing
                    raise KeyError(ident)
        payload = b"".join(parts)
        return blake2_256(payload) if len(payload) > 256 else payload
